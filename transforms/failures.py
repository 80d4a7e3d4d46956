"""Failures are data: every per-image failure is a tagged output with its stage and reason.

A stage yields ``failure(uri, stage, error)``; the job collects the ``FAILURES`` outputs of all
stages and writes them with :class:`WriteFailures` (schema in docs/architecture.md).
"""

from __future__ import annotations

import datetime

import apache_beam as beam
import pyarrow as pa
from apache_beam import pvalue

from transforms.commit import WriteRunParquet

FAILURES = "failures"
STAGES = ("read", "decode", "encode", "caption")
MAX_MESSAGE = 2000

FAILURE_SCHEMA = pa.schema(
    [
        ("image_uri", pa.string()),
        ("stage", pa.string()),
        ("error_type", pa.string()),
        ("message", pa.string()),
        ("content_hash", pa.string()),  # where the bytes were read (transforms.content)
        ("run_id", pa.string()),
        ("failed_at", pa.timestamp("us", tz="UTC")),
    ]
)


def failure(
    uri: str, stage: str, error: BaseException | str, *, payload=None
) -> pvalue.TaggedOutput:
    """The tagged failure record of one image at one stage; ``payload``, what the job carries
    with the image, rides along (the caption job's tells the image's content and its copies,
    ``transforms.content``) and is not written."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    error_type = type(error).__name__ if isinstance(error, BaseException) else "Rejected"
    return pvalue.TaggedOutput(
        FAILURES,
        {
            "image_uri": uri,
            "stage": stage,
            "error_type": error_type,
            "message": str(error)[:MAX_MESSAGE],
            "payload": payload,
        },
    )


class WriteFailures(beam.PTransform):
    """Stamps failure records with the run id and time; writes ``PREFIX-*.parquet``."""

    def __init__(self, file_path_prefix: str, run_id: str, num_shards: int = 1):
        super().__init__()
        self.file_path_prefix = file_path_prefix
        self.run_id = run_id
        self.num_shards = num_shards

    def expand(self, failures):
        run_id = self.run_id

        def stamp(record):
            now = datetime.datetime.now(datetime.timezone.utc)
            row = {name: record.get(name) for name in FAILURE_SCHEMA.names}
            return {**row, "run_id": run_id, "failed_at": now}

        return (
            failures
            | "Stamp" >> beam.Map(stamp)
            | "Write"
            >> WriteRunParquet(self.file_path_prefix, FAILURE_SCHEMA, num_shards=self.num_shards)
        )
