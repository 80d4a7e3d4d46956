"""Pixel preprocessings an encoder architecture may name (``Architecture.preprocessing``, which a
bundle's manifest records as ``encoder.preprocessing``), in numpy.

A preprocessing maps a decoded uint8 RGB image [H, W, 3] of any size to the encoder's uint8
[size, size, 3] input, given the manifest's dict (``method`` is the table's key, the other keys
its parameters). Without one, the caption job does beamcap's own resize (transforms.decode).

``im2txt`` (an imported im2txt model): resize to ``resize`` x ``resize`` with TF1's
``resize_images`` bilinear arithmetic (no antialiasing, no half-pixel offset) and crop the
central ``size`` x ``size``, as im2txt's ``process_image``; the encoder then scales to [-1, 1] as
for every bundle.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np


def resize_tf1_bilinear(
    image: np.ndarray, size: int, window: tuple[int, int] | None = None
) -> np.ndarray:
    """uint8 [H, W, C] -> float32 [size, size, C], as TF1's ``resize_images(..., BILINEAR)``
    (``align_corners=False``, ``half_pixel_centers=False``) computes it, in float32; with
    ``window`` (start, length), only that square of the result (a crop, at its cost alone).

    Each output row is its two source rows, each first interpolated along x, then blended
    along y: TF1's operations in its order, so the same float32 numbers, while the x pass
    runs once per source row that is used rather than once per output row, in place, over
    rows whose pixels and channels are one axis (numpy's loops run long and contiguous)."""
    start, length = window or (0, size)

    def weights(extent: int):
        position = np.arange(start, start + length, dtype=np.float32) * (
            np.float32(extent) / np.float32(size)
        )
        low = np.floor(position).astype(np.int64)
        high = np.minimum(np.ceil(position).astype(np.int64), extent - 1)
        return low, high, position - low.astype(np.float32)

    y0, y1, dy = weights(image.shape[0])
    x0, x1, dx = weights(image.shape[1])
    channels = image.shape[2]
    rows, index = np.unique(np.concatenate([y0, y1]), return_inverse=True)
    source = image[rows]
    left = np.take(source, x0, axis=1).reshape(len(rows), -1).astype(np.float32)
    along_x = np.take(source, x1, axis=1).reshape(len(rows), -1).astype(np.float32)
    along_x -= left  # right - left
    along_x *= np.repeat(dx, channels)
    along_x += left  # left + (right - left) * dx
    upper, lower = along_x[index[:length]], along_x[index[length:]]
    lower -= upper
    lower *= dy[:, None]
    lower += upper  # upper + (lower - upper) * dy
    return lower.reshape(length, length, channels)


def im2txt_pixels(rgb: np.ndarray, size: int, resize: int) -> np.ndarray:
    """im2txt's ``process_image`` at inference, to uint8: resize, central crop, rounded."""
    cropped = resize_tf1_bilinear(rgb, resize, ((resize - size) // 2, size))
    np.rint(cropped, out=cropped)
    return np.clip(cropped, 0, 255, out=cropped).astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """A table entry, given the manifest's dict: ``pixels(rgb, size, preprocessing)`` -> uint8
    [size, size, 3], and ``check(size, preprocessing)``, a ValueError when it cannot give
    ``size``."""

    pixels: Callable
    check: Callable


def _check_im2txt(size: int, preprocessing: dict) -> None:
    if size > preprocessing["resize"]:
        raise ValueError(
            f"im2txt's preprocessing crops {size}px from a {preprocessing['resize']}px resize"
        )


PREPROCESSINGS = {
    "im2txt": Preprocessing(
        pixels=lambda rgb, size, preprocessing: im2txt_pixels(rgb, size, preprocessing["resize"]),
        check=_check_im2txt,
    ),
}


def _entry(preprocessing: dict) -> Preprocessing:
    if preprocessing.get("method") not in PREPROCESSINGS:
        raise ValueError(f"unknown preprocessing {preprocessing!r}: upgrade beamcap")
    return PREPROCESSINGS[preprocessing["method"]]


def check_preprocessing(preprocessing: dict | None, size: int) -> None:
    """ValueError for a preprocessing this beamcap lacks, or one that cannot give ``size``."""
    if preprocessing is not None:
        _entry(preprocessing).check(size, preprocessing)


def preprocess_pixels(rgb: np.ndarray, size: int, preprocessing: dict) -> np.ndarray:
    """uint8 RGB [H, W, 3] -> uint8 [size, size, 3] by the table's entry for ``preprocessing``,
    checked where it entered (``check_preprocessing``: the job's decode stage, a features
    launch)."""
    return _entry(preprocessing).pixels(rgb, size, preprocessing)
