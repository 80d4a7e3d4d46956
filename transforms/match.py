"""Find the input images: glob patterns or directories, local or ``gs://``; WebDataset's brace
notation (``shards/{00000..00099}.tar``, ``{a,b}``) names several.

Local patterns go through Beam's match (``fileio.MatchAll``). ``gs://`` patterns are listed
through ``models.storage`` with Beam's pattern rules (:func:`list_objects`), because Beam's
match drops what the listing says of each object's content: its CRC-32C, which lets the caption
job know an image's content before it reads it (``transforms.content``).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
from collections.abc import Callable

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import FileMetadata, FileSystem
from apache_beam.io.filesystems import FileSystems

from models import storage
from models.faults import SettingsError
from transforms import gcs
from transforms.shards import is_shard


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
    """``(uri, identity)`` of a listed local file; None where it cannot be looked up (it then
    fails at the read stage, as a failure of its own)."""
    try:
        return uri, identity(FileSystems.get_filesystem(uri).metadata(uri))
    except Exception:  # noqa: BLE001 - missing, forbidden, ...: the read stage reports it
        return uri, None


@dataclasses.dataclass(frozen=True)
class Listed:
    """A ``gs://`` image's payload from the match: its identity (:func:`identity`) and the
    CRC-32C and size its listing gives, from which ``transforms.content`` knows its content
    before reading it."""

    identity: str
    crc32c: str
    size: int


def list_objects(pattern: str, must_match: bool) -> list[tuple[str, str | Listed]]:
    """``(uri, payload)`` of each object a ``gs://`` pattern matches, as Beam's match finds them
    (``FileSystem.match``): a pattern without a wildcard looked up as one object, any other
    listed from the part before its first wildcard and matched by ``translate_pattern`` (``*``
    and ``?`` stop at ``/``, ``**`` does not). With ``must_match``, matching nothing raises
    ``FileNotFoundError``."""
    prefix = re.match(r"^[^[*?]*", pattern)[0]
    if prefix == pattern:
        found = [each for each in [storage.stored_object(pattern)] if each]
    else:
        wanted = re.compile(FileSystem.translate_pattern(pattern)).match
        found = [each for each in storage.stored_objects(prefix) if wanted(each.uri)]
    if must_match and not found:
        raise FileNotFoundError(f"no such object: {pattern}")
    return [(each.uri, _payload(each)) for each in found]


def _payload(stored: storage.StoredObject) -> str | Listed:
    """A listed image's :class:`Listed`; a tar shard's identity alone (its checksum is the
    tar's, not an image's)."""
    known = identity(FileMetadata(stored.uri, stored.size, stored.updated))
    return known if is_shard(stored.uri) else Listed(known, stored.crc32c, stored.size)


class _UnderStoragePolicy(beam.DoFn):
    """A step that asks Cloud Storage through ``models.storage``, under the job's storage
    policy (``transforms.gcs.policy_of``: retries, credentials), set where the step runs."""

    def __init__(self, policy: Callable[[], None]):
        self.policy = policy

    def setup(self):
        self.policy()


class _ListObjects(_UnderStoragePolicy):
    """``gs://`` patterns -> :func:`list_objects`'s pairs."""

    def __init__(self, must_match: bool, policy: Callable[[], None]):
        super().__init__(policy)
        self.must_match = must_match

    def process(self, pattern: str):
        return list_objects(pattern, self.must_match)


class LookUpImages(beam.PTransform):
    """URIs (an ``--input-list``'s) -> ``(uri, payload)`` as :class:`MatchImages` gives them:
    a ``gs://`` image's :class:`Listed` from one request for its object; a file that cannot be
    looked up gets None (it then fails at the read stage, as a failure of its own)."""

    def __init__(self, uris: list[str]):
        super().__init__()
        self.uris = uris

    def expand(self, pipeline):
        return (
            pipeline
            | "ListImages" >> beam.Create(self.uris)
            | "LookUpIdentities" >> beam.ParDo(_LookUp(gcs.policy_of(pipeline.pipeline.options)))
        )


class _LookUp(_UnderStoragePolicy):
    """One URI -> ``(uri, payload)`` (:class:`LookUpImages`)."""

    def process(self, uri: str):
        if not storage.is_gcs(uri):
            yield with_identity(uri)
            return
        try:
            stored = storage.stored_object(uri)
        except Exception:  # noqa: BLE001 - forbidden, unavailable...: the read stage reports it
            stored = None
        yield uri, (_payload(stored) if stored else None)


class MatchImages(beam.PTransform):
    """patterns (braces expanded) -> PCollection of file URIs (sorted within each pattern,
    deduplicated); with ``identities``, of ``(uri, payload)`` pairs, the payload the file's
    identity, or a ``gs://`` image's :class:`Listed`. A file named without a wildcard that is
    not there fails the run, never a silent partial run; a glob or a folder may match
    nothing."""

    def __init__(self, patterns: list[str], *, identities: bool = False):
        super().__init__()
        patterns = [each for pattern in patterns for each in expand_braces(pattern)]
        self.files = [as_pattern(p) for p in patterns if _one_file(p)]
        self.globs = [as_pattern(p) for p in patterns if not _one_file(p)]
        self.identities = identities

    def expand(self, pipeline):
        policy = gcs.policy_of(pipeline.pipeline.options)
        matched = []
        for label, patterns, treatment in (
            ("Files", self.files, fileio.EmptyMatchTreatment.DISALLOW),  # one not there fails
            ("Globs", self.globs, fileio.EmptyMatchTreatment.ALLOW),
        ):
            local = [p for p in patterns if not storage.is_gcs(p)]
            listed = [p for p in patterns if storage.is_gcs(p)]
            if local:
                matched.append(
                    pipeline
                    | f"{label}Patterns" >> beam.Create(local)
                    | f"Match{label}" >> fileio.MatchAll(treatment)
                    | f"{label}Identities" >> beam.Map(lambda m: (m.path, identity(m)))
                )
            if listed:
                must_match = treatment == fileio.EmptyMatchTreatment.DISALLOW
                matched.append(
                    pipeline
                    | f"Listed{label}" >> beam.Create(listed)
                    | f"List{label}" >> beam.ParDo(_ListObjects(must_match, policy))
                )
        identities = self.identities
        return (
            matched
            | "AllMatched" >> beam.Flatten(pipeline=pipeline.pipeline)
            | "Paths" >> beam.Map(lambda pair: pair if identities else pair[0])
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
