"""The captions Parquet contract: its explicit schema and the row builder
(docs/architecture.md)."""

from __future__ import annotations

import datetime

import pyarrow as pa

CANDIDATE = pa.struct(
    [("caption", pa.string()), ("log_prob", pa.float32()), ("score", pa.float32())]
)
CAPTIONS_SCHEMA = pa.schema(
    [
        ("image_uri", pa.string()),
        ("caption", pa.string()),
        ("log_prob", pa.float32()),
        ("score", pa.float32()),
        ("candidates", pa.list_(CANDIDATE)),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("model_id", pa.string()),
        ("run_id", pa.string()),
        ("captioned_at", pa.timestamp("us", tz="UTC")),
    ]
)


def caption_row(image, captions: list, model_id: str, run_id: str) -> dict:
    """One row of the captions Parquet (``CAPTIONS_SCHEMA``) from ``Bundle.caption``'s N-best
    list for ``image`` (a DecodedImage), best first."""
    candidates = [
        {"caption": caption.text, "log_prob": caption.log_prob, "score": caption.score}
        for caption in captions
    ]
    return {
        "image_uri": image.uri,
        **candidates[0],
        "candidates": candidates,
        "width": image.width,
        "height": image.height,
        "model_id": model_id,
        "run_id": run_id,
        "captioned_at": datetime.datetime.now(datetime.timezone.utc),
    }
