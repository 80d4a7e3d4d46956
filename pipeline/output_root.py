"""An output root and the runs in it: the one module that knows where each file goes.

    OUTPUT/
      _LEASE                 the --only-new lease: one such run at a time (``pipeline.lease``)
      runs/RUN_ID/           one caption run, a :class:`RunDir`
        captions-*.parquet   its shards, and failures-*.parquet
        summary.json         its record (counts, model, wall time), written before _SUCCESS
        _SUCCESS | _FAILED   committed | failed, ``{"reason": ..., "failed_at": ...}``
        _LEASE               its own lease record while it runs
        _progress/*.json     each worker's live counts (``transforms.progress``)
        metrics.json         ``beamcap evaluate``'s scores, report.html ``beamcap report``'s page
        beam-temp-*/         Beam's sinks' temporary files, removed at commit or failure

A run directory ends in exactly one of two states: committed (every output file, then the job's
record, then ``_SUCCESS`` last) or failed (``_FAILED`` with the reason; temporary files removed;
whatever was written stays for diagnosis, and every reader ignores it). A directory with
neither is still running, or died without a word: unless a live lease covers it, it is
abandoned, and ``beamcap runs --clean`` or the next run marks it failed. A features job's
``OUTPUT`` is a run directory too, with ``dataset.json`` as its record. Local paths and
``gs://`` alike, through ``models.storage``. When a run commits or fails, and who holds which
lease, is ``pipeline.lifecycle``'s to decide.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import posixpath
import re
import secrets
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from models import storage
from pipeline import lease
from transforms.caption_schema import CAPTIONS_SCHEMA, conform
from transforms.failures import FAILURE_SCHEMA

RUNS, SUMMARY, LEASE, PROGRESS = "runs", "summary.json", "_LEASE", "_progress"
METRICS, REPORT = "metrics.json", "report.html"  # written beside a run by evaluate and report
SUCCESS, FAILED = "_SUCCESS", "_FAILED"
TEMPORARY = "beam-temp-"  # the prefix of Beam's file sinks' temporary folders
ABANDONED = "abandoned"
STATES = ("committed", "failed", "unfinished")
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def new_run_id() -> str:
    """UTC time to the microsecond and a random suffix: ids sort by start time, a rerun within
    a second included, and two launches never collide."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S.%fZ-") + secrets.token_hex(3)


@dataclasses.dataclass(frozen=True)
class RunDir:
    """One run's directory: its files, its state, and the commit or failure that ends it."""

    path: str

    @property
    def run_id(self) -> str:
        return posixpath.basename(self.path.rstrip("/"))

    def file(self, name: str) -> str:
        return storage.join(self.path, name)

    def shard_pattern(self, stem: str) -> str:
        return self.file(f"{stem}-*.parquet")

    @property
    def progress_dir(self) -> str:
        return self.file(PROGRESS)

    @property
    def lease_file(self) -> str:
        return self.file(LEASE)

    def holds_files(self) -> bool:
        return bool(storage.entries(self.path))

    def state(self) -> dict:
        """``{"state": "committed"}``, ``{"state": "failed", "reason": ...}`` or
        ``{"state": "unfinished"}``."""
        if storage.exists(self.file(SUCCESS)):
            return {"state": "committed"}
        if storage.exists(self.file(FAILED)):
            return {"state": "failed", **json.loads(storage.read_text(self.file(FAILED)))}
        return {"state": "unfinished"}

    def remove_temporary_files(self) -> None:
        """Deletes the ``beam-temp-*`` folders Beam's file sinks leave behind."""
        for name in storage.entries(self.path):
            if name.startswith(TEMPORARY):
                storage.remove_tree(self.file(name))

    def write_failed(self, reason: str) -> None:
        """``_FAILED`` with a one-line ``reason``, its temporary files removed first. The run's
        failure is ``pipeline.lifecycle.RunLifecycle.fail``'s to decide: call that."""
        self.remove_temporary_files()
        record = {
            "reason": reason,
            "failed_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        }
        storage.write_text(self.file(FAILED), json.dumps(record, indent=2))

    def write_record(self, name: str, record: dict) -> None:
        """The job's record (``summary.json``, ``dataset.json``), written before ``_SUCCESS``."""
        storage.write_text(self.file(name), json.dumps(record, indent=2))

    def write_success(self) -> None:
        """``_SUCCESS``, last: ``pipeline.lifecycle.RunLifecycle.commit`` decides when."""
        storage.write_text(self.file(SUCCESS), "")

    def record(self, name: str) -> dict:
        return json.loads(storage.read_text(self.file(name)))

    def table(self, stem: str, schema: pa.Schema) -> pa.Table:
        """The run's ``STEM-*.parquet`` shards as one table of ``schema``."""
        tables = [
            conform(pq.read_table(pa.BufferReader(storage.read_bytes(path))), schema)
            for path in storage.glob(self.shard_pattern(stem))
        ]
        return pa.concat_tables(tables) if tables else schema.empty_table()

    def read(self) -> tuple[pa.Table, pa.Table, dict]:
        """(captions, failures, summary) of a committed run; an uncommitted one is an error."""
        if self.state()["state"] != "committed":
            raise FileNotFoundError(f"{self.path} is not a committed run (no {SUCCESS})")
        return (
            self.table("captions", CAPTIONS_SCHEMA),
            self.table("failures", FAILURE_SCHEMA),
            self.record(SUMMARY),
        )


@dataclasses.dataclass(frozen=True)
class OutputRoot:
    """A caption job's ``--output``: its runs, their leases, and what they captioned."""

    path: str

    @property
    def lease_file(self) -> str:
        return storage.join(self.path, LEASE)

    def run(self, run_id: str) -> RunDir:
        return RunDir(storage.join(self.path, RUNS, run_id))

    def committed_runs(self) -> list[RunDir]:
        """The committed runs, oldest first (ids sort by time)."""
        markers = storage.glob(storage.join(self.path, RUNS, "*", SUCCESS))
        return [RunDir(path) for path in sorted(posixpath.dirname(m) for m in markers)]

    def done_files(self, *, retry_failures: bool) -> list[str]:
        """Parquet patterns of the committed runs whose images ``--only-new`` skips."""
        stems = ("captions",) if retry_failures else ("captions", "failures")
        return [run.shard_pattern(stem) for run in self.committed_runs() for stem in stems]

    def captions_files(self) -> list[str]:
        """Parquet patterns of the committed runs' captions, whose contents a run reuses."""
        return [run.shard_pattern("captions") for run in self.committed_runs()]

    def read_captions(self) -> pa.Table:
        """Every committed run's captions as one table: the latest caption (``captioned_at``)
        of each image by each model, so an image captioned again after it changed, or by a
        second model, appears once per model. Filter on ``model_id`` for one model's."""
        tables = [run.table("captions", CAPTIONS_SCHEMA) for run in self.committed_runs()]
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
        rows = joined.group_by(group).aggregate([("_row", "max")])["_row_max"]  # ties: later row
        return every.take(rows).sort_by([("image_uri", "ascending"), ("model_id", "ascending")])

    def acquire_lease(self, held: lease.Lease) -> None:
        """Takes the output's lease for ``held`` (:func:`pipeline.lease.acquire`)."""

        lease.acquire(self.lease_file, held, state_of=self._state_of, label=self.path)

    def _state_of(self, run_id: str) -> str:
        return self.run(run_id).state()["state"]

    def lease_holder(self) -> lease.Lease | None:
        """The output's lease, stale or not; None when there is none."""
        return lease.read(self.lease_file)

    def write_run_lease(self, held: lease.Lease) -> None:
        lease.write(self.run(held.run_id).lease_file, held)

    def live_lease(self, run_id: str) -> lease.Lease | None:
        """The lease that still protects an unfinished run (its own record, or the output's
        lease naming it), or None: then the run is abandoned."""
        for found in (lease.read(self.run(run_id).lease_file), self.lease_holder()):
            if found and found.run_id == run_id and not lease.stale_reason(found, self._state_of):
                return found
        return None

    def release(self, run_id: str) -> None:
        """Removes the run's own lease record and, if it still names this run, the output's
        lease (what a run's commit or failure calls; harmless twice)."""
        storage.remove(self.run(run_id).lease_file)
        lease.release(self.lease_file, run_id)

    def _files_by_run(self) -> dict[str, list[tuple[str, float]]]:
        """Run id -> (path, update time) of every file under ``runs/RUN_ID/``, at any depth (a
        killed run may hold nothing but Beam's ``beam-temp-*`` folders)."""
        root = storage.join(self.path, RUNS)
        files: dict[str, list] = {}
        for path, updated in storage.files_under(root):
            run_id, _, inside = path[len(root) :].lstrip("/").partition("/")
            if inside:  # a stray file beside the runs (.DS_Store, a folder placeholder) is none
                files.setdefault(run_id, []).append((path, updated))
        return files

    def list_runs(self, *, details: bool = True) -> list[dict]:
        """Every run, oldest first: its state (committed, failed with the reason, or
        unfinished) and, for a committed one, its summary; for an unfinished one its age in
        seconds (since its lease began, else since its oldest file) and ``lease``, the live
        lease that covers it or None (then the run is abandoned). Without ``details``,
        finished runs cost no request beyond the one listing."""
        runs, now = [], time.time()
        for run_id, files in sorted(self._files_by_run().items()):
            run = self.run(run_id)
            names = {path[len(run.path) :].lstrip("/") for path, _ in files}
            finished = names & {SUCCESS, FAILED}
            if details or not finished:
                state = run.state()
            else:
                state = {"state": "committed" if SUCCESS in finished else "failed"}
            if state["state"] == "committed" and details:
                state.update(run.record(SUMMARY))
            elif state["state"] == "unfinished":
                covering = self.live_lease(run_id)
                since = min(updated for _, updated in files)
                if covering:
                    since = datetime.datetime.fromisoformat(covering.started_at).timestamp()
                state["age_seconds"] = round(now - since)
                state["lease"] = dataclasses.asdict(covering) if covering else None
            runs.append({"run_id": run_id, **state, "run_dir": run.path})
        return runs

    def abandoned_runs(self) -> list[str]:
        """The ids of the unfinished runs that no live lease covers (their launchers died):
        ``pipeline.lifecycle.clean_abandoned`` marks them failed."""
        return [
            run["run_id"]
            for run in self.list_runs(details=False)
            if run["state"] == "unfinished" and run["lease"] is None
        ]
