"""Find the input images: glob patterns or directories, local or ``gs://``."""

from __future__ import annotations

import os

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems


def as_pattern(path: str) -> str:
    """A directory (local, or any path ending in ``/``) becomes ``DIR/**``, matched recursively;
    anything else is used as a glob or a single file."""
    if path.endswith("/") or (not path.startswith("gs://") and os.path.isdir(path)):
        return FileSystems.join(path.rstrip("/"), "**")
    return path


class MatchImages(beam.PTransform):
    """patterns -> PCollection of file URIs (sorted within each pattern, deduplicated)."""

    def __init__(self, patterns: list[str]):
        super().__init__()
        self.patterns = [as_pattern(p) for p in patterns]

    def expand(self, pipeline):
        return (
            pipeline
            | "Patterns" >> beam.Create(self.patterns)
            | "Match" >> fileio.MatchAll()
            | "Paths" >> beam.Map(lambda metadata: metadata.path)
            | "Dedupe" >> beam.Distinct()
        )
