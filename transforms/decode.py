"""Read image files and decode them to uint8 RGB arrays of the encoder's input size.

``decode_image`` handles real-world files: EXIF orientation; grayscale, CMYK, palette and 16-bit
modes (16-bit scaled, not clipped); transparency composited on white; the first frame of an
animation; a pixel-count limit where Pillow's decompression-bomb *warning* is a failure too; JPEG
draft mode for large images and a cheap integer reduction before the resize. HEIC/HEIF photos
(iPhones' default) decode through pillow-heif, registered here as a Pillow opener when it is
installed (the extra ``beamcap[heif]``: its wheels bundle GPL and LGPL codecs, see the README);
libheif applies their rotation as it decodes, so they come upright as EXIF-rotated JPEGs do.
Without it a HEIC fails with a reason that says so.

A bundle may name another preprocessing (its manifest's ``encoder.preprocessing``, e.g. im2txt's
resize and central crop): the decoded RGB image then goes, at full size (neither draft mode nor
reduction), to that entry of ``models.captioner.preprocessing.PREPROCESSINGS``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import io
import threading
import warnings
from typing import Generic, TypeVar

import apache_beam as beam
import numpy as np
from apache_beam import pvalue
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.utils.windowed_value import WindowedValue
from PIL import Image, ImageOps

try:  # the optional HEIC/HEIF decoder (beamcap[heif])
    import pillow_heif
except ImportError:
    pillow_heif = None
else:
    pillow_heif.register_heif_opener()

from models.captioner.preprocessing import check_preprocessing, preprocess_pixels
from transforms.failures import failure

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own default bomb threshold
# Pillow only *warns* of a decompression bomb below twice its threshold, as it opens a file:
# decode_image makes that warning an error there. warnings.catch_warnings swaps the process's
# filters, so ReadAndDecode's threads take turns for that moment (the header's parse alone).
_OPENING = threading.Lock()
_EXIF_ORIENTATION = 0x0112


class ImageTooLarge(ValueError):
    """An image above the pixel-count limit (a possible decompression bomb)."""


# ISO base media file brands of HEIF images (HEVC-coded and general); AVIF, Pillow's own, is not
HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1")


class UnknownImageFormat(OSError):
    """Bytes that no Pillow plugin recognises (Pillow's own message names a BytesIO repr)."""

    def __init__(self, data: bytes):
        if data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS:
            brand = data[8:12].decode()
            super().__init__(
                f"a HEIC/HEIF file (brand {brand}) that pillow-heif cannot read: damaged or "
                f"truncated ({len(data)} bytes)"
                if pillow_heif
                else f"a HEIC/HEIF image (brand {brand}), and its decoder, pillow-heif, is not "
                "installed here: install beamcap[heif] (the worker image has it)"
            )
            return
        start = data[:8].hex(" ") if data else "none: the file is empty"
        super().__init__(
            f"not an image format Pillow can read ({len(data)} bytes; first bytes: {start})"
        )


Payload = TypeVar("Payload")  # what a job carries along with each image


@dataclasses.dataclass(frozen=True)
class DecodedImage(Generic[Payload]):
    """An image ready for the encoder; ``payload``: the caption job's file identity (``str``),
    the features job's ``ImageTask``."""

    uri: str
    pixels: np.ndarray  # uint8 [S, S, 3]
    width: int  # of the original file, as displayed (after EXIF orientation)
    height: int
    payload: Payload | None = None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        gray = np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.clip(array * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def decode_image(
    data: bytes,
    size: int,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    preprocessing: dict | None = None,
) -> tuple[np.ndarray, int, int]:
    """Bytes of an image file -> (uint8 [size, size, 3], width, height); ``preprocessing``: a
    bundle's (see the module docstring), None for beamcap's resize."""
    with _OPENING, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except Image.UnidentifiedImageError:
            raise UnknownImageFormat(data) from None
        except Image.DecompressionBombWarning as error:
            raise ImageTooLarge(str(error)) from error
        except Image.DecompressionBombError as error:
            raise ImageTooLarge(str(error)) from error
    if image.width * image.height > max_pixels:
        raise ImageTooLarge(
            f"{image.width}x{image.height} is over the limit of {max_pixels} pixels"
        )
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    width, height = image.size
    if image.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):  # rotated a quarter turn
        width, height = height, width
    if image.format == "JPEG" and preprocessing is None:
        image.draft("RGB", (size, size))  # only scales when at least 2x larger
    image.load()  # a truncated file fails here, not at open
    image = ImageOps.exif_transpose(image)
    rgb = _to_rgb(image)
    if preprocessing is not None:
        return preprocess_pixels(np.asarray(rgb, np.uint8), size, preprocessing), width, height
    resized = rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(resized, dtype=np.uint8), width, height


class ReadAhead(beam.DoFn):
    """Each element's ``work(*element)`` (a subclass's) on ``threads`` threads, up to ``ahead``
    elements ahead of what the step has handed on: in a fused stage the model runs on the
    thread that calls ``process``, so the next batch's images are read and decoded while it
    runs (Pillow, numpy and file reads let go of the GIL). ``work`` returns the output or a
    tagged failure; each output keeps its own element's window and timestamp. ``counted``
    names the counter of outputs handed on."""

    def __init__(self, *, threads: int, ahead: int, counted: str):
        self.threads, self.ahead = threads, ahead
        self.handed = Metrics.counter(self.__class__, counted)
        self.read_failed = Metrics.counter(self.__class__, "images_read_failed")
        self.decode_failed = Metrics.counter(self.__class__, "images_decode_failed")

    def work(self, *element):
        raise NotImplementedError

    def setup(self):
        self.pool = concurrent.futures.ThreadPoolExecutor(self.threads, "read-ahead")

    def start_bundle(self):
        self.pending = collections.deque()  # (future, window, timestamp), in arrival order

    def process(self, element, window=beam.DoFn.WindowParam, timestamp=beam.DoFn.TimestampParam):
        self.pending.append((self.pool.submit(self.work, *element), window, timestamp))
        while len(self.pending) > self.ahead or (self.pending and self.pending[0][0].done()):
            yield self._handed_on(*self.pending.popleft())

    def finish_bundle(self):
        while self.pending:
            yield self._handed_on(*self.pending.popleft())

    def teardown(self):
        if getattr(self, "pool", None):  # None where setup failed
            self.pool.shutdown(wait=False, cancel_futures=True)

    def _handed_on(self, future, window, timestamp):
        """The output, or its tagged failure, in its element's window; counted here, on the
        bundle's thread, where Beam's metrics are kept."""
        outcome = future.result()
        is_failure = isinstance(outcome, pvalue.TaggedOutput)
        if not is_failure:
            self.handed.inc()
            return WindowedValue(outcome, timestamp, [window])
        (self.read_failed if outcome.value["stage"] == "read" else self.decode_failed).inc()
        return pvalue.TaggedOutput(outcome.tag, WindowedValue(outcome.value, timestamp, [window]))


def read_file(uri: str) -> bytes:
    with FileSystems.open(uri) as handle:
        return handle.read()


class ReadAndDecode(ReadAhead):
    """(uri, payload) -> DecodedImage; failures tagged with stage ``read`` or ``decode``, the
    payload in their record. An element ``(uri, payload, data)`` brings its bytes along (a tar
    shard's member, ``transforms.shards.ReadShards``; an image the caption job has read and
    hashed, ``transforms.content``) and is not read again; with ``data`` None it is read.
    Read and decoded ahead on ``threads`` threads (:class:`ReadAhead`)."""

    def __init__(
        self,
        image_size: int,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        preprocessing: dict | None = None,
        *,
        threads: int = 2,
        ahead: int = 64,
    ):
        super().__init__(threads=threads, ahead=ahead, counted="images_decoded")
        check_preprocessing(preprocessing, image_size)
        self.image_size = image_size
        self.max_pixels = max_pixels
        self.preprocessing = preprocessing

    def work(self, uri: str, payload, data: bytes | None = None):
        return self.read_and_decode(uri, payload, data)

    def read_and_decode(
        self, uri: str, payload, data: bytes | None = None
    ) -> DecodedImage | pvalue.TaggedOutput:
        try:
            if data is None:
                data = read_file(uri)
        except Exception as error:  # noqa: BLE001 - any I/O error is this image's failure
            return failure(uri, "read", error, payload=payload)
        try:
            pixels, width, height = decode_image(
                data, self.image_size, max_pixels=self.max_pixels, preprocessing=self.preprocessing
            )
        except Exception as error:  # noqa: BLE001 - Pillow raises many types on bad files
            return failure(uri, "decode", error, payload=payload)
        return DecodedImage(uri, pixels, width, height, payload)
