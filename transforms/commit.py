"""Publish after write: :class:`CommitRun`, the last step of both Beam jobs, runs the job's
commit once every output file is written; and the Parquet sink a run's shards go through.
What a commit writes, and the states a run directory ends in, are ``pipeline.output_root``'s.
"""

from __future__ import annotations

from collections.abc import Callable

import apache_beam as beam

from transforms import gcs
from transforms.beam_internals import parquet_sink


class WriteRunParquet(beam.io.WriteToParquet):
    """``beam.io.WriteToParquet`` of a run's shards, ``PREFIX-SSSSS-of-NNNNN.parquet``; safe
    to finalize twice (:func:`transforms.beam_internals.parquet_sink.rerun_safe`)."""

    def __init__(self, file_path_prefix: str, schema, **kwargs):
        super().__init__(file_path_prefix, schema, file_name_suffix=".parquet", **kwargs)
        parquet_sink.rerun_safe(self)


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
        policy = gcs.policy_of(pbegin.pipeline.options)
        tally = (
            tuple(self.tallies)
            | "AllTallies" >> beam.Flatten()
            | "SumTallies" >> beam.CombinePerKey(sum)
        )
        files = tuple(self.files) | "AllFiles" >> beam.Flatten()
        commit = self.commit

        def configured_commit(tally, files, **side):
            policy()
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
