"""``beam.io.WriteToParquet`` whose finalize can run twice. Beam's file sink deletes, before it
renames a write's temporary files, the files already at their destination (``pre_finalize``),
which in a run's own directory only an earlier attempt of the same finalize can have put there.
When a cluster re-runs a finalize that has already renamed its files (Flink restarts the failed
region, e.g. after the commit's worker is killed), that deletes them, their temporary files
being gone, and fails with "src and dst files do not exist". Without it, the second finalize
finds them in place and skips them. Beam offers no option for it, so the transform's private
sink (``WriteToParquet._sink``, a ``parquetio._ParquetSink``) gets a subclass.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.io import parquetio


class _RerunSafeParquetSink(parquetio._ParquetSink):
    """Beam's Parquet sink without ``pre_finalize``'s clean-up."""

    def pre_finalize(self, init_result, writer_results):
        return None


def rerun_safe(write: beam.io.WriteToParquet) -> beam.io.WriteToParquet:
    """``write``, its sink changed in place to one that is safe to finalize twice."""
    write._sink.__class__ = _RerunSafeParquetSink  # the same sink, one step changed
    return write
