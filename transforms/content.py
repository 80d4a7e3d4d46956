"""Content identity: an image is known by its bytes as well as by its path, so a renamed or
copied image is not captioned again, and identical images in one run are captioned once.

An image's content hash is ``crc32c:XXXXXXXX:SIZE``: the CRC-32C of its bytes (8 hex digits)
and their number. CRC-32C is the checksum Cloud Storage keeps for every object, composite ones
too: a ``gs://`` image's comes from the match's listing (``transforms.match.Listed``,
:func:`gcs_content_hash`), before anything reads it; a local file's, and a tar shard's
member's, is computed over the bytes the job reads anyway, in the read stage
(:class:`ReadImages`). A file ``--only-new`` skips by its path and identity
(``transforms.skip``) is never read, so never hashed.

Two images count as the same content when both the checksum and the size agree. CRC-32C is
32 bits: among ``n`` distinct images of exactly the same size, some two share a checksum with a
chance of about ``n**2 / 2**33`` (one in 8,600 for 1,000 such images; even odds near 110,000).
Compressed photos spread over many sizes, so each size holds few; files of one fixed size
(uncompressed BMP or PPM, fixed-layout TIFF) are where the risk lies: there, turn reuse across
runs off (``--reuse-captions=false``). docs/schedules.md says more.

The caption job, after :class:`ReadImages` (``data`` None where the listing gave the content)::

    (content, (uri, identity, data)) --CaptionOncePerContent(known)--> main: (uri, Source, data)
                                                                       REUSED: caption rows

:class:`CaptionOncePerContent` groups the new images by content (a shuffle of small keys, and
of bytes only where they were read to be hashed, never of decoded arrays). A content that a
committed run captioned with this model (its captions rows, ``known``) gets those captions for
each new URI without the model, and without a read where the listing gave the content.
Otherwise one URI of the group (the first in order) goes on to decode and caption (read there
if not yet), its :class:`Source` naming the others, which get its row
(``caption_schema.reused_row``) or, where it fails, a failure of their own
(:func:`failures_per_copy`).
"""

from __future__ import annotations

import base64
import dataclasses

import apache_beam as beam
import google_crc32c
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam import pvalue
from apache_beam.metrics import Metrics

from transforms.caption_schema import reused_row
from transforms.decode import ReadAhead, read_file
from transforms.failures import MAX_MESSAGE, failure
from transforms.match import Listed, ReadEachMatched

REUSED = "reused"  # CaptionOncePerContent's tagged output: rows of known content


def content_hash(data: bytes) -> str:
    return f"crc32c:{google_crc32c.value(data):08x}:{len(data)}"


def gcs_content_hash(crc32c: str, size: int) -> str:
    """The content hash of a Cloud Storage object from its listing: ``crc32c`` is base64 of
    the big-endian checksum, as the JSON API gives it."""
    return f"crc32c:{int.from_bytes(base64.b64decode(crc32c), 'big'):08x}:{size}"


@dataclasses.dataclass(frozen=True)
class Source:
    """The caption job's payload for a content to caption: the file identity of the URI read
    (``transforms.match.identity``; a tar member's is its shard's), the content hash, and the
    ``(uri, identity)`` of this run's other URIs with the same content."""

    identity: str | None
    content: str
    copies: tuple[tuple[str, str | None], ...] = ()


class ReadImages(ReadAhead):
    """``(uri, payload)`` -> ``(content hash, (uri, identity, data))``; an element that brings
    its bytes (a tar shard's member) is hashed, not read, and a ``gs://`` image whose listing
    gave its content (a :class:`~transforms.match.Listed` payload) is neither: its ``data`` is
    None, and it is read where it is decoded, once per content, if at all. Failures at stage
    ``read``. Read ahead on ``threads`` threads (``transforms.decode.ReadAhead``): reads wait
    on storage; ``images_read`` counts the images read or hashed here."""

    def __init__(self, *, threads: int = 4, ahead: int = 64):
        super().__init__(threads=threads, ahead=ahead, counted="images_read")

    def process(self, element, window=beam.DoFn.WindowParam, timestamp=beam.DoFn.TimestampParam):
        uri, payload, *_ = element
        if isinstance(payload, Listed):
            yield gcs_content_hash(payload.crc32c, payload.size), (uri, payload.identity, None)
            return
        yield from super().process(element, window, timestamp)

    def work(self, uri: str, payload, data: bytes | None = None):
        try:
            if data is None:
                data = read_file(uri)
        except Exception as error:  # noqa: BLE001 - any I/O error is this image's failure
            return failure(uri, "read", error, payload=payload)
        return content_hash(data), (uri, payload, data)


_KNOWN = ("image_uri", "content_hash", "model_id", "run_id", "reused_from", "reused_from_run")
_CAPTION = ("caption", "log_prob", "score", "candidates", "width", "height")


def known_contents(readable_file, model_id: str) -> list[tuple[str, dict]]:
    """``(content hash, row)`` for each row of a captions Parquet file that ``model_id``
    captioned itself (copies left out: their original is there too). Files written before
    content hashes (captions version 3 and older) have none."""
    with readable_file.open() as handle:
        parquet = pq.ParquetFile(handle)
        if "content_hash" not in parquet.schema_arrow.names:
            return []
        table = parquet.read(columns=[*_KNOWN, *_CAPTION])
    mine = pc.and_(pc.equal(table["model_id"], model_id), pc.is_null(table["reused_from"]))
    table = table.filter(pc.and_(mine, pc.is_valid(table["content_hash"])))
    return [(row["content_hash"], row) for row in table.to_pylist()]


class _OncePerContent(beam.DoFn):
    def __init__(self, run_id: str):
        self.run_id = run_id
        self.reused = Metrics.counter(self.__class__, "images_reused")

    def process(self, element):
        content, grouped = element
        new = sorted(grouped["new"], key=lambda read: read[0])
        if not new:
            return
        known = list(grouped["known"])
        if known:  # the earliest run's, for a stable choice
            row = min(known, key=lambda r: (r["run_id"] or "", r["image_uri"]))
            for uri, identity, _ in new:
                self.reused.inc()
                yield pvalue.TaggedOutput(REUSED, reused_row(row, uri, identity, self.run_id))
            return
        (uri, identity, data), rest = new[0], new[1:]
        copies = tuple((other, other_identity) for other, other_identity, _ in rest)
        yield uri, Source(identity, content, copies), data


class _EachOnItsOwn(beam.DoFn):
    def process(self, element):
        content, (uri, identity, data) = element
        yield uri, Source(identity, content), data


class CaptionOncePerContent(beam.PTransform):
    """``(content, (uri, identity, data))`` -> ``(uri, Source, data)`` once per content to
    caption (``data`` None where not read yet: the decode reads it), and tagged ``REUSED`` the
    rows of URIs whose content ``known_files`` (captions Parquet patterns of committed runs;
    none: reuse within this run only) hold captioned by ``model_id``. With ``enabled`` False,
    every URI goes on on its own, without a shuffle."""

    def __init__(self, known_files: list[str], *, model_id: str, run_id: str, enabled: bool = True):
        super().__init__()
        self.known_files, self.model_id, self.run_id = known_files, model_id, run_id
        self.enabled = enabled

    def expand(self, read):
        if not self.enabled:
            return read | "EachOnItsOwn" >> beam.ParDo(_EachOnItsOwn()).with_outputs(
                REUSED, main="to_caption"
            )
        known = read.pipeline | "ReadKnown" >> ReadEachMatched(
            self.known_files, known_contents, self.model_id
        )
        return (
            {"new": read, "known": known}
            | "Join" >> beam.CoGroupByKey()
            | "Once"
            >> beam.ParDo(_OncePerContent(self.run_id)).with_outputs(REUSED, main="to_caption")
        )


def rows_per_copy(row: dict, source, run_id: str) -> list[dict]:
    """The model's row for a :class:`Source`'s URI, then one per copy (reused from it)."""
    copies = getattr(source, "copies", ())
    return [row, *(reused_row(row, uri, identity, run_id) for uri, identity in copies)]


def failures_per_copy(record: dict) -> list[dict]:
    """A failure record with its content hash, then, where its payload is a :class:`Source`
    with copies, one per copy that says whose failure it is."""
    source = record.get("payload")
    if not isinstance(source, Source):
        return [record]
    first = {**record, "content_hash": source.content}
    message = f"the same content as {record['image_uri']}, which failed: {record['message']}"
    message = message[:MAX_MESSAGE]
    return [
        first,
        *({**first, "image_uri": uri, "message": message} for uri, _ in source.copies),
    ]
