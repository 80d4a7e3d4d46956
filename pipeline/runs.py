"""Runs end committed or failed, never half-done: launching a job so (:func:`run_to_commit`),
and ``beamcap runs``, the table of an output root's runs. Where a run's files are, and what its
states mean, is ``pipeline.output_root``'s.
"""

from __future__ import annotations

import json
import sys
import time

from apache_beam.options.pipeline_options import PortableOptions
from apache_beam.runners.runner import PipelineState

from models import storage
from models.faults import RunFailed
from pipeline import cluster_health, runner_faults
from pipeline.output_root import ABANDONED, STATES, OutputRoot, RunDir
from transforms.inference import METRICS_NAMESPACE


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


def run_to_commit(pipeline, run: RunDir, *, wait: bool = True, on_failure=lambda: None):
    """Runs ``pipeline``, whose last step commits ``run``. On any fault: ``run`` is
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
        endpoint = pipeline.options.view_as(PortableOptions).job_endpoint
        with cluster_health.watching(cluster, result, since=submitted) as watch:
            state = runner_faults.wait_until_finish(result, endpoint)
        if state not in (None, PipelineState.DONE):
            raise RunFailed(f"the pipeline ended in state {state}")
    except Exception as error:  # noqa: BLE001 - every fault ends the run as failed
        recorded = _recorded_state(run)
        if recorded["state"] == "failed":  # by the job itself: its reason, written once
            reason = recorded["reason"]
        elif watch is not None and watch.fault:
            reason = watch.fault
        else:
            reason = runner_faults.reason_of(error, cluster)
        raise RunFailed(reason + fail_cleanly(run, reason, on_failure)) from error
    return result


def _recorded_state(run: RunDir) -> dict:
    """The run's state as far as storage answers at one try ("unknown" when it does not)."""
    try:
        with storage.one_try():
            return run.state()
    except Exception:  # noqa: BLE001 - storage may be what failed; the run's fault comes first
        return {"state": "unknown"}


def fail_cleanly(run: RunDir, reason: str, on_failure=lambda: None) -> str:
    """Marks ``run`` failed with ``reason`` (unless it already is) and calls
    ``on_failure()``. A fault while doing so never replaces the reason: it is returned, as text
    to append to it ("" when none). Each storage call here makes one attempt
    (:func:`models.storage.one_try`): when storage is what failed, the reason comes out after
    one request timeout per call, not a whole deadline."""

    def mark():
        if run.state()["state"] != "failed":
            run.mark_failed(reason)

    handling = sys.exc_info()[1]  # the run's own fault, when called while handling it
    faults = []
    for step in (mark, on_failure):
        try:
            with storage.one_try():
                step()
        except Exception as error:  # noqa: BLE001 - reported after the run's own reason
            faults.append(runner_faults.reason_of(error, besides=handling))
    return f" (and cleaning up failed: {'; '.join(faults)})" if faults else ""


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
    root = OutputRoot(args.output)
    if args.clean:
        for run_id in root.clean_abandoned():
            print(f"marked {run_id} failed: {ABANDONED}; its temporary files removed")
    runs = root.list_runs()
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
