"""What the batched model stages share: one model per worker process, and failure isolation."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import apache_beam as beam
from apache_beam.utils import shared

from transforms.failures import FAILURES, failure


class _Holder:
    """``Shared`` caches weak references, which plain models and bundles do not support."""

    def __init__(self, value):
        self.value = value


def load_shared(handle: shared.Shared, key, loader: Callable[[], object]):
    """The process-wide instance for ``key``, built by ``loader`` on first use."""
    return handle.acquire(lambda: _Holder(loader()), tag=key).value


def run_batch(function: Callable[[list], list], items: Sequence, stage: str):
    """``function(items)`` as one batch; if it raises, item by item, so that only the items at
    fault fail. Returns (items that succeeded, their results, failure outputs)."""
    try:
        return list(items), list(function(list(items))), []
    except Exception:  # noqa: BLE001 - the retry below tells which items are at fault
        ok, results, failed = [], [], []
        for item in items:
            try:
                results.extend(function([item]))
                ok.append(item)
            except Exception as error:  # noqa: BLE001
                failed.append(failure(item.uri, stage, error))
        return ok, results, failed


def batch_and_apply(
    pcoll, dofn: beam.DoFn, *, label: str, min_batch_size: int, max_batch_size: int
):
    """``BatchElements`` then ``dofn`` on each batch; returns (main output, failures)."""
    results = (
        pcoll
        | "Batch"
        >> beam.BatchElements(min_batch_size=min_batch_size, max_batch_size=max_batch_size)
        | label >> beam.ParDo(dofn).with_outputs(FAILURES, main="main")
    )
    return results.main, results[FAILURES]
