"""A run's life in one place, the only door for every job (caption and features): its leases
taken, abandoned runs marked failed, the graph run, the commit made exactly once, a failure
marked with its first reason, the leases released. Where each file goes is
``pipeline.output_root``'s; when it is written is decided here.

    life = RunLifecycle.of(root, run_id, exclusive=True, lease_minutes=720)  # a caption run
    life = RunLifecycle(RunDir(output))                   # a features run: no leases
    with life.leased(pid=os.getpid()):                   # OutputBusy before anything is held
        ...build the graph; its CommitRun step calls life.commit(RECORD, make_record)
        result = life.run(pipeline)                      # RunFailed, the run marked failed
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator

from apache_beam.options.pipeline_options import PortableOptions
from apache_beam.runners.runner import PipelineState

from models import storage
from models.faults import RunFailed, RunFault
from pipeline import cluster_health, lease, runner_faults
from pipeline.output_root import ABANDONED, OutputRoot, RunDir


@dataclasses.dataclass(frozen=True)
class RunLifecycle:
    """One run, from its leases to its commit or failure. Small and picklable: the commit step
    carries it to the worker that commits."""

    run_dir: RunDir
    root: OutputRoot | None = None  # the output holding the run and its leases (None: features)
    exclusive: bool = False  # holds the output's lease too (--only-new): one such run at a time
    lease_minutes: int = lease.DEFAULT_MINUTES

    @classmethod
    def of(cls, root: OutputRoot, run_id: str, **kwargs) -> RunLifecycle:
        return cls(root.run(run_id), root, **kwargs)

    @contextlib.contextmanager
    def leased(self, *, pid: int | None) -> Iterator[RunLifecycle]:
        """Takes the run's leases (the output's first, when ``exclusive``: :class:`OutputBusy`
        before anything is held; ``pid`` None when a remote runner runs the job) and marks the
        abandoned runs failed; a fault inside, before the run fails, releases them."""
        if self.root is None:
            yield self
            return
        held = lease.new_lease(self.run_dir.run_id, self.lease_minutes, pid=pid)
        if self.exclusive:
            self.root.acquire_lease(held)
        try:
            self.root.write_run_lease(held)
            for abandoned in clean_abandoned(self.root):
                logging.warning("marked %s failed: abandoned (no commit, no live lease)", abandoned)
            yield self
        except RunFailed:
            raise  # failed by run(), leases released there
        except BaseException:
            self.release()
            raise

    def run(self, pipeline, *, wait: bool = True):
        """Runs ``pipeline``, whose last step commits this run (:meth:`commit`); returns Beam's
        result. On any fault the run fails with its first reason and :class:`RunFailed` is
        raised. On a cluster, its worker pool is probed first and the cluster watched while the
        job runs (``pipeline.cluster_health``). With ``wait=False`` it returns once submitted
        (the runner's job then commits or fails the run; one that never ran, a ``--dry_run``,
        has its leases released)."""
        cluster = cluster_health.cluster_of(pipeline.options)
        watch, submitted = None, time.time()
        try:
            cluster_health.before_run(cluster)
            result = pipeline.run()
            if not wait:
                return self._submitted(result)
            endpoint = pipeline.options.view_as(PortableOptions).job_endpoint
            with cluster_health.watching(cluster, result, since=submitted) as watch:
                state = runner_faults.wait_until_finish(result, endpoint)
            if state not in (None, PipelineState.DONE):
                raise RunFailed(f"the pipeline ended in state {state}")
        except Exception as error:  # noqa: BLE001 - every fault ends the run as failed
            reason = self._first_reason(error, watch and watch.fault, cluster)
            raise RunFailed(reason + self.fail(reason, handling=error)) from error
        return result

    def _submitted(self, result):
        never_ran = PipelineState.is_terminal(result.state)
        if never_ran and self.run_dir.state()["state"] == "unfinished":
            self.release()  # it never ran: nothing will commit or fail it
        return result

    def _first_reason(self, error: Exception, watched: str | None, cluster) -> str:
        """The job's own recorded reason, else the cluster watch's, else the error's."""
        try:
            with storage.one_try():
                recorded = self.run_dir.state()
        except Exception:  # noqa: BLE001 - storage may be what failed; the run's fault comes first
            recorded = {"state": "unknown"}
        if recorded["state"] == "failed":
            return recorded["reason"]
        return watched or runner_faults.reason_of(error, cluster)

    def commit(self, record_name: str, make_record: Callable[[], dict], *, before_success=None):
        """Commits the run exactly once and returns its record: ``make_record()`` (the job's
        commit rule; a :class:`RunFault` it raises fails the run), written as ``record_name``;
        ``before_success(run_path)`` (a test's hold); then ``_SUCCESS``, and the leases
        released. A runner may run the commit again (Flink restarts a failed region): a run
        already committed returns its record, one already failed raises its first reason."""
        earlier = self._earlier_outcome(record_name)
        if earlier is not None:
            return earlier
        try:
            record = make_record()
        except RunFault as fault:
            self.fail(str(fault))
            raise
        self.run_dir.remove_temporary_files()  # a restarted writer's empty beam-temp-* folders
        self.run_dir.write_record(record_name, record)
        if before_success is not None:
            before_success(self.run_dir.path)
        self._raise_if_failed()  # its launcher gave up on it meanwhile
        self.run_dir.write_success()
        self.release()
        return record

    def _earlier_outcome(self, record_name: str) -> dict | None:
        """An earlier attempt's committed record; None to go on. A failed run, or an exclusive
        one whose output lease was taken over, raises :class:`RunFault`."""
        if self._raise_if_failed() == "committed":
            return self.run_dir.record(record_name)
        if self.exclusive and not self._holds_output_lease():
            reason = (
                f"this run's lease on {self.root.path} was taken over before it could commit "
                f"(it ran longer than --lease-minutes {self.lease_minutes}); nothing of it "
                "counts as done"
            )
            self.fail(reason)
            raise RunFault(reason)
        return None

    def _holds_output_lease(self) -> bool:
        held = self.root.lease_holder()
        return held is not None and held.run_id == self.run_dir.run_id

    def _raise_if_failed(self) -> str:
        state = self.run_dir.state()
        if state["state"] == "failed":
            raise RunFault(state["reason"])
        return state["state"]

    def fail(self, reason: str, *, handling: BaseException | None = None) -> str:
        """Fails the run: ``_FAILED`` with ``reason`` unless it failed already (the first
        reason stays), its temporary files removed, its leases released. With ``handling``
        (the run's own fault): each storage call makes one try (when storage is what failed,
        the reason comes out after one request timeout per call, not a whole deadline), and a
        fault meanwhile is returned as text to append to the reason ("" when none)."""
        steps = (lambda: self._mark_failed(reason), self.release)
        if handling is None:
            for step in steps:
                step()
            return ""
        faults = []
        for step in steps:
            try:
                with storage.one_try():
                    step()
            except Exception as error:  # noqa: BLE001 - reported after the run's own reason
                faults.append(runner_faults.reason_of(error, besides=handling))
        return f" (and cleaning up failed: {'; '.join(faults)})" if faults else ""

    def _mark_failed(self, reason: str) -> None:
        if self.run_dir.state()["state"] != "failed":
            self.run_dir.write_failed(reason)

    def release(self) -> None:
        """Releases the run's leases (harmless twice; none for a run outside an output)."""
        if self.root is not None:
            self.root.release(self.run_dir.run_id)


def clean_abandoned(root: OutputRoot) -> list[str]:
    """Marks every run under ``root`` that is unfinished with no live lease failed
    ("abandoned"), removing its temporary files; returns their run ids."""
    abandoned = root.abandoned_runs()
    for run_id in abandoned:
        RunLifecycle.of(root, run_id).fail(ABANDONED)
    return abandoned
