"""The caption job's commit rule: the run's ``summary.json`` from its tallies, or the run
failed when more of the matched images failed than ``--max-failed-fraction`` allows. The
commit itself (exactly once, then ``_SUCCESS``) is ``pipeline.lifecycle``'s."""

from __future__ import annotations

import datetime
import json
import time

from models.captioner.manifest import Manifest
from models.faults import RunFault
from transforms.failures import STAGES


def counts_of(tally: dict) -> dict:
    """summary.json's ``counts`` from the job's summed tallies."""
    counts = {
        "matched": int(tally.get("matched", 0)),
        "skipped_as_done": int(tally.get("matched", 0)) - int(tally.get("to_caption", 0)),
        "captioned": int(tally.get("captioned", 0)),
        "reused": int(tally.get("reused", 0)),
        "failed": {stage: int(tally.get(f"failed_{stage}", 0)) for stage in STAGES},
    }
    if tally.get("shards"):  # tar shards matched; their image members count as images above
        counts["shards"] = int(tally["shards"])
    return counts


def check_failed_fraction(counts: dict, limit: float, failures_pattern: str) -> None:
    """Raises :class:`RunFault` when more than ``limit`` of the matched images failed."""
    failed = sum(counts["failed"].values())
    if limit and counts["matched"] and failed / counts["matched"] > limit:
        stages = ", ".join(f"{n} at {stage}" for stage, n in counts["failed"].items() if n)
        raise RunFault(
            f"{failed} of {counts['matched']} matched images failed ({stages}), more than "
            f"--max-failed-fraction {limit}; see {failures_pattern}"
        )


ENGINE = "engine "  # a tally's key: the record of an engine that captioned, as JSON


def engines_used(tally: dict, asked: str) -> dict:
    """What ``summary.json`` says of the engines: ``precision``, the one that captioned the run's
    images (several joined by "+" where workers chose differently; what was asked where the
    model captioned none), and ``engines``: each one's choice, the CPU it was made on, and
    its images."""
    used = [
        {**json.loads(key[len(ENGINE) :]), "images": int(images)}
        for key, images in sorted(tally.items())
        if key.startswith(ENGINE)
    ]
    precisions = sorted({engine["precision"] for engine in used})
    return {"precision": "+".join(precisions) or asked, "engines": used}


def summary(tally: dict, *, settings, run, manifest: Manifest, started_at: float) -> dict:
    """The run's ``summary.json``, once the failed fraction is within its limit."""
    seconds = time.time() - started_at
    counts = counts_of(tally)
    check_failed_fraction(counts, settings.max_failed_fraction, run.shard_pattern("failures"))
    started = datetime.datetime.fromtimestamp(started_at, datetime.timezone.utc)
    return {
        "run_id": run.run_id,
        "model_id": manifest.model_id,
        "encoder": manifest.encoder.to_json(),
        "search": settings.search,
        **engines_used(tally, settings.precision),
        "counts": counts,
        "started_at": started.isoformat(),
        "wall_seconds": round(seconds, 2),
        "images_per_second": round(counts["captioned"] / seconds, 2) if seconds else None,
    }
