"""The captions Parquet contract: its explicit schema and the row builder
(docs/architecture.md)."""

from __future__ import annotations

import datetime

import pyarrow as pa

from transforms.shards import member_key

CANDIDATE = pa.struct(
    [("caption", pa.string()), ("log_prob", pa.float32()), ("score", pa.float32())]
)
# 2 added image_identity, 3 key (a tar shard member's WebDataset key); older files read with
# what they lack null
CAPTIONS_VERSION = 3
CAPTIONS_SCHEMA = pa.schema(
    [
        ("image_uri", pa.string()),
        ("image_identity", pa.string()),
        ("key", pa.string()),
        ("caption", pa.string()),
        ("log_prob", pa.float32()),
        ("score", pa.float32()),
        ("candidates", pa.list_(CANDIDATE)),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("model_id", pa.string()),
        ("run_id", pa.string()),
        ("captioned_at", pa.timestamp("us", tz="UTC")),
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
    list for ``image`` (a DecodedImage whose payload is the file's identity,
    ``transforms.match.identity``: a tar member's is its shard's), best first."""
    candidates = [
        {"caption": caption.text, "log_prob": caption.log_prob, "score": caption.score}
        for caption in captions
    ]
    return {
        "image_uri": image.uri,
        "image_identity": image.payload,
        "key": member_key(image.uri),
        **candidates[0],
        "candidates": candidates,
        "width": image.width,
        "height": image.height,
        "model_id": model_id,
        "run_id": run_id,
        "captioned_at": datetime.datetime.now(datetime.timezone.utc),
    }
