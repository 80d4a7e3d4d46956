"""Content identity's pure parts: the hash, and which committed rows a run may reuse."""

import base64

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.fileio import ReadableFile
from apache_beam.io.filesystem import FileMetadata

from transforms.caption_schema import CAPTIONS_SCHEMA
from transforms.content import content_hash, gcs_content_hash, known_contents


def test_the_hash_is_crc32c_and_size_as_cloud_storage_lists_it():
    assert content_hash(b"123456789") == "crc32c:e3069283:9"  # CRC-32C's check value
    listed = base64.b64encode(bytes.fromhex("e3069283")).decode()  # the JSON API's form
    assert gcs_content_hash(listed, 9) == content_hash(b"123456789")


def _file(path, rows, schema):
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return ReadableFile(FileMetadata(str(path), path.stat().st_size))


def test_only_this_models_own_captions_are_known(tmp_path):
    row = {"caption": "a dog", "model_id": "m1", "run_id": "r1", "content_hash": "crc32c:1:2"}
    rows = [
        {**row, "image_uri": "a.jpg"},
        {**row, "image_uri": "b.jpg", "reused_from": "a.jpg", "reused_from_run": "r1"},
        {**row, "image_uri": "c.jpg", "model_id": "m2"},
        {**row, "image_uri": "d.jpg", "content_hash": None},
    ]
    known = known_contents(_file(tmp_path / "v4.parquet", rows, CAPTIONS_SCHEMA), "m1")
    assert [(content, r["image_uri"]) for content, r in known] == [("crc32c:1:2", "a.jpg")]
    version_3 = pa.schema([f for f in CAPTIONS_SCHEMA if f.name != "content_hash"])
    assert known_contents(_file(tmp_path / "v3.parquet", rows, version_3), "m1") == []
