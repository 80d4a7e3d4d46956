"""The array checks and padding every engine shares."""

from __future__ import annotations

import numpy as np


def checked_images(images, image_size: int) -> np.ndarray:
    """``images`` as uint8 [B, image_size, image_size, 3] with B >= 1, or a ValueError: what
    every encoder takes."""
    images = np.asarray(images)
    expected = (image_size, image_size, 3)
    if images.ndim != 4 or images.shape[1:] != expected or images.dtype != np.uint8:
        raise ValueError(
            f"encode needs uint8 images of shape [B, {expected}], got {images.dtype} {images.shape}"
        )
    if not len(images):
        raise ValueError("an empty batch has nothing to encode")
    return images


def pad_rows(array: np.ndarray, rows: int) -> np.ndarray:
    """Pads the first axis to ``rows`` with zeros (a no-op when already that long)."""
    if len(array) == rows:
        return array
    padding = np.zeros((rows - len(array), *array.shape[1:]), array.dtype)
    return np.concatenate([array, padding])


def padded_to(rows: int, multiple: int) -> int:
    """``rows`` rounded up to a multiple of ``multiple``."""
    return -(-rows // multiple) * multiple
