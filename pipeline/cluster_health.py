"""The cluster a portable job runs on, checked before a run and watched while it runs, so that a
fault the runner cannot recover from fails the run in one line instead of a Java trace or a
hang (docs/reliability.md).

Before the job is submitted:
  * Flink's task slots, from its REST API (``--flink_master``, else port 8081 of the
    ``--job_endpoint`` host): a parallelism above the cluster's slots is refused at once (exit
    2); above the free slots, the run says that it waits for them.
  * The SDK worker pool (``--environment_type EXTERNAL``), when it runs on this machine (a
    pool address on localhost is the TaskManager's own, so only a local cluster's is this
    machine's): asked to start a worker that connects back here, then to stop it. A pool that
    refuses connections, does not answer, or whose worker does not connect within
    ``--cluster_timeout`` fails the run naming it.

While it runs, a thread asks every few seconds: Flink's task slots, and the local pool. When
either stays short for ``--cluster_timeout`` seconds, the job is cancelled and the run fails
with that one line. Beam's own factories would wait for a worker without a bound (Beam #20973),
and Flink for slots up to ``slot.request.timeout`` per restart.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import logging
import re
import threading
import time
import urllib.parse
import urllib.request

from apache_beam.options.pipeline_options import (
    FlinkRunnerOptions,
    PipelineOptions,
    PortableOptions,
    StandardOptions,
)

from models.faults import ClusterUnavailable, SettingsError
from transforms.beam_internals import portable

DEFAULT_TIMEOUT = 120  # seconds
POLL_SECONDS = 5
FLINK_REST_PORT = 8081
FLINK_ENDED = ("FINISHED", "FAILED", "CANCELED")
_UNREADABLE = (OSError, ValueError, KeyError, http.client.HTTPException)
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")


class ClusterOptions(PipelineOptions):
    """beamcap's one cluster flag, declared with Beam's own so that presets' ``beam`` sections
    and the command line take it alike."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--cluster_timeout",
            type=float,
            default=DEFAULT_TIMEOUT,
            help="seconds a portable run (Flink, Spark) waits for the cluster: a worker from the "
            "SDK worker pool, or task slots after a TaskManager is lost; past it the run fails "
            "in one line naming what is missing (0: wait as long as the runner does)",
        )


@dataclasses.dataclass(frozen=True)
class Cluster:
    flink_rest: str | None  # http://host:port of Flink's REST API
    pool: str | None  # host:port of an SDK worker pool on this machine
    parallelism: int
    timeout: float


def _host(address: str) -> str:
    return address.rsplit(":", 1)[0] if ":" in address else address


def cluster_of(options: PipelineOptions) -> Cluster | None:
    """The parts of the cluster that ``options`` run on and that this machine can ask; None for
    runners that have none (Direct, Prism, Dataflow)."""
    runner = (options.view_as(StandardOptions).runner or "").split(".")[-1]
    if runner not in ("FlinkRunner", "SparkRunner", "PortableRunner"):
        return None
    portable = options.view_as(PortableOptions)
    endpoint = portable.job_endpoint or ""
    rest = None
    if runner == "FlinkRunner":
        master = options.view_as(FlinkRunnerOptions).flink_master
        if master and not master.startswith("["):  # [auto], [local]: no cluster of its own
            rest = master if "://" in master else f"http://{master}"
        elif endpoint:
            rest = f"http://{_host(endpoint)}:{FLINK_REST_PORT}"
    pool = None
    if (portable.environment_type or "").upper() == "EXTERNAL" and portable.environment_config:
        address = portable.environment_config
        here = [_host(address), _host(endpoint)] + (
            [_where(rest).rsplit(":", 1)[0]] if rest else []
        )
        if all(host in _LOCAL_HOSTS for host in here):  # the whole cluster on this machine
            pool = address
    parallelism = max(options.view_as(FlinkRunnerOptions).parallelism or 1, 1)
    timeout = options.view_as(ClusterOptions).cluster_timeout
    return Cluster(rest, pool, parallelism, timeout)


_JAVA_CLASS = re.compile(r"(?:[a-z][\w$]*\.)+[A-Z][\w$]*(?:Exception|Error)\b:?\s*")
_LOST_WORKER = ("call already cancelled",)
_PIPELINE_FAILED = re.compile(r"^RuntimeError: Pipeline \S+ failed in state FAILED: ")


def in_words(cluster: Cluster | None, reason: str) -> str:
    """A runner's failure, as a Java job server words it, in one line without Java class
    names: a lost SDK worker is named as such; anything else keeps its own words."""
    if cluster is None or not _JAVA_CLASS.search(reason):
        return reason
    if any(sign in reason for sign in _LOST_WORKER):
        pool = f" of the pool at {cluster.pool}" if cluster.pool else ""
        return (
            f"an SDK worker{pool} was lost mid-run and the runner's retries of its tasks failed "
            "too; nothing was committed: run again (--only-new takes up what is left)"
        )
    return "the runner failed the job: " + _JAVA_CLASS.sub("", _PIPELINE_FAILED.sub("", reason))


def _flink_overview(rest: str) -> dict:
    with urllib.request.urlopen(f"{rest}/overview", timeout=5) as answer:
        return json.load(answer)


def _where(rest: str) -> str:
    return urllib.parse.urlparse(rest).netloc


def check_slots(cluster: Cluster | None) -> None:
    """Refuses a Flink job that can never get its slots; says so when it has to wait for them.
    A REST API that cannot be reached is logged and not checked."""
    if cluster is None or cluster.flink_rest is None:
        return
    try:
        found = _flink_overview(cluster.flink_rest)
        total, free = found["slots-total"], found["slots-available"]
    except _UNREADABLE as error:
        logging.warning(
            "cannot read Flink's task slots at %s (%s): not checked; --flink_master names it",
            cluster.flink_rest,
            error,
        )
        return
    need = cluster.parallelism
    where = _where(cluster.flink_rest)
    if need > total:
        raise SettingsError(
            f"parallelism {need} > {total} task slots at {where}: pass --parallelism "
            f"{max(total, 1)} or add TaskManagers"
        )
    if need > free:
        logging.warning(
            "parallelism %d > %d free task slots at %s (of %d): the job waits for other jobs "
            "to free them",
            need,
            free,
            where,
            total,
        )


def probe_pool(address: str, timeout: float) -> None:
    """Asks the pool at ``address`` for a worker that connects back to a control server here,
    then stops it; raises :class:`ClusterUnavailable` naming the pool when that fails."""
    fault = portable.probe_pool(address, timeout)
    if fault:
        raise ClusterUnavailable(fault)


def before_run(cluster: Cluster | None) -> None:
    """The checks that fail a run before anything is submitted: the local worker pool."""
    if cluster is not None and cluster.pool and cluster.timeout:
        probe_pool(cluster.pool, cluster.timeout)


class Watch:
    """While a job runs: asks the cluster every few seconds; once a part stays missing for the
    timeout, records why and cancels the job (``result.cancel()``). ``fault`` is the reason."""

    def __init__(self, cluster: Cluster, result, since: float):
        self.cluster, self.result, self.since, self.fault = cluster, result, since, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="beamcap-cluster-watch", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join(timeout=POLL_SECONDS + 6)

    def _missing(self) -> str | None:
        cluster = self.cluster
        if cluster.pool and not portable.pool_answers(cluster.pool):
            return f"the SDK worker pool at {cluster.pool} has not answered"
        if cluster.flink_rest:
            try:
                found = _flink_overview(cluster.flink_rest)
                short = found["slots-total"] < cluster.parallelism
            except _UNREADABLE:
                return None  # the REST API itself: the job server reports the job's end
            if short:
                return (
                    f"the Flink cluster at {_where(cluster.flink_rest)} has had "
                    f"{found['taskmanagers']} TaskManagers ({found['slots-total']} task slots, "
                    f"the job needs {cluster.parallelism})"
                )
        return None

    def _run(self) -> None:
        since = None
        while not self._stop.wait(POLL_SECONDS):
            missing = self._missing()
            if missing is None:
                since = None
                continue
            since = since or time.time()
            if time.time() - since >= self.cluster.timeout and not self._stop.is_set():
                self.fault = f"{missing} for {self.cluster.timeout:.0f} s: the job was cancelled"
                logging.error("%s", self.fault)
                self.cancel()
                return

    def cancel(self) -> None:
        """Cancels the job: on Flink through its REST API first, since Beam's job server
        cancels only its own wait for the job, which would run on once the cluster is back."""
        rest, job_id = self.cluster.flink_rest, portable.job_id(self.result)
        if rest and job_id:
            name = job_id.rsplit("_", 1)[0]  # Beam's invocation id: JOBNAME_UUID
            with contextlib.suppress(*_UNREADABLE):
                with urllib.request.urlopen(f"{rest}/jobs/overview", timeout=5) as answer:
                    jobs = json.load(answer)["jobs"]
                ours = [
                    job
                    for job in jobs
                    if job["name"] == name
                    and job["state"] not in FLINK_ENDED
                    and job["start-time"] / 1000 >= self.since - 1
                ]
                if len(ours) == 1:  # never a job that is not certainly this run's
                    url = f"{rest}/jobs/{ours[0]['jid']}?mode=cancel"
                    urllib.request.urlopen(urllib.request.Request(url, method="PATCH"), timeout=5)
        with contextlib.suppress(Exception):
            self.result.cancel()


def watching(cluster: Cluster | None, result, since: float):
    """A :class:`Watch` over ``result`` (submitted at ``since``) where there is a cluster to
    watch, else a no-op."""
    if cluster is None or not cluster.timeout or not (cluster.pool or cluster.flink_rest):
        return contextlib.nullcontext(None)
    return Watch(cluster, result, since)
