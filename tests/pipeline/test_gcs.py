"""The caption job on buckets, against a real Cloud Storage server (fake-gcs-server, reached
through Toxiproxy: tests/gcs_servers.py): images in one bucket, runs in another, the scheduled
``--only-new`` rerun, ``beamcap runs`` / ``--clean`` and ``beamcap show``. The DirectRunner's
runs use the FnApiRunner it falls back to offline (it would fetch Prism first)."""

import io
import json
import posixpath

import pyarrow.parquet as pq
from apache_beam.metrics.metric import MetricsFilter

from models.datasets.synthetic import SynthConfig, make_example
from pipeline import caption, cli
from tests.conftest import write_image_folder
from tests.jobs import FNAPI, job_flags
from transforms.content import gcs_content_hash


def upload_images(client, bucket: str, tmp_path, prefix: str = "photos") -> tuple[str, dict]:
    """``write_image_folder``'s images uploaded under gs://BUCKET/PREFIX/; returns that URI
    and the names that must fail."""
    local = tmp_path / "images"
    must_fail = write_image_folder(local)
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        name = f"{prefix}/{path.relative_to(local)}"
        client.bucket(bucket).blob(name).upload_from_filename(str(path))
    return f"gs://{bucket}/{prefix}/", must_fail


def beamcap(capsys, *argv) -> tuple[int, str, str]:
    """`beamcap ARGV` as a user runs it, in this process: (status, stdout, stderr)."""
    status = cli.main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return status, out, err


def parquet_rows(client, uri_prefix: str) -> list[dict]:
    bucket, _, prefix = uri_prefix[len("gs://") :].partition("/")
    rows = []
    for blob in client.list_blobs(bucket, prefix=prefix):
        if blob.name.endswith(".parquet"):
            rows += pq.read_table(io.BytesIO(blob.download_as_bytes())).to_pylist()
    return rows


def test_bucket_to_bucket_then_only_new_then_runs_and_show(
    gcs, new_bucket, tmp_path, tiny_bundle, capsys
):
    client = gcs.client()
    images, must_fail = upload_images(client, new_bucket("in"), tmp_path)
    output = f"gs://{new_bucket('out')}/captions"
    flags = job_flags(images, tiny_bundle, output, "--only-new", *FNAPI)

    status, out, _ = beamcap(capsys, "caption", *flags)
    assert status == 0
    first = json.loads(out)
    run_dir = f"{output}/runs/{first['run_id']}"
    names = {b.name for b in client.list_blobs(output[5:].split("/")[0], prefix="captions/runs/")}
    assert {f"captions/runs/{first['run_id']}/{n}" for n in ("_SUCCESS", "summary.json")} <= names
    assert not [n for n in names if "beam-temp" in n or n.endswith("_LEASE")]
    assert first["counts"]["matched"] == 11
    assert first["counts"]["failed"]["decode"] == len(must_fail)
    captioned = parquet_rows(client, f"{run_dir}/captions-")
    assert len(captioned) == first["counts"]["captioned"] == 11 - len(must_fail)
    failed = {posixpath.basename(r["image_uri"]) for r in parquet_rows(client, f"{run_dir}/fail")}
    assert failed == set(must_fail)

    status, out, _ = beamcap(capsys, "caption", *flags)  # the schedule's next tick
    second = json.loads(out)
    assert status == 0 and second["counts"]["captioned"] == 0
    assert second["counts"]["skipped_as_done"] == 11

    status, out, _ = beamcap(capsys, "runs", "--json", output)
    listed = json.loads(out)
    assert status == 0 and [r["run_id"] for r in listed] == [first["run_id"], second["run_id"]]
    assert {r["state"] for r in listed} == {"committed"}
    status, out, _ = beamcap(capsys, "runs", "--clean", output)
    assert status == 0 and first["run_id"] in out

    status, out, _ = beamcap(capsys, "show", "--run-id", first["run_id"], output)
    assert status == 0
    assert out.count("Captions for image gs://") == len(captioned)
    for name in must_fail:
        assert name in out


def test_a_named_file_that_is_not_there_fails_the_run(
    gcs, new_bucket, tmp_path, tiny_bundle, capsys
):
    """--input gs://B/photos/ gs://B/gone.jpg: the missing file fails the run in one line,
    never a run over the rest that reports success."""
    images, _ = upload_images(gcs.client(), new_bucket("in"), tmp_path)
    gone = images.replace("photos/", "gone.jpg")
    output = f"gs://{new_bucket('out')}/captions"
    flags = job_flags(images, tiny_bundle, output, *FNAPI)
    at = flags.index("--input") + 2
    status, out, err = beamcap(capsys, "caption", *flags[:at], gone, *flags[at:])
    assert status == 1 and not out
    assert err.strip().splitlines()[-1].startswith("beamcap caption: run failed: ")
    assert gone in err.strip().splitlines()[-1]


def read_stage_counts(result) -> dict[str, int]:
    """The run's counters of images read or hashed (ReadImages) and decoded (ReadAndDecode),
    as Beam reports them."""
    counters = result.metrics().query(MetricsFilter())["counters"]
    names = ("images_read", "images_decoded")
    return {name: sum(c.committed for c in counters if c.key.metric.name == name) for name in names}


def test_a_copied_object_reuses_its_caption_by_the_listings_crc32c(
    gcs, new_bucket, tmp_path, tiny_bundle, capsys, monkeypatch
):
    """The content hash is the CRC-32C that the bucket's listing carries (fake-gcs-server
    lists crc32c and md5Hash for every object, as Cloud Storage does), known before any read:
    of two objects with one content in a run, one is read; an object copied to a new name is
    not captioned again, nor read."""
    results = []
    monkeypatch.setattr(caption, "log_inference", results.append)  # each run's Beam result
    client = gcs.client()
    bucket = new_bucket("in")
    jpegs = [make_example(SynthConfig(seed=6), index)[2] for index in range(2)]
    for name, data in (("a.jpg", jpegs[0]), ("b.jpg", jpegs[1]), ("copy-of-a.jpg", jpegs[0])):
        client.bucket(bucket).blob(f"photos/{name}").upload_from_string(data)
    output = f"gs://{new_bucket('out')}/captions"
    flags = job_flags(f"gs://{bucket}/photos/", tiny_bundle, output, "--only-new", *FNAPI)
    status, out, _ = beamcap(capsys, "caption", *flags)
    first = json.loads(out)
    assert status == 0 and (first["counts"]["captioned"], first["counts"]["reused"]) == (2, 1)
    listed = {
        f"gs://{bucket}/{blob.name}": blob for blob in client.list_blobs(bucket, prefix="photos/")
    }
    assert all(blob.crc32c and blob.md5_hash for blob in listed.values())
    rows = {r["image_uri"]: r for r in parquet_rows(client, f"{output}/runs/{first['run_id']}/")}
    for uri, blob in listed.items():
        assert rows[uri]["content_hash"] == gcs_content_hash(blob.crc32c, blob.size)
    assert {uri: gcs.downloads(uri) for uri in listed} == {
        f"gs://{bucket}/photos/{name}": reads
        for name, reads in (("a.jpg", 1), ("b.jpg", 1), ("copy-of-a.jpg", 0))
    }
    assert read_stage_counts(results[-1]) == {"images_read": 0, "images_decoded": 2}

    source = client.bucket(bucket)
    copied = source.copy_blob(source.blob("photos/b.jpg"), source, "photos/renamed/b.jpg")
    status, out, _ = beamcap(capsys, "caption", *flags)  # the next tick
    second = json.loads(out)
    assert status == 0 and (second["counts"]["captioned"], second["counts"]["reused"]) == (0, 1)
    (row,) = parquet_rows(client, f"{output}/runs/{second['run_id']}/captions-")
    assert row["image_uri"] == f"gs://{bucket}/photos/renamed/b.jpg"
    assert row["content_hash"] == gcs_content_hash(copied.crc32c, copied.size)
    assert row["reused_from"] == f"gs://{bucket}/photos/b.jpg"
    assert row["reused_from_run"] == first["run_id"]
    assert gcs.downloads(row["image_uri"]) == 0  # its caption came without its bytes
    assert read_stage_counts(results[-1]) == {"images_read": 0, "images_decoded": 0}


def test_an_input_list_of_objects_knows_them_by_their_crc32c_too(
    gcs, new_bucket, tmp_path, tiny_bundle, capsys
):
    """``--input-list`` names objects one by one: each is looked up with one request, which
    carries its CRC-32C as a listing does, so of two objects with one content only one is
    read; a name that is not there is a failure of its own."""
    client = gcs.client()
    bucket = new_bucket("in")
    jpeg = make_example(SynthConfig(seed=7), 0)[2]
    for name in ("a.jpg", "copy-of-a.jpg"):
        client.bucket(bucket).blob(f"photos/{name}").upload_from_string(jpeg)
    names = ("a.jpg", "copy-of-a.jpg", "gone.jpg")
    listed = tmp_path / "inputs.txt"
    listed.write_text("".join(f"gs://{bucket}/photos/{name}\n" for name in names))
    output = f"gs://{new_bucket('out')}/captions"
    flags = job_flags(str(listed), tiny_bundle, output, *FNAPI)
    flags[flags.index("--input")] = "--input-list"
    status, out, _ = beamcap(capsys, "caption", *flags)
    summary = json.loads(out)
    assert status == 0
    assert (summary["counts"]["captioned"], summary["counts"]["reused"]) == (1, 1)
    assert summary["counts"]["failed"] == {"read": 1, "decode": 0, "encode": 0, "caption": 0}
    blob = client.bucket(bucket).get_blob("photos/copy-of-a.jpg")
    run = f"{output}/runs/{summary['run_id']}/"
    rows = {r["image_uri"]: r for r in parquet_rows(client, f"{run}captions-")}
    assert rows[f"gs://{bucket}/photos/copy-of-a.jpg"]["content_hash"] == gcs_content_hash(
        blob.crc32c, blob.size
    )
    assert [gcs.downloads(f"gs://{bucket}/photos/{name}") for name in names[:2]] == [1, 0]
