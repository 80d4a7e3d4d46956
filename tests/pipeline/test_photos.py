"""Photos as users have them: every file of a folder of varied real-world formats is captioned
or dead-lettered with a reason a person can read (its format, what failed, no object repr).
The HEIC is made here with pillow-heif (beamcap[heif], in the test extra); without it, a HEIC
is a dead letter that says so."""

import io
import json
import os
import struct

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from pipeline.caption import run
from tests.jobs import FNAPI, beamcap_job, job_flags
from transforms.decode import decode_image


def scene(width=96, height=64) -> Image.Image:
    """Left half red, right half blue, a green square in the middle."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = (220, 30, 30)
    pixels[:, width // 2 :] = (30, 30, 220)
    pixels[height // 3 : 2 * height // 3, width // 3 : 2 * width // 3] = (30, 200, 30)
    return Image.fromarray(pixels)


def encoded(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def planar_tiff(image: Image.Image) -> bytes:
    """An uncompressed RGB TIFF stored plane by plane (PlanarConfiguration 2), which Pillow's
    writer cannot make: header, one IFD, three strips."""
    width, height = image.size
    planes = [np.asarray(image)[:, :, band].tobytes() for band in range(3)]
    entries = 10
    extra = 8 + 2 + entries * 12 + 4  # where the arrays that do not fit an entry start
    bits, offsets, counts = extra, extra + 6, extra + 18
    data = extra + 30
    strips = [data + band * width * height for band in range(3)]

    def entry(tag, kind, count, value):  # kind 3: SHORT, 4: LONG
        packed = struct.pack("<H", value) + b"\0\0" if kind == 3 and count == 1 else None
        return struct.pack("<HHI", tag, kind, count) + (packed or struct.pack("<I", value))

    ifd = b"".join(
        [
            entry(256, 3, 1, width),
            entry(257, 3, 1, height),
            entry(258, 3, 3, bits),
            entry(259, 3, 1, 1),  # no compression
            entry(262, 3, 1, 2),  # RGB
            entry(273, 4, 3, offsets),
            entry(277, 3, 1, 3),
            entry(278, 3, 1, height),
            entry(279, 4, 3, counts),
            entry(284, 3, 1, 2),  # planar
        ]
    )
    return b"".join(
        [
            b"II*\0" + struct.pack("<I", 8),
            struct.pack("<H", entries) + ifd + struct.pack("<I", 0),
            struct.pack("<3H", 8, 8, 8),
            struct.pack("<3I", *strips),
            struct.pack("<3I", *(width * height,) * 3),
            *planes,
        ]
    )


def photos(folder) -> dict[str, bytes]:
    picture = scene()
    rgba = picture.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(picture.size))
    sixteen = Image.fromarray(np.asarray(picture.convert("L"), np.uint16) * 257)  # I;16
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown turned a quarter clockwise
    pages = [picture, picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    files = {
        "alpha.png": encoded(rgba, "PNG"),
        "palette.gif": encoded(picture.convert("P", palette=Image.Palette.ADAPTIVE), "GIF"),
        "gray.jpg": encoded(picture.convert("L"), "JPEG"),
        "sixteen-bit.png": encoded(sixteen, "PNG"),
        "exif-rotated.jpg": encoded(picture, "JPEG", exif=exif.tobytes()),
        "cmyk.jpg": encoded(picture.convert("CMYK"), "JPEG"),
        "pages.tif": encoded(pages[0], "TIFF", save_all=True, append_images=pages[1:]),
        "planar.tif": planar_tiff(picture),
        "photo.webp": encoded(picture, "WEBP"),
        "photo.avif": encoded(picture, "AVIF"),
        "iphone.heic": encoded(picture, "HEIF", exif=exif.tobytes()),  # sideways, as a phone's
        "broken.heic": b"\0\0\0\x18ftypheic" + bytes(40),  # a HEIC header and nothing else
        "notes.xyz": b"\0\0\0\x18ftypxyz!" + bytes(40),  # a format Pillow does not read
    }
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def test_a_folder_of_real_world_formats_is_captioned_or_explained(tmp_path, tiny_bundle):
    folder = tmp_path / "photos"
    files = photos(folder)
    summary = run(job_flags(folder, tiny_bundle, tmp_path / "out", *FNAPI))
    run_dir = tmp_path / "out" / "runs" / summary["run_id"]
    captions = pq.read_table(sorted(run_dir.glob("captions-*.parquet"))).to_pylist()
    failures = pq.read_table(sorted(run_dir.glob("failures-*.parquet"))).to_pylist()
    captioned = {row["image_uri"].rsplit("/", 1)[1]: row for row in captions}
    failed = {row["image_uri"].rsplit("/", 1)[1]: row for row in failures}
    assert set(captioned) | set(failed) == set(files) and not set(captioned) & set(failed)
    assert set(captioned) == set(files) - {"broken.heic", "notes.xyz"}
    for rotated in ("exif-rotated.jpg", "iphone.heic"):
        # as displayed: the orientation was applied before the encoder
        assert (captioned[rotated]["width"], captioned[rotated]["height"]) == (64, 96)
    assert failed["notes.xyz"]["message"].startswith("not an image format Pillow can read (")
    assert failed["broken.heic"]["message"].startswith(
        "a HEIC/HEIF file (brand heic) that pillow-heif cannot read: damaged or truncated"
    )
    for row in failed.values():
        assert row["stage"] == "decode"
        assert " object at 0x" not in row["message"] and "<" not in row["message"], row["message"]


def test_each_format_decodes_to_the_scene_it_holds(tmp_path):
    """What the encoder sees: the same picture from every format (gray ones in gray), the
    sideways JPEG turned upright, transparency on white."""
    files = photos(tmp_path / "photos")
    expected = np.asarray(scene().resize((32, 32), Image.Resampling.BILINEAR), np.float64)
    gray = np.asarray(scene().convert("L").convert("RGB").resize((32, 32)), np.float64)
    upright = np.asarray(scene().transpose(Image.Transpose.ROTATE_270).resize((32, 32)), np.float64)
    for name, data in files.items():
        if name in ("broken.heic", "notes.xyz", "alpha.png"):
            continue
        rotated = name in ("exif-rotated.jpg", "iphone.heic")
        want = (
            upright if rotated else {"gray.jpg": gray, "sixteen-bit.png": gray}.get(name, expected)
        )
        pixels = decode_image(data, 32)[0].astype(np.float64)
        assert np.abs(pixels - want).mean() < 12, name
    alpha = decode_image(files["alpha.png"], 32)[0].astype(np.float64)
    assert alpha[0].min() > 230  # transparent at the top: white
    assert np.abs(alpha[-1] - expected[-1]).mean() < 12  # opaque at the bottom: the scene


def test_a_heic_without_its_decoder_is_a_dead_letter_that_says_so(tmp_path, tiny_bundle):
    """`beamcap caption` where pillow-heif is not installed (an import of it fails): the HEIC
    fails at decode with the remedy, the JPEG beside it is captioned."""
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "iphone.heic").write_bytes(encoded(scene(), "HEIF"))
    (folder / "camera.jpg").write_bytes(encoded(scene(), "JPEG"))
    blocked = tmp_path / "no-heif"
    blocked.mkdir()
    (blocked / "pillow_heif.py").write_text("raise ImportError('not installed (test)')\n")
    path = os.pathsep.join(filter(None, [str(blocked), os.environ.get("PYTHONPATH")]))
    flags = job_flags(folder, tiny_bundle, tmp_path / "out", *FNAPI)
    result = beamcap_job("caption", *flags, env={"PYTHONPATH": path})
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["counts"]["captioned"] == 1 and summary["counts"]["failed"]["decode"] == 1
    run_dir = tmp_path / "out" / "runs" / summary["run_id"]
    (failed,) = pq.read_table(sorted(run_dir.glob("failures-*.parquet"))).to_pylist()
    assert failed["image_uri"].endswith("iphone.heic")
    assert failed["message"] == (
        "a HEIC/HEIF image (brand heic), and its decoder, pillow-heif, is not installed here: "
        "install beamcap[heif] (the worker image has it)"
    )
