"""Tar shards (WebDataset's) as `beamcap caption` input, as a user types it: brace notation,
``--input-list``, a folder, local and on the gs:// test server. Each image member is captioned under
``SHARD#MEMBER`` with its WebDataset key; a member that is not an image and a truncated shard
are dead letters of their own; ``--only-new`` works per member."""

import json

import pyarrow.parquet as pq

from pipeline import cli
from tests.jobs import FNAPI, job_flags
from tests.pipeline.test_gcs import parquet_rows
from tests.pipeline.test_photos import encoded, scene
from tests.transforms.test_shards import tar_of
from transforms.content import content_hash


def shards() -> dict[str, bytes]:
    """00000.tar: three images (one HEIC) with their captions and metadata, as img2dataset
    writes them, and a ``.jpg`` that is not one; 00001.tar: cut inside its second image."""
    picture = scene()
    first = {
        "000000.jpg": encoded(picture, "JPEG"),
        "000000.txt": b"a red and blue picture",
        "000000.json": b'{"url": "https://example.com/0.jpg"}',
        "000001.png": encoded(picture, "PNG"),
        "000001.txt": b"the same, as a PNG",
        "000002.jpg": b"<html>404 Not Found</html>",  # what a failed download leaves
        "000003.heic": encoded(picture, "HEIF"),
    }
    second = tar_of(
        {"000010.jpg": encoded(picture, "JPEG"), "000011.jpg": encoded(picture, "JPEG")}
    )
    cut = 512 + (len(first["000000.jpg"]) + 511) // 512 * 512 + 512 + 100  # inside 000011.jpg
    return {"00000.tar": tar_of(first), "00001.tar": second[:cut]}


def beamcap(capsys, *argv) -> tuple[int, dict | str]:
    status = cli.main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return status, (json.loads(out) if status == 0 else err)


def check_first_run(summary, captions, failures, shard_uri):
    """The captions and failures of a run over ``shards()`` under ``shard_uri(NAME)``."""
    first, second = shard_uri("00000.tar"), shard_uri("00001.tar")
    assert summary["counts"] == {
        "matched": 6,  # 5 image members read, and the truncated shard's failure
        "skipped_as_done": 0,
        "captioned": 3,
        "reused": 1,  # 000010.jpg holds 000000.jpg's bytes: captioned once
        "failed": {"read": 1, "decode": 1, "encode": 0, "caption": 0},
        "shards": 2,
    }
    keys = {row["image_uri"]: row["key"] for row in captions}
    assert keys == {
        f"{first}#000000.jpg": "000000",
        f"{first}#000001.png": "000001",
        f"{first}#000003.heic": "000003",
        f"{second}#000010.jpg": "000010",
    }
    by_uri = {row["image_uri"]: row for row in captions}
    jpeg = by_uri[f"{first}#000000.jpg"]
    assert jpeg["content_hash"] == content_hash(encoded(scene(), "JPEG"))  # the member's bytes
    copy = by_uri[f"{second}#000010.jpg"]
    assert (copy["reused_from"], copy["reused_from_run"]) == (jpeg["image_uri"], summary["run_id"])
    assert copy["caption"] == jpeg["caption"] and copy["content_hash"] == jpeg["content_hash"]
    assert jpeg["reused_from"] is None
    identities = {row["image_uri"].split("#")[0]: row["image_identity"] for row in captions}
    assert identities[first].startswith(f"{len(shards()['00000.tar'])}:")  # the shard's
    failed = {row["image_uri"]: row for row in failures}
    assert failed.keys() == {f"{first}#000002.jpg", second}
    assert failed[f"{first}#000002.jpg"]["stage"] == "decode"
    assert failed[f"{first}#000002.jpg"]["message"].startswith("not an image format Pillow")
    assert failed[f"{first}#000002.jpg"]["content_hash"] == content_hash(
        b"<html>404 Not Found</html>"
    )
    assert failed[second]["stage"] == "read"
    assert failed[second]["error_type"] == "DamagedShard"
    assert failed[second]["message"] == (
        "a truncated or damaged tar shard: unexpected end of data, "
        "after 1 image members (the last read whole: 000010.jpg)"
    )


def run_rows(run_dir) -> tuple[list, list]:
    return tuple(
        pq.read_table(sorted(run_dir.glob(f"{kind}-*.parquet"))).to_pylist()
        for kind in ("captions", "failures")
    )


def test_local_shards_by_braces_then_only_new_by_list(tmp_path, tiny_bundle, capsys):
    folder = tmp_path / "shards"
    folder.mkdir()
    for name, data in shards().items():
        (folder / name).write_bytes(data)
    output = tmp_path / "out"
    flags = job_flags(f"{folder}/{{00000..00001}}.tar", tiny_bundle, output, "--only-new", *FNAPI)
    status, first = beamcap(capsys, "caption", *flags)
    assert status == 0, first
    captions, failures = run_rows(output / "runs" / first["run_id"])
    check_first_run(first, captions, failures, lambda name: str(folder / name))

    (folder / "00002.tar").write_bytes(tar_of({"000020.webp": encoded(scene(), "WEBP")}))
    listed = tmp_path / "shards.txt"
    listed.write_text("".join(f"{folder}/0000{n}.tar\n" for n in range(3)))
    flags[flags.index("--input") : flags.index("--input") + 2] = ["--input-list", listed]
    status, second = beamcap(capsys, "caption", *flags)
    assert status == 0, second
    assert second["counts"]["captioned"] == 1  # the new shard's image; the rest are done
    assert second["counts"]["skipped_as_done"] == 4 + 1  # done members; the damaged shard
    assert second["counts"]["failed"] == {"read": 0, "decode": 0, "encode": 0, "caption": 0}
    (row,) = run_rows(output / "runs" / second["run_id"])[0]
    assert row["image_uri"] == f"{folder}/00002.tar#000020.webp" and row["key"] == "000020"


def test_shards_on_a_bucket(gcs, new_bucket, tmp_path, tiny_bundle, capsys):
    client = gcs.client()
    bucket = new_bucket("shards")
    for name, data in shards().items():
        client.bucket(bucket).blob(f"laion/{name}").upload_from_string(data)
    output = f"gs://{new_bucket('out')}/captions"
    inputs = f"gs://{bucket}/laion/{{00000..00001}}.tar"
    flags = job_flags(inputs, tiny_bundle, output, "--only-new", *FNAPI)
    status, first = beamcap(capsys, "caption", *flags)
    assert status == 0, first
    run_dir = f"{output}/runs/{first['run_id']}"
    captions = parquet_rows(client, f"{run_dir}/captions-")
    failures = parquet_rows(client, f"{run_dir}/failures-")
    check_first_run(first, captions, failures, lambda name: f"gs://{bucket}/laion/{name}")

    flags[flags.index(inputs)] = f"gs://{bucket}/laion/"  # the folder: the same shards
    status, second = beamcap(capsys, "caption", *flags)
    assert status == 0, second
    assert second["counts"]["captioned"] == 0 and second["counts"]["skipped_as_done"] == 5
