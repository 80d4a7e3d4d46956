"""Read caption runs: ``OUTPUT/runs/RUN_ID/``, committed once ``_SUCCESS`` is there."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms.caption_sink import CAPTIONS_SCHEMA
from transforms.failures import FAILURE_SCHEMA

SUCCESS, SUMMARY = "_SUCCESS", "summary.json"


def is_committed(run_dir: str) -> bool:
    return FileSystems.exists(FileSystems.join(run_dir, SUCCESS))


def _read_parquet(run_dir: str, stem: str, schema: pa.Schema) -> pa.Table:
    pattern = FileSystems.join(run_dir, f"{stem}-*.parquet")
    paths = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    tables = []
    for path in paths:
        with FileSystems.open(path) as handle:
            tables.append(pq.read_table(pa.BufferReader(handle.read())))
    return pa.concat_tables(tables).cast(schema) if tables else schema.empty_table()


def read_run(run_dir: str) -> tuple[pa.Table, pa.Table, dict]:
    """(captions, failures, summary) of a committed run; an uncommitted one is an error."""
    if not is_committed(run_dir):
        raise FileNotFoundError(f"{run_dir} is not a committed run (no {SUCCESS})")
    with FileSystems.open(FileSystems.join(run_dir, SUMMARY)) as handle:
        summary = json.loads(handle.read())
    return (
        _read_parquet(run_dir, "captions", CAPTIONS_SCHEMA),
        _read_parquet(run_dir, "failures", FAILURE_SCHEMA),
        summary,
    )
