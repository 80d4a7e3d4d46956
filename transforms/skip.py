"""Skip images that earlier runs already handled: a join inside the pipeline, so the set of
done URIs never has to fit in the launcher's memory.

An image is done when an earlier committed run captioned this same file, the same identity
(``transforms.match.identity``: size and update time), or failed on it and the file has not
been updated since. Caption rows written before identities were recorded (captions schema
version 1) count the same way as failures: done unless the file changed after the caption.
With ``model_id``, only that model's captions count (an image's failure counts whatever the
model: it is the file's fault).

A tar shard (``transforms.shards``) joins with its members' records and its own: it goes on as
a ``ShardTask`` naming the members that are done, or done as a whole where an earlier failure
of the shard itself covers it.
"""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq

from transforms.match import ReadEachMatched, updated_micros
from transforms.shards import ShardTask, is_shard, split_member_uri

_COLUMNS = ("image_uri", "image_identity", "model_id", "captioned_at", "failed_at")


def done_records(readable_file) -> list[tuple[str, tuple]]:
    """``(uri, (identity, done_at_micros, model_id))`` for each row of a captions or failures
    Parquet file (columns a file lacks are None)."""
    with readable_file.open() as handle:
        parquet = pq.ParquetFile(handle)
        names = set(parquet.schema_arrow.names)
        table = parquet.read(columns=[c for c in _COLUMNS if c in names])

    def column(name, cast=None):
        if name not in table.column_names:
            return [None] * table.num_rows
        values = table.column(name)
        return (values.cast(cast) if cast else values).to_pylist()

    done_at = column("captioned_at" if "captioned_at" in names else "failed_at", pa.int64())
    return list(
        zip(
            column("image_uri"),
            zip(column("image_identity"), done_at, column("model_id"), strict=True),
            strict=True,
        )
    )


def is_done(image_identity: str | None, record: tuple, model_id: str | None) -> bool:
    """Whether a done record (see :func:`done_records`) covers the file as it is now."""
    done_identity, done_at, done_model = record
    if model_id is not None and done_model is not None and done_model != model_id:
        return False
    if image_identity is None:  # not looked up: the read stage will say why
        return True
    if done_identity is not None:
        return done_identity == image_identity
    return done_at is not None and updated_micros(image_identity) <= done_at


class SkipAlreadyDone(beam.PTransform):
    """``(uri, payload)`` pairs (the payload: the file's identity, or a ``gs://`` image's
    ``transforms.match.Listed``) -> the pairs (deduplicated) that no record of the
    ``done_files`` covers (:func:`is_done`), a tar shard's as ``(uri, ShardTask)``.
    ``done_files`` are file patterns of captions and failures Parquet files; ones matching
    nothing are fine. With ``model_id``, captions by other models do not count."""

    def __init__(self, done_files: list[str], *, model_id: str | None = None):
        super().__init__()
        self.done_files = done_files
        self.model_id = model_id

    def expand(self, images):
        done = images.pipeline | "ReadDone" >> ReadEachMatched(self.done_files, done_records)
        model_id = self.model_id

        def by_shard(record):
            """A member's record under its shard's URI, with the member's name."""
            uri, done_record = record
            member = split_member_uri(uri)
            return (member[0], (member[1], done_record)) if member else (uri, (None, done_record))

        def new_ones(item):
            uri, grouped = item
            own = [r for member, r in grouped["done"] if member is None]
            for payload in set(grouped["new"]):
                image_identity = getattr(payload, "identity", payload)  # a Listed's, or itself
                all_done = any(is_done(image_identity, r, model_id) for r in own)
                if is_shard(uri):
                    done_members = frozenset(
                        member
                        for member, r in grouped["done"]
                        if member is not None and is_done(image_identity, r, model_id)
                    )
                    yield uri, ShardTask(image_identity, done_members, all_done)
                elif not all_done:
                    yield uri, payload

        done = done | "ByShard" >> beam.Map(by_shard)
        joined = {"new": images, "done": done} | "Join" >> beam.CoGroupByKey()
        return joined | "KeepNew" >> beam.FlatMap(new_ones)
