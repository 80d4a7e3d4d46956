"""The compiled-model cache of the OpenVINO engines: a second load imports what the first
compiled, a broken blob is compiled again and replaced, writers never leave half a blob, and
the folder is pruned."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from models.captioner import openvino_cache
from models.captioner.openvino_engine import load_engine
from tests.conftest import ROOT, TINY_SIZE
from tests.models.test_openvino_engine import scenes


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(openvino_cache.CACHE_ENV, str(folder))
    return folder


def test_a_second_load_imports_the_compiled_parts(int8_bundle, cache, monkeypatch):
    images = scenes(3, seed=4)
    first = load_engine(int8_bundle, "int8")
    blobs = sorted(cache.glob("*.blob"))
    assert [blob.name.split(".")[:2] for blob in blobs] == [
        ["decoder", "start"], ["decoder", "step"], ["encoder", "int8"]
    ]  # fmt: skip
    expected = first.caption(images, beam_size=2, max_length=6)

    def no_compiling(*args):
        raise AssertionError("compiled although the cache holds it")

    monkeypatch.setattr(openvino_cache, "_compile", no_compiling)
    second = load_engine(int8_bundle, "int8")
    assert second.caption(images, beam_size=2, max_length=6) == expected
    assert sorted(cache.glob("*.blob")) == blobs


def test_a_cached_engine_loads_without_reading_its_model_files(int8_bundle, cache, monkeypatch):
    from models.captioner import openvino_engine

    images = scenes(2, seed=6)
    expected = load_engine(int8_bundle, "int8").caption(images, beam_size=2, max_length=6)
    read = []

    def recorded(uri, name, manifest):
        read.append(name)
        return checked(uri, name, manifest)

    checked = openvino_engine.read_checked
    monkeypatch.setattr(openvino_engine, "read_checked", recorded)
    second = load_engine(int8_bundle, "int8")
    assert read == ["vocab.txt"]
    assert second.caption(images, beam_size=2, max_length=6) == expected
    for blob in cache.glob("encoder.int8.*.blob"):
        blob.unlink()  # gone: that part is read, checked and compiled again
    load_engine(int8_bundle, "int8")
    assert [name.split(".")[:2] for name in read[1:]] == [
        ["vocab", "txt"],
        *[["encoder", "int8"]] * 2,
    ]


def test_a_broken_blob_is_compiled_again_and_replaced(int8_bundle, cache):
    load_engine(int8_bundle, "int8")
    [encoder] = cache.glob("encoder.int8.*.blob")
    encoder.write_bytes(b"half a blob")
    engine = load_engine(int8_bundle, "int8")
    assert engine.encoder.encode(scenes(2, seed=5)).shape[0] == 2
    assert encoder.stat().st_size > 1000  # whole again


def test_workers_loading_at_once_each_get_the_engine_and_leave_whole_blobs(int8_bundle, cache):
    code = (
        "from models.captioner.openvino_engine import load_engine\n"
        "import numpy as np\n"
        f"e = load_engine({int8_bundle!r}, 'int8')\n"
        f"print(e.encoder.encode(np.zeros((1, {TINY_SIZE}, {TINY_SIZE}, 3), np.uint8)).sum())\n"
    )
    env = {**os.environ, openvino_cache.CACHE_ENV: str(cache)}
    workers = [
        subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE)
        for _ in range(3)
    ]
    printed = [worker.communicate(timeout=120)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0, 0]
    assert len(set(printed)) == 1
    assert len(list(cache.glob("*.blob"))) == 3 and not list(cache.glob("*.tmp"))


def test_the_folder_keeps_recent_blobs_within_its_size(tmp_path, monkeypatch):
    now = time.time()

    def made(name: str, size: int, days_ago: float):
        path = tmp_path / name
        path.write_bytes(b"\0" * size)
        os.utime(path, (now - days_ago * 86400,) * 2)
        return path

    monkeypatch.setattr(openvino_cache, "MAX_BYTES", 250)
    new, newer = made("a.blob", 100, 1), made("b.blob", 100, 0.5)
    too_many = made("c.blob", 100, 2)  # the least recently used over the size
    stale = made("d.blob", 10, openvino_cache.MAX_AGE_DAYS + 1)
    crashed, writing = made("e.tmp", 10, 0.1), made("f.tmp", 10, 0.001)
    other = made("notes.txt", 10, 400)
    removed = openvino_cache.prune(tmp_path, now=now)
    assert sorted(removed) == sorted([too_many, stale, crashed])
    assert all(path.exists() for path in (new, newer, writing, other))


def test_the_cache_can_be_turned_off(int8_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv(openvino_cache.CACHE_ENV, "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    engine = load_engine(int8_bundle, "int8")
    assert np.isfinite(engine.encoder.encode(scenes(1, seed=6))).all()
    assert not any(tmp_path.rglob("*.blob"))
