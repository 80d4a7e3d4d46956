"""OpenVINO's compiled models, kept between runs on one machine: a worker imports an engine's
compiled parts instead of compiling them again at every run.

Not OpenVINO's own ``CACHE_DIR``: it never prunes its folder, and writes each blob in place,
so a second worker process may read one half written. Here each blob is written to a
temporary file and renamed (a reader sees a whole blob or none), named by what it was compiled
from (the part's content-named file, the compile settings, OpenVINO's version, the CPU's name
and flags), and the folder keeps the blobs used in the last :data:`MAX_AGE_DAYS` days, at most
:data:`MAX_BYTES`, least recently used leaving first. A blob that does not import is compiled
again and replaced.

The folder: ``$BEAMCAP_CACHE_DIR``, else ``$XDG_CACHE_HOME/beamcap/openvino`` (``~/.cache``);
``BEAMCAP_CACHE_DIR=off`` turns it off. Where it cannot be written, parts are compiled as before.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
import time
from pathlib import Path

from models import hardware

MAX_AGE_DAYS, MAX_BYTES = 30, 2 * 1024**3
CACHE_ENV = "BEAMCAP_CACHE_DIR"


def cache_dir() -> Path | None:
    chosen = os.environ.get(CACHE_ENV)
    if chosen == "off":
        return None
    if chosen:
        return Path(chosen)
    home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(home, "beamcap", "openvino")


def compile_model(core, make, config: dict, key: str | None):
    """``core.compile_model(make(), "CPU", config)``, or, where ``key`` (what names the model's
    content) has a blob for these settings here, that blob imported, without calling ``make``;
    stored there when compiled."""
    folder = cache_dir()
    if not key or folder is None:
        return _compile(core, make(), config)
    path = folder / f"{key}.{_settings_digest(config)}.blob"
    compiled = _imported(core, path, config)
    if compiled is None:
        compiled = _compile(core, make(), config)
        _store(folder, path, compiled)
    return compiled


def _compile(core, model, config: dict):
    return core.compile_model(model, "CPU", config)


def _settings_digest(config: dict) -> str:
    import openvino as ov

    settings = [config, ov.get_version(), hardware.cpu_name(), sorted(hardware.cpu_flags())]
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _imported(core, path: Path, config: dict):
    try:
        blob = path.read_bytes()
    except OSError:
        return None
    try:
        compiled = core.import_model(blob, "CPU", config)
    except Exception as error:  # noqa: BLE001 - a broken blob is compiled again, and replaced
        logging.warning("compiling again: %s does not import (%s)", path, error)
        return None
    os.utime(path)  # used: the last to leave
    return compiled


def _store(folder: Path, path: Path, compiled) -> None:
    """Writes the blob whole (a temporary file, renamed), then prunes the folder; a folder that
    cannot be written is passed over."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        stream = io.BytesIO()
        compiled.export_model(stream)
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".tmp", delete=False) as file:
            file.write(stream.getvalue())
        os.replace(file.name, path)
        prune(folder)
    except OSError as error:
        logging.warning("OpenVINO cache at %s not written: %s", folder, error)


def prune(folder: Path, *, now: float | None = None) -> list[Path]:
    """Removes blobs unused for :data:`MAX_AGE_DAYS` days, then the least recently used until
    the rest fit :data:`MAX_BYTES`, and temporary files a crashed writer left (an hour old);
    returns what it removed. Another process may prune at once: a file already gone is none
    of its business."""
    now = time.time() if now is None else now
    entries = []
    for path in folder.iterdir():
        if path.suffix not in (".blob", ".tmp"):
            continue
        try:
            status = path.stat()
        except FileNotFoundError:
            continue
        entries.append((status.st_mtime, status.st_size, path))
    removed, kept_bytes = [], 0
    for used, size, path in sorted(entries, reverse=True):  # the most recently used first
        stale = now - used > (3600 if path.suffix == ".tmp" else MAX_AGE_DAYS * 86400)
        if path.suffix == ".blob" and not stale and kept_bytes + size <= MAX_BYTES:
            kept_bytes += size
            continue
        if path.suffix == ".blob" or stale:  # a writer's file of the last hour stays
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
