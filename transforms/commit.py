"""Publish after write: a job's outputs count once its commit marker exists, and a failed run
says why. Both Beam jobs end with :class:`CommitRun`.

A run directory ends in exactly one of two states:
  committed  every output file, then the job's record (``summary.json`` for a caption run,
             ``dataset.json`` for features), then ``_SUCCESS`` last;
  failed     ``_FAILED`` holds ``{"reason": ..., "failed_at": ...}``; temporary files removed,
             whatever was written stays for diagnosis, and every reader ignores it.
A directory with neither is still running, or died without a word (a killed launcher).
"""

from __future__ import annotations

import datetime
import glob
import json
import posixpath
import shutil
from collections.abc import Callable

import apache_beam as beam
from apache_beam.io import parquetio
from apache_beam.io.filesystems import FileSystems

from models import storage
from transforms import gcs

SUCCESS, FAILED = "_SUCCESS", "_FAILED"


class _RerunSafeParquetSink(parquetio._ParquetSink):
    """Beam's Parquet sink without ``pre_finalize``'s clean-up. That step deletes the shards
    already at the destination, which only an earlier attempt of the same run can have put
    there, since each run writes into a directory of its own. When a cluster re-runs the
    finalize of a sink that has already finalized (Flink restarts the failed region, e.g.
    after the commit's worker is killed), it would delete the renamed shards, whose temporary
    files are gone, and fail with "src and dst files do not exist". Without it, finalize
    finds them in place and skips them."""

    def pre_finalize(self, init_result, writer_results):
        return None


class WriteRunParquet(beam.io.WriteToParquet):
    """``beam.io.WriteToParquet`` of a run's shards, ``PREFIX-SSSSS-of-NNNNN.parquet``; safe
    to finalize twice (:class:`_RerunSafeParquetSink`)."""

    def __init__(self, file_path_prefix: str, schema, **kwargs):
        super().__init__(file_path_prefix, schema, file_name_suffix=".parquet", **kwargs)
        self._sink.__class__ = _RerunSafeParquetSink  # the same sink, one step changed


def remove_temporary_files(run_dir: str) -> None:
    """Deletes the ``beam-temp-*`` folders Beam's file sinks leave behind a failed run."""
    pattern = FileSystems.join(run_dir, "beam-temp-*")
    files = FileSystems.match([FileSystems.join(pattern, "*")])[0].metadata_list
    folders = {posixpath.dirname(m.path) for m in files}
    if storage.is_gcs(run_dir):
        FileSystems.delete([folder + "/" for folder in sorted(folders)])  # recursive
    else:
        for folder in folders | set(glob.glob(pattern)):  # empty folders match no file
            shutil.rmtree(folder, ignore_errors=True)


def mark_failed(run_dir: str, reason: str) -> None:
    """Marks ``run_dir`` failed with a one-line ``reason`` and removes Beam's temporary files."""
    remove_temporary_files(run_dir)
    record = {
        "reason": reason,
        "failed_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }
    storage.write_text(FileSystems.join(run_dir, FAILED), json.dumps(record, indent=2))


def run_state(run_dir: str) -> dict:
    """``{"state": "committed"}``, ``{"state": "failed", "reason": ...}`` or
    ``{"state": "unfinished"}``."""
    if storage.exists(FileSystems.join(run_dir, SUCCESS)):
        return {"state": "committed"}
    if storage.exists(FileSystems.join(run_dir, FAILED)):
        record = json.loads(storage.read_text(FileSystems.join(run_dir, FAILED)))
        return {"state": "failed", **record}
    return {"state": "unfinished"}


class CommitRun(beam.PTransform):
    """Runs ``commit(tally, files, **side_inputs)`` once, after every file in ``files`` is
    written; ``tally`` is a dict summed from the ``(key, n)`` pairs of ``tallies``. ``commit``
    writes the job's record and marker, or raises to fail the run (having marked it failed)."""

    def __init__(
        self,
        *,
        tallies: list,
        files: list,
        commit: Callable[..., object],
        side_inputs: dict | None = None,
    ):
        super().__init__()
        self.tallies, self.files, self.commit = tallies, files, commit
        self.extra_side_inputs = side_inputs or {}

    def expand(self, pbegin):
        options = pbegin.pipeline.options  # the job's storage policy, for every worker
        retries, no_auth = gcs.retries_of(options), gcs.no_auth(options)
        tally = (
            tuple(self.tallies)
            | "AllTallies" >> beam.Flatten()
            | "SumTallies" >> beam.CombinePerKey(sum)
        )
        files = tuple(self.files) | "AllFiles" >> beam.Flatten()
        commit = self.commit

        def configured_commit(tally, files, **side):
            storage.configure(retries, anonymous=no_auth)
            return commit(tally, files, **side)

        return (
            pbegin
            | "Once" >> beam.Create([None])
            | "Commit"
            >> beam.Map(
                lambda _, tally, files, **side: configured_commit(tally, files, **side),
                tally=beam.pvalue.AsDict(tally),
                files=beam.pvalue.AsList(files),
                **self.extra_side_inputs,
            )
        )
