"""Network faults between the caption job and Cloud Storage, injected with Toxiproxy between
`beamcap caption` (a real process, the DirectRunner's FnApiRunner) and fake-gcs-server. Each
case ends in one of two ways a user can read: the run commits once with every image exactly
once, or it fails in one line naming storage and its address, with nothing committed and the
run failed or, when the bucket itself is gone, abandoned. Deadlines are set low by flags,
outages last seconds; docs/reliability.md has the same cases at the defaults."""

import json
import time

import pytest

from models import storage
from models.faults import OutputBusy
from pipeline import lease
from pipeline.output_root import OutputRoot
from tests.jobs import FNAPI, MARGIN, beamcap_process, job_flags
from tests.pipeline.conftest import MANY_IMAGES
from tests.pipeline.test_gcs import parquet_rows

IMAGES = 40  # per run; the latency case takes FEW of them, each read costs round trips
FEW = 12
DEADLINE = 20  # --storage_deadline in these tests, seconds
FAST = ["--storage_timeout", "3", "--storage_deadline", str(DEADLINE)]  # the tests' deadlines


@pytest.fixture(scope="module")
def images_bucket(gcs_servers, many_images):
    """IMAGES of ``many_images`` in their own bucket, gs://BUCKET/photos/, the first FEW of
    them under gs://BUCKET/few/ too."""
    assert MANY_IMAGES >= IMAGES
    client = gcs_servers.client(direct=True)
    bucket = client.create_bucket("faults-images")
    for index, path in enumerate(sorted(many_images.iterdir())[:IMAGES]):
        for folder in ("photos", "few") if index < FEW else ("photos",):
            bucket.blob(f"{folder}/{path.name}").upload_from_filename(str(path))
    return "gs://faults-images/photos/"


def start_caption(bundle, images: str, output: str, log, *extra, hold=None):
    return beamcap_process(
        "caption", *job_flags(images, bundle, output, "--only-new", *FNAPI, *extra), log=log,
        hold=hold,
    )  # fmt: skip


def wait_for_object(gcs, output: str, part: str, process, timeout: float = 120) -> None:
    """Waits until an object whose name holds ``part`` is under ``output`` (seen around the
    proxy)."""
    bucket, _, prefix = output[len("gs://") :].partition("/")
    client = gcs.client(direct=True)
    deadline = time.time() + timeout
    while not any(part in b.name for b in client.list_blobs(bucket, prefix=prefix)):
        assert process.poll() is None, "the run ended first"
        assert time.time() < deadline, f"no {part} object under {output}"
        time.sleep(0.05)


def last_line(log) -> str:
    return log.read_text().strip().splitlines()[-1]


def assert_committed_once(gcs, output: str, log, images: int = IMAGES) -> dict:
    """The run committed, every image captioned exactly once, no lease left behind; and, with
    an emulator host, no credential lookup was tried (Beam's backoff costs ~20 s)."""
    text = log.read_text()
    assert "_get_credentials_with_retrys" not in text
    summary = json.loads(text[text.index("{\n") :])
    rows = parquet_rows(gcs.client(direct=True), f"{output}/runs/{summary['run_id']}/captions-")
    uris = [row["image_uri"] for row in rows]
    assert len(uris) == len(set(uris)) == summary["counts"]["captioned"] == images
    assert [r["state"] for r in OutputRoot(output).list_runs()] == ["committed"]
    assert OutputRoot(output).lease_holder() is None
    return summary


def assert_commits_after(fault: str, gcs, output: str, log, process) -> None:
    """Once ``fault`` is over, the run exits 0, committed once; prints how long it took then
    (for docs/reliability.md)."""
    over = time.time()
    assert process.wait(120) == 0, last_line(log)
    print(f"{fault}: exit {time.time() - over:.1f} s after it ended")
    assert_committed_once(gcs, output, log)


def test_300_ms_latency_on_every_call_still_commits(gcs, new_bucket, images_bucket, tiny_bundle,
                                                    tmp_path):  # fmt: skip
    output, log = f"gs://{new_bucket('out')}/captions", tmp_path / "run.log"
    few = images_bucket.replace("/photos/", "/few/")
    with gcs.toxiproxy.toxic("latency", latency=300):
        process = start_caption(tiny_bundle, few, output, log)
        assert process.wait(240) == 0, last_line(log)
    summary = assert_committed_once(gcs, output, log, images=FEW)
    print(f"with 300 ms latency: {summary['wall_seconds']} s")  # for docs/reliability.md


def test_connections_reset_for_5_s_while_shards_are_written(gcs, new_bucket, images_bucket,
                                                            tiny_bundle, tmp_path):  # fmt: skip
    output, log = f"gs://{new_bucket('out')}/captions", tmp_path / "run.log"
    process = start_caption(tiny_bundle, images_bucket, output, log)
    wait_for_object(gcs, output, "beam-temp-", process)
    with gcs.toxiproxy.toxic("reset_peer", timeout=0):
        answered = gcs.requests_answered()
        time.sleep(5)
        assert process.poll() is None, "the run ended before the resets did"
        reset = gcs.requests_answered() - answered  # each answer met a reset, not the client
    assert reset > 0, "no storage call in the 5 s of resets: the fault landed on nothing"
    print(f"resets: {reset} answers reset")
    assert_commits_after("resets", gcs, output, log, process)


def test_storage_unreachable_while_the_run_commits(gcs, new_bucket, images_bucket, tiny_bundle,
                                                   tmp_path):  # fmt: skip
    """The ``timeout`` toxic, both ways, passes nothing and closes each connection after 1 s:
    the commit's calls fail and are retried, with backoff, until storage answers again."""
    output, log = f"gs://{new_bucket('out')}/captions", tmp_path / "run.log"
    hold = tmp_path / "hold"
    hold.touch()
    process = start_caption(tiny_bundle, images_bucket, output, log, hold=hold)
    reached = tmp_path / "hold.reached"
    deadline = time.time() + 120
    while not reached.exists():
        assert process.poll() is None and time.time() < deadline, last_line(log)
        time.sleep(0.1)
    toxic = gcs.toxiproxy.toxic
    with toxic("timeout", stream="upstream", timeout=1000), toxic("timeout", timeout=1000):
        hold.unlink()  # the commit goes on: _SUCCESS, then the lease's release
        time.sleep(10)
        assert process.poll() is None, "the run ended during the outage"
    assert_commits_after("outage", gcs, output, log, process)


def test_storage_gone_for_good_fails_in_one_line_then_the_next_run_takes_over(
    gcs, new_bucket, images_bucket, tiny_bundle, tmp_path
):
    output, log = f"gs://{new_bucket('out')}/captions", tmp_path / "run.log"
    process = start_caption(tiny_bundle, images_bucket, output, log, *FAST)
    wait_for_object(gcs, output, "beam-temp-", process)
    gone = time.time()
    gcs.toxiproxy.set_enabled(False)
    try:
        status = process.wait(120)
        took = time.time() - gone
    finally:
        gcs.toxiproxy.set_enabled(True)
    line = last_line(log)
    assert status == 1, line
    assert line.startswith(f"beamcap caption: run failed: Cloud Storage at {gcs.endpoint} "), line
    cleanup = line.split(" (and cleaning up failed: ", 1)[1]
    assert cleanup.startswith(f"Cloud Storage at {gcs.endpoint} did not answer (connection refused")
    assert "retried" not in cleanup  # one try per call
    # docs/reliability.md's bound is a call's deadline and last request, then one request
    # timeout per clean-up call; refused connections fail each try at once
    assert took < DEADLINE + MARGIN, f"failed after {took:.0f} s"
    print(f"storage gone: failed after {took:.1f} s")  # for docs/reliability.md
    (killed,) = OutputRoot(output).list_runs()
    assert killed["state"] == "unfinished" and killed["lease"] is None  # abandoned
    next_log = tmp_path / "next.log"
    assert start_caption(tiny_bundle, images_bucket, output, next_log).wait(240) == 0
    assert "took over the stale lease of run " + killed["run_id"] in next_log.read_text()
    states = {r["run_id"]: r["state"] for r in OutputRoot(output).list_runs()}
    assert states.pop(killed["run_id"]) == "failed"  # marked abandoned by the next run
    assert list(states.values()) == ["committed"]


def test_a_lease_upload_whose_answer_is_lost_takes_the_lease_once(gcs, new_bucket):
    """The server stores the lease, its answer never arrives; the client's retry then finds
    the lease there (412). It is this run's own: the run goes on, and nobody else gets it."""
    output = f"gs://{new_bucket('out')}/captions"
    mine = lease.new_lease("run-a", 10, pid=None)
    kept = storage.retries()
    storage.configure(storage.Retries(timeout=2, deadline=30))
    direct = gcs.client(direct=True).bucket(output[5:].split("/")[0]).blob("captions/_LEASE")
    try:
        with gcs.toxiproxy.toxic("timeout", timeout=0):  # answers are dropped
            import threading

            acquired = []
            thread = threading.Thread(
                target=lambda: acquired.append(OutputRoot(output).acquire_lease(mine))
            )
            thread.start()
            deadline = time.time() + 20
            while not direct.exists():
                assert time.time() < deadline, "the first upload never reached the server"
                time.sleep(0.05)
            direct.reload()
            stored = direct.generation
            time.sleep(3)  # past the request's timeout: its answer is lost for good
        thread.join(30)
    finally:
        storage.configure(kept)
    assert acquired == [None], "acquire did not return"
    assert OutputRoot(output).lease_holder() == mine
    direct.reload()
    assert direct.generation == stored  # written once
    with pytest.raises(OutputBusy, match="is leased by run run-a "):
        OutputRoot(output).acquire_lease(lease.new_lease("run-b", 10, pid=None))
