"""Find the input images: glob patterns or directories, local or ``gs://``; WebDataset's brace
notation (``shards/{00000..00099}.tar``, ``{a,b}``) names several."""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems

from models import storage
from models.faults import SettingsError
from transforms import gcs  # noqa: F401 - a worker's gs:// reads take beamcap's policy


def as_pattern(path: str) -> str:
    """A directory (local, or any path ending in ``/``) becomes ``DIR/**``, matched recursively;
    a local file is taken literally, even where its name holds ``[``, ``?`` or ``*`` (as a
    shell's expansion passes it); anything else is used as a glob or a single file."""
    local = not path.startswith("gs://")
    if local and os.path.isdir(path):
        return FileSystems.join(glob.escape(path.rstrip("/")), "**")
    if path.endswith("/"):
        return FileSystems.join(path.rstrip("/"), "**")
    if local and os.path.isfile(path):
        return glob.escape(path)
    return path


_BRACES = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"(-?\d+)\.\.(-?\d+)")


def expand_braces(pattern: str) -> list[str]:
    """WebDataset's (and the shell's) braces, left to right: ``{00000..00002}`` -> 00000,
    00001, 00002 (zero-padded to the first bound's width); ``{a,b}`` -> a, b. A local file
    that exists is taken as it is named, braces and all."""
    if not pattern.startswith("gs://") and os.path.exists(pattern):
        return [pattern]
    found = _BRACES.search(pattern)
    if not found:
        return [pattern]
    head, body, tail = pattern[: found.start()], found[1], pattern[found.end() :]
    numbers = _RANGE.fullmatch(body)
    if numbers:
        first, last = int(numbers[1]), int(numbers[2])
        step = 1 if last >= first else -1
        width = len(numbers[1].lstrip("-"))
        choices = [f"{n:0{width}d}" for n in range(first, last + step, step)]
    elif "," in body:
        choices = body.split(",")
    else:
        return [head + "{" + body + "}" + item for item in expand_braces(tail)]
    return [item for choice in choices for item in expand_braces(head + choice + tail)]


def split_inputs(text: str) -> list[str]:
    """``--input``'s comma-separated values, commas inside braces kept (``{a,b}``)."""
    parts, depth, start = [], 0, 0
    for at, char in enumerate(text):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if char == "," and depth <= 0:
            parts.append(text[start:at])
            start = at + 1
    return [*parts, text[start:]]


def has_wildcard(path: str) -> bool:
    return any(char in path for char in "*?[")


def _one_file(path: str) -> bool:
    """A path that names one file: a local file (whatever its name holds), or no wildcard, no
    directory."""
    if not path.startswith("gs://") and os.path.exists(path):
        return os.path.isfile(path)
    return not path.endswith("/") and not has_wildcard(path)


def identity(metadata) -> str:
    """What a file was when it was matched: ``SIZE:UPDATED`` (bytes, and the modification time
    locally or the object's update time on ``gs://`` in integer microseconds). A file rewritten
    in place gets a new identity."""
    return f"{metadata.size_in_bytes}:{round(metadata.last_updated_in_seconds * 1e6)}"


def updated_micros(image_identity: str) -> int:
    return int(image_identity.rsplit(":", 1)[1])


def with_identity(uri: str) -> tuple[str, str | None]:
    """``(uri, identity)`` of a listed file; None where it cannot be looked up (it then fails
    at the read stage, as a failure of its own)."""
    try:
        return uri, identity(FileSystems.get_filesystem(uri).metadata(uri))
    except Exception:  # noqa: BLE001 - missing, forbidden, ...: the read stage reports it
        return uri, None


class MatchImages(beam.PTransform):
    """patterns (braces expanded) -> PCollection of file URIs (sorted within each pattern,
    deduplicated); with ``identities``, of ``(uri, identity)`` pairs. A file named without a
    wildcard that is not there fails the run, never a silent partial run; a glob or a folder
    may match nothing."""

    def __init__(self, patterns: list[str], *, identities: bool = False):
        super().__init__()
        patterns = [each for pattern in patterns for each in expand_braces(pattern)]
        self.files = [as_pattern(p) for p in patterns if _one_file(p)]
        self.globs = [as_pattern(p) for p in patterns if not _one_file(p)]
        self.identities = identities

    def expand(self, pipeline):
        identities = self.identities
        matched = [
            pipeline
            | f"{label}Patterns" >> beam.Create(patterns)
            | f"Match{label}" >> fileio.MatchAll(treatment)
            for label, patterns, treatment in (
                ("Files", self.files, fileio.EmptyMatchTreatment.DISALLOW),  # one not there fails
                ("Globs", self.globs, fileio.EmptyMatchTreatment.ALLOW),
            )
            if patterns
        ]
        return (
            matched
            | "AllMatched" >> beam.Flatten(pipeline=pipeline.pipeline)
            | "Paths" >> beam.Map(lambda m: (m.path, identity(m)) if identities else m.path)
            | "Dedupe" >> beam.Distinct()
        )


class ReadEachMatched(beam.PTransform):
    """Patterns -> the items ``read(readable_file, *args)`` gives for each file they match
    (Beam's ``fileio``); no patterns, or none matching: an empty PCollection. Applied to a
    pipeline: what the jobs read of earlier runs' files."""

    def __init__(self, patterns: list[str], read: Callable, *args):
        super().__init__()
        self.patterns, self.read, self.args = list(patterns), read, args

    def expand(self, pbegin):
        if not self.patterns:
            return pbegin | "NoFiles" >> beam.Create([])
        return (
            pbegin
            | "Patterns" >> beam.Create(self.patterns)
            | "Match" >> fileio.MatchAll(fileio.EmptyMatchTreatment.ALLOW)
            | "Open" >> fileio.ReadMatches()
            | "Read" >> beam.FlatMap(self.read, *self.args)
        )


def read_input_list(uri: str) -> list[str]:
    """The URIs an ``--input-list`` file names, one a line; blank lines and ``#`` comments
    are passed over."""
    try:
        text = storage.read_text(uri)
    except FileNotFoundError:
        raise SettingsError(f"--input-list: {uri} does not exist") from None
    lines = [line.strip() for line in text.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]
