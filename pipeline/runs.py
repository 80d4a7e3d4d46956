"""Caption runs, ``OUTPUT/runs/RUN_ID/``: launching a job so that it ends committed or failed
(never half-done), and reading the committed runs back.

Lifecycle (``transforms.commit``): committed once ``_SUCCESS`` is there; failed with the reason
in ``_FAILED``. Readers and ``--only-new`` consider committed runs only.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import posixpath
import re
import sys
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.runners.runner import PipelineState

from models import storage
from pipeline import cluster_health
from pipeline.lease import live_lease, release
from transforms.caption_schema import CAPTIONS_SCHEMA, conform
from transforms.commit import FAILED, SUCCESS, mark_failed, run_state
from transforms.failures import FAILURE_SCHEMA
from transforms.inference import METRICS_NAMESPACE, RunFault

SUMMARY = "summary.json"
ABANDONED = "abandoned"
STATES = ("committed", "failed", "unfinished")
_RUN_FAULT = re.compile(r"RunFault: (.+)")
_WHILE_RUNNING = re.compile(r"\s*\[while running '[^']*'\]")


class RunFailed(RuntimeError):
    """The run stopped on a fault that is not an image's; the message is the one-line reason."""


def failure_reason(error: BaseException) -> str:
    """One line for a failed pipeline: the worker's :class:`RunFault` message where there is
    one (runners re-raise it, or wrap it in their own error's text), else the error's first
    line; without the runner's "[while running 'STEP']" suffix."""
    text = str(error).strip()
    found = None if isinstance(error, RunFault) else _RUN_FAULT.search(text)
    if found:
        text = found.group(1)
    elif not isinstance(error, RunFault):
        text = f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"
    return _WHILE_RUNNING.sub("", text.splitlines()[0]).strip()[:500]


def inference_metrics(result) -> dict:
    """RunInference's metrics of a finished run (namespace ``beamcap``): counters as numbers,
    distributions as {count, mean, max}; empty where the runner reports none."""
    from apache_beam.metrics.metric import MetricsFilter

    found = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    metrics = {c.key.metric.name: c.committed or c.attempted for c in found["counters"]}
    for distribution in found["distributions"]:
        value = distribution.committed or distribution.attempted
        if value and value.count:
            metrics[distribution.key.metric.name] = {
                "count": value.count,
                "mean": value.mean,
                "max": value.max,
            }
    return metrics


def run_to_commit(pipeline, run_dir: str, *, wait: bool = True, on_failure=lambda: None):
    """Runs ``pipeline``, whose last step commits ``run_dir``. On any fault: ``run_dir`` is
    marked failed with the reason, ``on_failure()`` called (the run's leases released) and
    :class:`RunFailed` raised. On a cluster, its worker pool is probed first and the cluster
    watched while the job runs (``pipeline.cluster_health``). With ``wait=False`` returns Beam's
    result once submitted (the runner's own job then commits or fails the directory)."""
    cluster = cluster_health.cluster_of(pipeline.options)
    watch, submitted = None, time.time()
    try:
        cluster_health.before_run(cluster)
        result = pipeline.run()
        if not wait:
            return result
        with cluster_health.watching(cluster, result, since=submitted) as watch:
            state = result.wait_until_finish()
        if state not in (None, PipelineState.DONE):
            raise RunFailed(f"the pipeline ended in state {state}")
    except Exception as error:  # noqa: BLE001 - every fault ends the run as failed
        recorded = _recorded_state(run_dir)
        if recorded["state"] == "failed":  # by the job itself: its reason, written once
            reason = recorded["reason"]
        elif watch is not None and watch.fault:
            reason = watch.fault
        else:
            reason = cluster_health.in_words(cluster, failure_reason(error))
            reason = storage.in_words(reason, error)
        raise RunFailed(reason + fail_cleanly(run_dir, reason, on_failure)) from error
    return result


def _recorded_state(run_dir: str) -> dict:
    """The run's state as far as storage answers at one try ("unknown" when it does not)."""
    try:
        with storage.one_try():
            return run_state(run_dir)
    except Exception:  # noqa: BLE001 - storage may be what failed; the run's fault comes first
        return {"state": "unknown"}


def fail_cleanly(run_dir: str, reason: str, on_failure=lambda: None) -> str:
    """Marks ``run_dir`` failed with ``reason`` (unless it already is) and calls
    ``on_failure()``. A fault while doing so never replaces the reason: it is returned, as text
    to append to it ("" when none). Each storage call here makes one attempt
    (:func:`models.storage.one_try`): when storage is what failed, the reason comes out after
    one request timeout per call, not a whole deadline."""

    def mark():
        if run_state(run_dir)["state"] != "failed":
            mark_failed(run_dir, reason)

    handling = sys.exc_info()[1]  # the run's own fault, when called while handling it
    faults = []
    for step in (mark, on_failure):
        try:
            with storage.one_try():
                step()
        except Exception as error:  # noqa: BLE001 - reported after the run's own reason
            faults.append(storage.in_words(failure_reason(error), error, besides=handling))
    return f" (and cleaning up failed: {'; '.join(faults)})" if faults else ""


def _read_parquet(run_dir: str, stem: str, schema: pa.Schema) -> pa.Table:
    pattern = FileSystems.join(run_dir, f"{stem}-*.parquet")
    paths = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    tables = []
    for path in paths:
        with FileSystems.open(path) as handle:
            tables.append(conform(pq.read_table(pa.BufferReader(handle.read())), schema))
    return pa.concat_tables(tables) if tables else schema.empty_table()


def read_run(run_dir: str) -> tuple[pa.Table, pa.Table, dict]:
    """(captions, failures, summary) of a committed run; an uncommitted one is an error."""
    if run_state(run_dir)["state"] != "committed":
        raise FileNotFoundError(f"{run_dir} is not a committed run (no {SUCCESS})")
    with FileSystems.open(FileSystems.join(run_dir, SUMMARY)) as handle:
        summary = json.loads(handle.read())
    return (
        _read_parquet(run_dir, "captions", CAPTIONS_SCHEMA),
        _read_parquet(run_dir, "failures", FAILURE_SCHEMA),
        summary,
    )


def _run_files(output: str) -> dict[str, list]:
    """Run id -> the FileMetadata of every file under ``OUTPUT/runs/RUN_ID/``, at any depth
    (a killed run may hold nothing but Beam's ``beam-temp-*`` folders)."""
    root = FileSystems.join(output, "runs")
    found = FileSystems.match([FileSystems.join(root, "*", "**")])[0].metadata_list
    files: dict[str, list] = {}
    for metadata in found:
        files.setdefault(metadata.path[len(root) :].strip("/").split("/")[0], []).append(metadata)
    return files


def committed_runs(output: str) -> list[str]:
    """The committed run directories under ``OUTPUT/runs/``, oldest first (ids sort by time)."""
    pattern = FileSystems.join(output, "runs", "*", SUCCESS)
    return sorted(posixpath.dirname(m.path) for m in FileSystems.match([pattern])[0].metadata_list)


def list_runs(output: str, *, details: bool = True) -> list[dict]:
    """Every run, oldest first: its state (committed, failed with the reason, or unfinished)
    and, for a committed one, its summary; for an unfinished one its age in seconds (since its
    lease began, else since its oldest file) and ``lease``, the live lease that covers it or
    None (then the run is abandoned: ``beamcap runs --clean`` or the next run marks it so).
    Without ``details``, finished runs cost no request beyond the one listing."""
    runs = []
    now = time.time()
    root = FileSystems.join(output, "runs")
    for run_id, files in sorted(_run_files(output).items()):
        run_dir = FileSystems.join(root, run_id)
        names = {m.path[len(run_dir) :].lstrip("/") for m in files}
        finished = names & {SUCCESS, FAILED}
        if details or not finished:
            state = run_state(run_dir)
        else:
            state = {"state": "committed" if SUCCESS in finished else "failed"}
        if state["state"] == "committed" and details:
            with FileSystems.open(FileSystems.join(run_dir, SUMMARY)) as handle:
                state.update(json.loads(handle.read()))
        elif state["state"] == "unfinished":
            covering = live_lease(output, run_id)
            since = min(m.last_updated_in_seconds for m in files)
            if covering:
                since = datetime.datetime.fromisoformat(covering.started_at).timestamp()
            state["age_seconds"] = round(now - since)
            state["lease"] = dataclasses.asdict(covering) if covering else None
        runs.append({"run_id": run_id, **state, "run_dir": run_dir})
    return runs


def clean_abandoned(output: str) -> list[str]:
    """Marks every unfinished run that no live lease covers failed ("abandoned") and removes
    its temporary files; returns their run ids. Committed, failed and live runs stay as they
    are."""
    abandoned = [
        run["run_id"]
        for run in list_runs(output, details=False)
        if run["state"] == "unfinished" and run["lease"] is None
    ]
    for run_id in abandoned:
        mark_failed(FileSystems.join(output, "runs", run_id), ABANDONED)
        release(output, run_id)
    return abandoned


def read_captions(output: str) -> pa.Table:
    """Every committed run's captions as one table: the latest caption (``captioned_at``) of
    each image by each model, so an image captioned again after it changed, or by a second
    model, appears once per model. Filter on ``model_id`` for one model's captions."""
    tables = [
        _read_parquet(run_dir, "captions", CAPTIONS_SCHEMA) for run_dir in committed_runs(output)
    ]
    if not tables:
        return CAPTIONS_SCHEMA.empty_table()
    every = pa.concat_tables(tables)
    group = ["image_uri", "model_id"]
    # Arrow joins cannot carry list columns: rank the keys with row numbers, then take rows.
    keys = every.select([*group, "captioned_at"]).append_column(
        "_row", pa.array(range(every.num_rows), pa.int64())
    )
    newest = keys.group_by(group).aggregate([("captioned_at", "max")])
    joined = keys.join(newest, keys=group, join_type="inner")
    joined = joined.filter(pc.equal(joined["captioned_at"], joined["captioned_at_max"]))
    rows = joined.group_by(group).aggregate([("_row", "max")])["_row_max"]  # ties: the later row
    return every.take(rows).sort_by([("image_uri", "ascending"), ("model_id", "ascending")])


def _age(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _unfinished_note(run: dict) -> str:
    covering = run["lease"]
    if covering is None:
        return f"age {_age(run['age_seconds'])}; no live lease: abandoned (see --clean)"
    process = f" pid {covering['pid']}" if covering["pid"] is not None else ""
    return (
        f"age {_age(run['age_seconds'])}; leased by {covering['host']}{process} "
        f"until {covering['expires_at']}"
    )


def main(argv: list[str] | None = None) -> int:
    """``beamcap runs OUTPUT``: the runs under an output root: committed ones with their
    counts, failed ones with their reason, unfinished ones with their age and the lease that
    still covers them (none: the run died). ``--clean`` marks those abandoned."""

    from pipeline.settings import Parser

    parser = Parser("beamcap runs", main.__doc__)
    parser.add_argument("output", help="the --output root of `beamcap caption` runs")
    parser.add_argument("--json", action="store_true", help="print the runs as JSON")
    parser.add_argument(
        "--clean",
        action="store_true",
        help="mark unfinished runs that no live lease covers failed (reason: abandoned) and "
        "remove their temporary files; committed and live runs are left alone",
    )
    args = parser.parse_args(argv)
    if args.clean:
        for run_id in clean_abandoned(args.output):
            print(f"marked {run_id} failed: {ABANDONED}; its temporary files removed")
    runs = list_runs(args.output)
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0
    print(
        f"{'run_id':<26}{'state':<11}{'matched':>9}{'skipped':>9}{'captioned':>11}{'failed':>8}"
        f"{'images/s':>10}  model or reason"
    )
    for run in runs:
        if run["state"] != "committed":
            note = _unfinished_note(run) if run["state"] == "unfinished" else run["reason"]
            print(f"{run['run_id']:<26}{run['state']:<11}{'':>57}  {note}")
            continue
        counts = run["counts"]
        print(
            f"{run['run_id']:<26}{'committed':<11}{counts['matched']:>9}"
            f"{counts.get('skipped_as_done', 0):>9}{counts['captioned']:>11}"
            f"{sum(counts['failed'].values()):>8}{run['images_per_second'] or 0:>10.1f}"
            f"  {run['model_id']}"
        )
    tally = {state: sum(run["state"] == state for run in runs) for state in STATES}
    states = ", ".join(f"{n} {state}" for state, n in tally.items())
    print(f"{len(runs)} runs under {args.output}: {states}")
    return 0
