"""Byte-level file access for local paths and ``gs://`` URIs, without Apache Beam.

The model layer must work where Beam is not installed (a trainer, a notebook), so it talks to
Cloud Storage through ``google-cloud-storage`` directly, with an explicit :class:`Retries`
policy on every call (:func:`configure`). With ``$STORAGE_EMULATOR_HOST`` set, the client talks to
that server, anonymously.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import fcntl
import fnmatch
import functools
import glob as globlib
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from models.faults import StorageUnavailable

_GCS_CLIENT = None
EMULATOR_HOST = "STORAGE_EMULATOR_HOST"  # google-cloud-storage's own variable
GCS_ENDPOINT = "https://storage.googleapis.com"


@dataclasses.dataclass(frozen=True)
class Retries:
    """How long a ``gs://`` call may take: ``timeout`` seconds for each request (its
    connection and each wait for bytes), and ``deadline`` seconds for the call, retries
    included. google-cloud-storage retries what it deems transient (connection errors, 408,
    429, 5xx), backing off from 1 s, doubling up to 60 s."""

    timeout: float = 30.0
    deadline: float = 120.0

    def call_kwargs(self) -> dict:
        from google.cloud.storage.retry import DEFAULT_RETRY

        retry = DEFAULT_RETRY.with_timeout(self.deadline) if self.deadline > 0 else None
        return {"retry": retry, "timeout": self.timeout}


_RETRIES = Retries()
_ONE_TRY = contextvars.ContextVar("one_try", default=False)


def is_gcs(uri: str) -> bool:
    return str(uri).startswith("gs://")


def join(base: str, *names: str) -> str:
    """Joins path parts; keeps ``gs://`` URIs as URIs."""
    if is_gcs(base):
        return "/".join([str(base).rstrip("/"), *names])
    return str(Path(base, *names))


def endpoint() -> str:
    """Where ``gs://`` goes: ``$STORAGE_EMULATOR_HOST`` when set, else Cloud Storage."""
    return os.environ.get(EMULATOR_HOST) or GCS_ENDPOINT


def configure(retries: Retries, *, anonymous: bool = False) -> None:
    """Sets this process's :class:`Retries` and, with ``anonymous``, connects without
    credentials (what ``--no_auth`` asks; an emulator host always does)."""
    global _RETRIES, _GCS_CLIENT
    _RETRIES = retries
    if anonymous:
        from google.cloud import storage

        _GCS_CLIENT = storage.Client.create_anonymous_client()


def retries() -> Retries:
    """The policy in force here: the configured one, or one try inside :func:`one_try`."""
    if _ONE_TRY.get():
        return dataclasses.replace(_RETRIES, deadline=0.0)
    return _RETRIES


def _calls() -> dict:
    return retries().call_kwargs()


@contextlib.contextmanager
def one_try() -> Iterator[None]:
    """Within the block (this thread or task only), each ``gs://`` call makes one attempt, of
    one request timeout: for clean-up after a failure, which must not wait out a whole
    deadline per file when storage is what failed."""
    token = _ONE_TRY.set(True)
    try:
        yield
    finally:
        _ONE_TRY.reset(token)


def _client():
    global _GCS_CLIENT
    if _GCS_CLIENT is None:
        from google.cloud import storage

        _GCS_CLIENT = storage.Client()  # anonymous by itself when an emulator host is set
    return _GCS_CLIENT


def _bucket_and_name(uri: str) -> tuple[str, str]:
    """``gs://BUCKET/NAME`` -> ("BUCKET", "NAME")."""
    bucket, _, name = uri[len("gs://") :].partition("/")
    return bucket, name


def _blob(uri: str):
    bucket, name = _bucket_and_name(uri)
    if not bucket or not name:
        raise ValueError(f"not a gs://BUCKET/OBJECT URI: {uri}")
    return _client().bucket(bucket).blob(name)


@functools.cache
def _unanswered() -> tuple[type[BaseException], ...]:
    """The client's errors that mean Cloud Storage did not answer (refused, reset, timed out,
    503, retries given up), as opposed to an answer (404, 412) that the calls handle."""
    import requests
    from google.api_core import exceptions
    from google.auth.exceptions import TransportError

    return (
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
        exceptions.RetryError,
        exceptions.ServiceUnavailable,
        TransportError,
        ConnectionError,
        TimeoutError,
    )


def _answered(call):
    """``call`` with the client's errors that mean no answer raised as
    :class:`StorageUnavailable`, in words (:func:`in_words`)."""

    @functools.wraps(call)
    def answered(*args, **kwargs):
        handling = sys.exc_info()[1]  # a fault being handled meanwhile: not this call's
        try:
            return call(*args, **kwargs)
        except StorageUnavailable:
            raise
        except Exception as error:
            if not isinstance(error, _unanswered()):
                raise
            raise StorageUnavailable(_unanswered_words(_chain_text(error, handling))) from error

    return answered


@_answered
def read_bytes(uri: str) -> bytes:
    """Reads a whole file; a missing file raises FileNotFoundError naming it."""
    if is_gcs(uri):
        from google.api_core.exceptions import NotFound

        try:
            return _blob(uri).download_as_bytes(**_calls())
        except NotFound as error:
            raise FileNotFoundError(f"no such object: {uri}") from error
    return Path(uri).read_bytes()


@_answered
def exists(uri: str) -> bool:
    """Whether a file (not a directory) exists at ``uri``."""
    if is_gcs(uri):
        return _blob(uri).exists(**_calls())
    return Path(uri).is_file()


@_answered
def glob(pattern: str) -> list[str]:
    """The files matching a shell pattern (``*``, ``?``, ``[...]``; none of them matches ``/``),
    sorted."""
    if not is_gcs(pattern):
        return sorted(path for path in globlib.glob(pattern) if Path(path).is_file())
    bucket, name = _bucket_and_name(pattern)
    prefix = re.split(r"[*?\[]", name, maxsplit=1)[0]
    blobs = _client().list_blobs(bucket, prefix=prefix, **_calls())
    depth = name.count("/")
    return sorted(
        f"gs://{bucket}/{b.name}"
        for b in blobs
        if b.name.count("/") == depth and fnmatch.fnmatchcase(b.name, name)
    )


@_answered
def files_under(directory: str) -> list[tuple[str, float]]:
    """Every file below ``directory``, at any depth, sorted: ``(path, last update in epoch
    seconds)``; none when there is no such directory."""
    if is_gcs(directory):
        bucket, prefix = _folder(directory)
        blobs = _client().list_blobs(bucket, prefix=prefix, **_calls())
        return sorted((f"gs://{bucket}/{b.name}", b.updated.timestamp()) for b in blobs)
    found = []
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with contextlib.suppress(FileNotFoundError):  # removed meanwhile
                found.append((path, os.path.getmtime(path)))
    return sorted(found)


@_answered
def entries(directory: str) -> list[str]:
    """The names of the files and folders directly in ``directory``, sorted; none when there
    is no such directory."""
    if is_gcs(directory):
        bucket, prefix = _folder(directory)
        listing = _client().list_blobs(bucket, prefix=prefix, delimiter="/", **_calls())
        names = [blob.name[len(prefix) :] for blob in listing]
        # ``prefixes`` (the sub-folders) is filled as the pages above are read
        names += [folder[len(prefix) :].rstrip("/") for folder in listing.prefixes]
        return sorted(name for name in names if name)
    try:
        return sorted(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []


@dataclasses.dataclass(frozen=True)
class StoredObject:
    """A ``gs://`` object as Cloud Storage lists it: its size, its update time (epoch seconds)
    and its CRC-32C (base64 of the big-endian checksum, as the JSON API gives it)."""

    uri: str
    size: int
    updated: float
    crc32c: str


def _stored(bucket: str, blob) -> StoredObject:
    uri = f"gs://{bucket}/{blob.name}"
    return StoredObject(uri, blob.size, blob.updated.timestamp(), blob.crc32c)


@_answered
def stored_object(uri: str) -> StoredObject | None:
    """One ``gs://`` object (one request); None when there is none."""
    bucket, name = _bucket_and_name(uri)
    blob = _client().bucket(bucket).get_blob(name, **_calls())
    return _stored(bucket, blob) if blob else None


@_answered
def stored_objects(prefix: str) -> list[StoredObject]:
    """Every ``gs://`` object whose URI begins with ``prefix``, by name (a listing: one request
    per 1,000 objects)."""
    bucket, name = _bucket_and_name(prefix)
    return [_stored(bucket, b) for b in _client().list_blobs(bucket, prefix=name, **_calls())]


def _folder(directory: str) -> tuple[str, str]:
    """``gs://BUCKET/A/B`` -> ("BUCKET", "A/B/"), the prefix of the objects inside it."""
    bucket, name = _bucket_and_name(directory)
    return bucket, f"{name.rstrip('/')}/" if name.strip("/") else ""


@_answered
def write_bytes(uri: str, data: bytes) -> None:
    """Writes a whole file, creating local parent directories."""
    if is_gcs(uri):
        _blob(uri).upload_from_string(data, **_calls())
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@_answered
def create_exclusive(uri: str, data: bytes) -> bool:
    """Writes a new file atomically, only if none exists (``O_EXCL`` locally; on ``gs://`` an
    upload with ``if_generation_match=0``); False when the file already exists. On ``gs://``
    a retried upload whose first response was lost also finds the file there (its own): a
    caller that must tell the two apart compares the bytes."""
    if is_gcs(uri):
        from google.api_core.exceptions import PreconditionFailed

        try:
            _blob(uri).upload_from_string(data, if_generation_match=0, **_calls())
        except PreconditionFailed:
            return False
        return True
    Path(uri).parent.mkdir(parents=True, exist_ok=True)
    try:
        handle = os.open(uri, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(handle, "wb") as file:
        file.write(data)
    return True


@_answered
def read_versioned(uri: str) -> tuple[bytes, object] | None:
    """A file's bytes and a version token for :func:`delete_if_version` (the generation on
    ``gs://``, the bytes themselves locally); None when there is no such file."""
    if is_gcs(uri):
        from google.api_core.exceptions import NotFound, PreconditionFailed

        blob = _blob(uri)
        try:
            blob.reload(**_calls())
            generation = blob.generation
            data = blob.download_as_bytes(if_generation_match=generation, **_calls())
            return data, generation
        except (NotFound, PreconditionFailed):
            return None
    try:
        data = Path(uri).read_bytes()
    except FileNotFoundError:
        return None
    return data, data


@_answered
def delete_if_version(uri: str, version) -> bool:
    """Deletes a file only while it is still the version :func:`read_versioned` returned;
    False when it changed or is gone. Locally, deleters take turns on ``URI.lock``. On
    ``gs://`` the delete names that generation and requires it to be the live one
    (``ifGenerationMatch``): either alone suffices on Cloud Storage, and a server that honours
    only one of them (fake-gcs-server reads only ``generation``) still deletes nothing newer."""
    if is_gcs(uri):
        from google.api_core.exceptions import NotFound, PreconditionFailed

        bucket, name = _bucket_and_name(uri)
        blob = _client().bucket(bucket).blob(name, generation=version)
        try:
            blob.delete(if_generation_match=version, **_calls())
        except (NotFound, PreconditionFailed):
            return False
        return True
    with open(f"{uri}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if Path(uri).read_bytes() != version:
                return False
            os.unlink(uri)
        except FileNotFoundError:
            return False
    return True


@_answered
def remove(uri: str) -> None:
    """Deletes a file if it exists."""
    if is_gcs(uri):
        from google.api_core.exceptions import NotFound

        with contextlib.suppress(NotFound):
            _blob(uri).delete(**_calls())
        return
    Path(uri).unlink(missing_ok=True)


@_answered
def remove_tree(uri: str) -> None:
    """Deletes a file, or a folder with everything in it, if it exists (on ``gs://``, by batch
    requests of up to 100 deletes, as Beam's gcsio does)."""
    if is_gcs(uri):
        from google.api_core.exceptions import NotFound

        bucket, name = _bucket_and_name(uri.rstrip("/"))
        listing = _client().list_blobs(bucket, prefix=name, **_calls())
        doomed = [b for b in listing if b.name == name or b.name.startswith(f"{name}/")]
        for start in range(0, len(doomed), 100):
            with contextlib.suppress(NotFound), _client().batch():  # gone meanwhile: fine
                for blob in doomed[start : start + 100]:
                    blob.delete(timeout=retries().timeout)
        return
    if Path(uri).is_dir():
        shutil.rmtree(uri, ignore_errors=True)
    else:
        Path(uri).unlink(missing_ok=True)


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


@contextlib.contextmanager
def local_copy(uri: str) -> Iterator[str]:
    """Yields a local path holding ``uri``'s bytes (the path itself when already local)."""
    if not is_gcs(uri):
        if not Path(uri).exists():
            raise FileNotFoundError(f"no such file: {uri}")
        yield str(uri)
        return
    with tempfile.TemporaryDirectory(prefix="beamcap-") as tmp:
        path = os.path.join(tmp, uri.rsplit("/", 1)[-1])
        Path(path).write_bytes(read_bytes(uri))
        yield path


@contextlib.contextmanager
def local_file_for(uri: str) -> Iterator[str]:
    """Yields a local path to write; its bytes go to ``uri`` when the block succeeds."""
    if not is_gcs(uri):
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        yield str(uri)
        return
    with tempfile.TemporaryDirectory(prefix="beamcap-") as tmp:
        path = os.path.join(tmp, uri.rsplit("/", 1)[-1])
        yield path
        write_bytes(uri, Path(path).read_bytes())


_UNREACHABLE = re.compile(
    r"ConnectionError|ConnectTimeout|ReadTimeout|Connection refused|Connection reset|"
    r"RemoteDisconnected|Max retries exceeded|RetryError|Timeout of [\d.]+s exceeded|"
    r"ServiceUnavailable|TransportError|timed out"
)
_CAUSES = {  # what the client's error says -> what happened, in words
    "Connection refused": "connection refused",
    "Connection reset": "connection reset",
    "RemoteDisconnected": "connection closed without an answer",
    "Connection aborted": "connection closed without an answer",
    "timed out": "no answer within the request timeout",
    "ServiceUnavailable": "503 Service Unavailable",
}


def _chain_text(error: BaseException | None, stop: BaseException | None, depth: int = 0) -> str:
    """The text of ``error`` and of what it wraps (its cause and context, a RetryError's last
    exception, a BeamIOError's per-file exceptions), short of ``stop``."""
    if error is None or error is stop or depth > 6:
        return ""
    context = None if error.__suppress_context__ else error.__context__  # `from None`: not it
    inner = [error.__cause__, context, getattr(error, "cause", None)]
    inner += list((getattr(error, "exception_details", None) or {}).values())
    texts = [f"{type(error).__name__}: {error}"]
    texts += [_chain_text(e, stop, depth + 1) for e in inner if isinstance(e, BaseException)]
    return " ".join(texts)


def _names_storage(text: str) -> bool:
    """Whether an error's text is about Cloud Storage: it names a ``gs://`` path, the JSON
    API's paths or the storage endpoint (not, say, a worker pool that refused a connection)."""
    netloc = endpoint().split("://", 1)[-1]
    host, _, port = netloc.partition(":")
    marks = ["gs://", "/storage/v1/", "/upload/storage/v1/", netloc]
    if port:
        marks.append(f"host='{host}', port={port})")
    return any(mark in text for mark in marks)


def in_words(
    reason: str, error: BaseException | None = None, *, besides: BaseException | None = None
) -> str:
    """A storage fault's one line, naming Cloud Storage, its address and what went wrong
    (read from ``reason`` and ``error``'s chain, leaving out ``besides``, an error being
    handled meanwhile; with how long the client retried, where it says); other reasons as
    they are."""
    if isinstance(error, StorageUnavailable):  # in words already
        return reason
    text = f"{reason} {_chain_text(error, besides)}"
    if not (_UNREACHABLE.search(text) and _names_storage(text)):
        return reason
    return _unanswered_words(text, reason)


def _unanswered_words(text: str, reason: str = "") -> str:
    """Storage's one line for an error whose chain reads ``text``: what went wrong, and how
    long the client retried where it says."""
    cause = next((words for found, words in _CAUSES.items() if found in text), None)
    detail = cause or (reason or text).split(": ", 1)[-1][:160]
    gave_up = re.search(r"Timeout of ([\d.]+)s exceeded", text)
    if gave_up:
        seconds = float(gave_up.group(1))
        detail += f", retried for {seconds:g} s" if seconds else ", at one try"
    return f"Cloud Storage at {endpoint()} did not answer ({detail})"
