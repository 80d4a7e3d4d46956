"""Tar shards as input: WebDataset's format (what img2dataset writes; LAION, DataComp and CC12M
ship that way). Each image member of a ``.tar`` is captioned as an image of its own.

A member's URI is ``SHARD_URI#MEMBER_NAME`` (``gs://b/shards/00007.tar#000070011.jpg``): the
shard's URI, ``#``, the member's path inside the tar as the tar names it. A URI is a member's
where it holds ``.tar#``; it splits at the first one. Its WebDataset key (``__key__``: the
member's path up to the first dot of its file name, ``webdataset.tariterators.base_plus_ext``)
goes into its captions row, so captions join back to the samples' other members.

Image members are the regular files whose last extension is an image format's (``.jpg``,
``.png``, ``.webp``, ``.heic``, ...); the rest of a sample (``.txt``, ``.json``, ``.cls``) is
not an image and is passed over. A shard is read as a stream, one member at a time, never whole
(Python's ``tarfile`` in stream mode over Beam's ``FileSystems``, as WebDataset itself reads
one: docs/performance.md has the measurement), on the worker that the shuffle before
:class:`ReadShards` handed it to, so shards spread across workers. A member that is not an
image fails at decode as any file does. A shard that cannot be read to its end (missing, not a
tar, truncated, damaged) is one failure of its own, at stage ``read``, under the shard's URI;
the members read whole before the fault are captioned.

``--only-new``: a member is done when an earlier run's row names it and its shard's identity
(``transforms.match.identity``) is unchanged; a failure under the shard's URI makes the whole
shard, as it is, done. :class:`ReadShards` still streams a shard with done members, and passes
them over without decoding them.
"""

from __future__ import annotations

import dataclasses
import io
import re
import tarfile

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms.failures import failure

SHARD_SUFFIX = ".tar"
MEMBER_SEPARATOR = "#"
IMAGE_EXTENSIONS = frozenset(
    {"jpg", "jpeg", "jpe", "png", "gif", "webp", "avif", "heic", "heif", "tif", "tiff", "bmp"}
    | {"ppm", "pgm", "pbm", "pnm"}
)
TALLY = "tally"  # ReadShards' tagged output: "matched" per member, "to_caption" per one to read
_KEY = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset.tariterators.base_plus_ext
_BLOCK = 512  # a tar block; a tar ends with zero blocks


def is_shard(uri: str) -> bool:
    return uri.lower().endswith(SHARD_SUFFIX)


def member_uri(shard: str, name: str) -> str:
    return f"{shard}{MEMBER_SEPARATOR}{name}"


def split_member_uri(uri: str) -> tuple[str, str] | None:
    """``(shard URI, member name)`` of a member's URI; None for any other URI."""
    at = uri.lower().find(SHARD_SUFFIX + MEMBER_SEPARATOR)
    if at < 0:
        return None
    end = at + len(SHARD_SUFFIX)
    return uri[:end], uri[end + len(MEMBER_SEPARATOR) :]


def webdataset_key(name: str) -> str | None:
    """A member name's WebDataset key (``a/000012.seg.png`` -> ``a/000012``), as WebDataset
    groups a sample's members; None for a name without an extension."""
    match = _KEY.match(name)
    return match[1] if match else None


def member_key(uri: str) -> str | None:
    """The WebDataset key of a member's URI; None for a plain file's."""
    member = split_member_uri(uri)
    return webdataset_key(member[1]) if member else None


def is_image_member(name: str) -> bool:
    return "." in name.rsplit("/", 1)[-1] and name.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS


class DamagedShard(OSError):
    """A shard that cannot be read to its end: missing, not a tar, truncated or damaged."""


@dataclasses.dataclass(frozen=True)
class ShardTask:
    """A shard to read, as ``--only-new`` leaves it: its identity when matched, the members
    earlier runs covered, and whether an earlier failure of the shard itself covers it all."""

    identity: str | None
    done: frozenset[str] = frozenset()
    all_done: bool = False


class _Tail(io.RawIOBase):
    """A stream handed on as read, keeping its position and its last ``keep`` bytes: where the
    tar reader stopped, what it stopped on."""

    def __init__(self, raw, keep: int):
        super().__init__()
        self.raw, self.keep = raw, keep
        self.position, self.tail = 0, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.raw.read(len(buffer))
        buffer[: len(data)] = data
        self.position += len(data)
        self.tail = (self.tail + data)[-self.keep :]
        return len(data)

    def block_at(self, offset: int) -> bytes:
        """The ``_BLOCK`` bytes from ``offset``, when they are at most ``keep`` bytes back."""
        missing = offset + _BLOCK - self.position
        if missing > 0:
            self.read(missing)
        start = offset - (self.position - len(self.tail))
        return self.tail[start : start + _BLOCK] if start >= 0 else b""


def read_members(handle):
    """``(name, bytes)`` of each image member of an open tar stream, in order, one at a time.
    Raises :class:`DamagedShard` where the stream ends before tar's end-of-archive block or
    holds something else there (``tarfile`` alone would end quietly on either: members lost).
    """
    stream = _Tail(handle, keep=4 * tarfile.RECORDSIZE)
    read, last = 0, None
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for info in tar:
                if info.isfile() and is_image_member(info.name):
                    data = tar.extractfile(info).read()
                    read, last = read + 1, info.name
                    yield info.name, data
                tar.members = []  # stream mode keeps every header otherwise (as WebDataset does)
            end = tar.offset
        block = stream.block_at(end)
        if block != bytes(_BLOCK):
            raise tarfile.ReadError(
                "it ends before tar's end-of-archive block"
                if len(block) < _BLOCK
                else "what follows a member is neither a member nor the end of the archive"
            )
    except (tarfile.TarError, EOFError) as error:
        after = f"after {read} image members (the last read whole: {last})" if read else "at once"
        raise DamagedShard(f"a truncated or damaged tar shard: {error}, {after}") from None


class ReadShards(beam.DoFn):
    """``(uri, payload)`` -> ``(member_uri, shard identity, bytes)`` for each image member of a
    shard to caption, other elements handed on as they are; tagged outputs ``FAILURES`` (a
    shard that cannot be read to its end) and ``TALLY``. ``payload``: the shard's identity,
    or a :class:`ShardTask` (``SkipAlreadyDone``'s)."""

    def __init__(self):
        self.members = Metrics.counter(self.__class__, "shard_members_read")
        self.damaged = Metrics.counter(self.__class__, "shards_damaged")

    def process(self, element):
        uri, payload = element
        if not is_shard(uri):
            yield element
            return
        task = payload if isinstance(payload, ShardTask) else ShardTask(payload)
        if task.all_done:
            yield pvalue.TaggedOutput(TALLY, "matched")  # and skipped, as one
            return
        try:
            with FileSystems.open(uri) as handle:
                for name, data in read_members(handle):
                    self.members.inc()
                    yield pvalue.TaggedOutput(TALLY, "matched")
                    if name not in task.done:
                        yield pvalue.TaggedOutput(TALLY, "to_caption")
                        yield member_uri(uri, name), task.identity, data
        except Exception as error:  # noqa: BLE001 - any I/O or format error: the shard's failure
            self.damaged.inc()
            yield pvalue.TaggedOutput(TALLY, "matched")  # the failure stands for the rest
            yield pvalue.TaggedOutput(TALLY, "to_caption")
            yield failure(uri, "read", error)
