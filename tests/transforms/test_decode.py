import io

import numpy as np
import pytest
from PIL import Image

from transforms.decode import ImageTooLarge, UnknownImageFormat, decode_image


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def halves(width=40, height=20):
    """Left half red, right half blue."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = (255, 0, 0)
    pixels[:, width // 2 :] = (0, 0, 255)
    return Image.fromarray(pixels)


def test_exif_orientation_is_applied_and_reported_size_is_as_displayed():
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    data = encode(halves(), "JPEG", exif=exif.tobytes(), quality=95)
    pixels, width, height = decode_image(data, 8)
    assert (width, height) == (20, 40)
    top, bottom = pixels[1, 4].astype(int), pixels[-2, 4].astype(int)
    assert top[0] > 200 and top[2] < 60, "red (the left half) must end up on top"
    assert bottom[2] > 200 and bottom[0] < 60


def test_large_jpeg_uses_draft_but_reports_the_original_size():
    data = encode(halves(1200, 900), "JPEG")
    pixels, width, height = decode_image(data, 75)
    assert (width, height) == (1200, 900) and pixels.shape == (75, 75, 3)
    assert pixels[37, 5, 0] > 200 and pixels[37, 70, 2] > 200


def test_grayscale_cmyk_and_palette_become_rgb():
    gray, _, _ = decode_image(encode(Image.new("L", (10, 10), 77), "PNG"), 4)
    assert gray.shape == (4, 4, 3) and (gray == 77).all()
    cmyk, _, _ = decode_image(encode(Image.new("CMYK", (10, 10), (0, 255, 255, 0)), "JPEG"), 4)
    assert cmyk[..., 0].min() > 200 and cmyk[..., 1:].max() < 60  # red
    palette = Image.new("P", (10, 10), 1)
    palette.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    rgb, _, _ = decode_image(encode(palette, "PNG"), 4)
    assert (rgb == (0, 200, 0)).all()


def test_transparency_is_composited_on_white():
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))  # fully transparent red
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    pixels, _, _ = decode_image(encode(rgba, "PNG"), 10)
    assert (pixels[5, 5] == 255).all(), "transparent pixels are white, not black"
    assert tuple(pixels[0, 0]) == (255, 0, 0)
    la = Image.new("LA", (4, 4), (0, 0))
    assert (decode_image(encode(la, "PNG"), 4)[0] == 255).all()


def test_sixteen_bit_images_are_scaled_not_clipped():
    values = np.array([[0, 32768], [65535, 16384]], np.uint16)
    image = Image.fromarray(values)  # mode I;16
    assert image.mode == "I;16"
    pixels, _, _ = decode_image(encode(image, "PNG"), 2)
    np.testing.assert_allclose(pixels[..., 0].astype(int), [[0, 128], [255, 64]], atol=1)


def test_animated_images_use_the_first_frame():
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((0, 0, 255), (255, 0, 0))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    pixels, _, _ = decode_image(data, 8)
    assert pixels[..., 2].min() > 200 and pixels[..., 0].max() < 60


def test_pixel_limit_and_pillow_bomb_warning_are_failures(monkeypatch):
    data = encode(Image.new("RGB", (40, 40)), "PNG")
    with pytest.raises(ImageTooLarge, match="over the limit"):
        decode_image(data, 8, max_pixels=1000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1600 px: Pillow only *warns*
    with pytest.raises(ImageTooLarge):
        decode_image(data, 8)


def test_truncated_empty_and_non_images_raise():
    data = encode(halves(200, 200), "JPEG")
    with pytest.raises(OSError):
        decode_image(data[: len(data) // 2], 8)
    with pytest.raises(UnknownImageFormat, match=r"^not an image .* \(0 bytes; .*empty\)$"):
        decode_image(b"", 8)
    with pytest.raises(UnknownImageFormat, match=r"\(21 bytes; first bytes: 25 50 44 46 "):
        decode_image(b"%PDF-1.4 not an image", 8)


def test_im2txt_preprocessing_equals_tensorflows_resize_images_up_to_rounding():
    """im2txt's process_image at inference: resize_images to 346x346 (TF1 bilinear), central
    crop 299; the decode stage's uint8 pixels are within rounding (0.5) of TensorFlow's floats."""
    import tensorflow as tf

    from models.datasets.synthetic import SynthConfig, make_example

    for index in range(3):
        data = make_example(SynthConfig(seed=6), index)[2]
        rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        image = tf.image.convert_image_dtype(tf.constant(rgb), tf.float32)
        resized = tf.compat.v1.image.resize_images(
            image, [346, 346], tf.image.ResizeMethod.BILINEAR
        )
        expected = tf.image.resize_with_crop_or_pad(resized, 299, 299).numpy() * 255.0
        pixels, width, height = decode_image(
            data, 299, preprocessing={"method": "im2txt", "resize": 346}
        )
        assert pixels.shape == (299, 299, 3) and pixels.dtype == np.uint8
        assert (width, height) == (rgb.shape[1], rgb.shape[0])
        difference = np.abs(pixels - expected)
        assert difference.max() <= 0.5 + 1e-3 and 0.1 < difference.mean() < 0.4


def test_an_unknown_preprocessing_is_refused():
    from transforms.decode import ReadAndDecode

    with pytest.raises(ValueError, match="unknown preprocessing"):
        ReadAndDecode(299, preprocessing={"method": "vgg"})


def test_read_and_decode_hands_on_every_image_in_its_own_window(tmp_path):
    """Decoded on threads, up to 64 ahead: 150 files (every 10th not an image) come out once
    each, as images or failures, each in the window and at the timestamp of its element."""
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to
    from apache_beam.transforms import window

    from models.datasets.synthetic import SynthConfig, make_example
    from transforms.decode import ReadAndDecode

    config = SynthConfig(seed=3, min_size=(80, 60), max_size=(80, 60))
    elements = []
    for index in range(150):
        path = tmp_path / f"image{index:03d}.jpg"
        path.write_bytes(b"not an image" if index % 10 == 0 else make_example(config, index)[2])
        elements.append(window.TimestampedValue((str(path), index), index))

    def where(value, stamp=beam.DoFn.TimestampParam, frame=beam.DoFn.WindowParam):
        uri = value.uri if hasattr(value, "uri") else value["image_uri"]
        return uri.rsplit("/", 1)[1], int(stamp), int(frame.start)

    expected = {index: (f"image{index:03d}.jpg", index, index // 30 * 30) for index in range(150)}
    with TestPipeline(runner="FnApiRunner") as pipeline:
        decoded = (
            pipeline
            | beam.Create(elements)
            | beam.WindowInto(window.FixedWindows(30))
            | beam.ParDo(ReadAndDecode(32)).with_outputs("failures", main="decoded")
        )
        images = decoded.decoded | "Images" >> beam.Map(where)
        failures = decoded.failures | "Failures" >> beam.Map(where)
        assert_that(
            images, equal_to([v for i, v in expected.items() if i % 10]), label="AllDecoded"
        )
        assert_that(
            failures, equal_to([v for i, v in expected.items() if not i % 10]), label="Failed"
        )
