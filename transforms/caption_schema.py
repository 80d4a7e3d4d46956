"""The captions Parquet contract: its explicit schema and the row builder
(docs/architecture.md)."""

from __future__ import annotations

import datetime

import pyarrow as pa

from transforms.shards import member_key

CANDIDATE = pa.struct(
    [("caption", pa.string()), ("log_prob", pa.float32()), ("score", pa.float32())]
)
# 2 added image_identity, 3 key (a tar shard member's WebDataset key), 4 content_hash (the
# image's bytes, transforms.content), reused_from and reused_from_run (a caption reused for the
# same content, not the model's run on this URI); older files read with what they lack null
CAPTIONS_VERSION = 4
CAPTIONS_SCHEMA = pa.schema(
    [
        ("image_uri", pa.string()),
        ("image_identity", pa.string()),
        ("key", pa.string()),
        ("content_hash", pa.string()),
        ("caption", pa.string()),
        ("log_prob", pa.float32()),
        ("score", pa.float32()),
        ("candidates", pa.list_(CANDIDATE)),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("model_id", pa.string()),
        ("run_id", pa.string()),
        ("captioned_at", pa.timestamp("us", tz="UTC")),
        ("reused_from", pa.string()),  # the image URI whose caption this is; null: this one's
        ("reused_from_run", pa.string()),  # the run that captioned it (this run's for a copy)
    ],
    metadata={b"beamcap.captions_version": str(CAPTIONS_VERSION).encode()},
)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` in ``schema``: columns an older file lacks are added as nulls, so files of
    every schema version read alike."""
    for field in schema:
        if field.name not in table.column_names:
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    return table.select(schema.names).cast(schema)


def caption_row(image, captions: list, model_id: str, run_id: str) -> dict:
    """One row of the captions Parquet (``CAPTIONS_SCHEMA``) from ``Bundle.caption``'s N-best
    list for ``image`` (a DecodedImage whose payload is a ``transforms.content.Source``, or the
    file's identity, ``transforms.match.identity``: a tar member's is its shard's), best
    first."""
    candidates = [
        {"caption": caption.text, "log_prob": caption.log_prob, "score": caption.score}
        for caption in captions
    ]
    source = image.payload
    return {
        "image_uri": image.uri,
        "image_identity": getattr(source, "identity", source),
        "key": member_key(image.uri),
        "content_hash": getattr(source, "content", None),
        **candidates[0],
        "candidates": candidates,
        "width": image.width,
        "height": image.height,
        "model_id": model_id,
        "run_id": run_id,
        "captioned_at": datetime.datetime.now(datetime.timezone.utc),
        "reused_from": None,
        "reused_from_run": None,
    }


_REUSED = ("caption", "log_prob", "score", "candidates", "width", "height", "model_id")


def reused_row(row: dict, uri: str, identity: str | None, run_id: str) -> dict:
    """The captions row of ``uri`` (its file identity ``identity``), whose content ``row``
    captioned: the caption and the image's size are ``row``'s, ``reused_from`` names where
    they came from (the image the model ran on, when ``row`` itself was reused)."""
    original = row.get("reused_from") is None
    return {
        "image_uri": uri,
        "image_identity": identity,
        "key": member_key(uri),
        "content_hash": row["content_hash"],
        **{name: row[name] for name in _REUSED},
        "run_id": run_id,
        "captioned_at": datetime.datetime.now(datetime.timezone.utc),
        "reused_from": row["image_uri"] if original else row["reused_from"],
        "reused_from_run": row["run_id"] if original else row["reused_from_run"],
    }
