import subprocess
import sys

import pytest

from pipeline import cli


def test_help_lists_subcommands(capsys):
    assert cli.main(["--help"]) == 0
    assert "inspect" in capsys.readouterr().out
    assert cli.main(["no-such-thing"]) == 2
    assert "unknown subcommand" in capsys.readouterr().err


def test_inspect_verifies_a_bundle(tmp_path, parts, capsys):
    from models.captioner.bundle import save_bundle

    manifest = save_bundle(str(tmp_path / "b"), **parts, training={"val_bleu4": 0.5})
    assert cli.main(["inspect", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert manifest.model_id in out and "verified" in out and "val_bleu4: 0.5" in out
    assert (
        "decoder     show_and_tell: embedding_dim 16, lstm_units 16, dropout 0.3, feature_dim "
        f"2048, fingerprint {manifest.decoder.fingerprint[:12]}\n" in out
    )
    (tmp_path / "b" / "vocab.txt").write_text("<pad> 0\n")
    assert cli.main(["inspect", str(tmp_path / "b")]) == 2
    assert "vocab.txt does not match" in capsys.readouterr().err


def test_console_script_runs():
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "inspect", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "BUNDLE" in result.stdout.upper()


def test_commands_that_load_tensorflow_start_quietly(tmp_path, parts):
    """TensorFlow's C++ start-up lines (absl's pre-init warning, oneDNN, CUDA probing) stay off
    stderr, which they reach through file descriptor 2, unless --log-level debug asks for them."""
    from models.captioner.bundle import save_bundle

    save_bundle(str(tmp_path / "b"), **parts)

    def inspect(*flags):
        command = [sys.executable, "-m", "pipeline.cli", "inspect", str(tmp_path / "b"), *flags]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stderr

    assert "absl" not in inspect() and "oneDNN" not in inspect("--log-level", "warning")
    assert "absl::InitializeLog" in inspect("--log-level", "debug")  # the lines exist here


@pytest.mark.parametrize(
    "argv",
    [
        ["runs", "gs://bucket/captions"],
        ["show", "gs://bucket/captions"],
        ["inspect", "gs://bucket/model"],
        ["report", "gs://bucket/captions/runs/r1", "--output", "report.html"],
        ["evaluate", "--captions", "gs://bucket/captions", "--references", "gs://bucket/r.txt"],
    ],
    ids=lambda argv: argv[0],
)
def test_a_storage_fault_ends_in_one_line(argv, monkeypatch, capsys):
    """Whatever the subcommand, a Cloud Storage fault is one line naming storage, no
    traceback."""
    import requests

    from models import storage

    def unreachable():
        raise requests.exceptions.ConnectionError(
            "HTTPSConnectionPool(host='storage.googleapis.com', port=443): Max retries exceeded "
            "with url: /storage/v1/b/bucket/o?prefix=captions%2Fruns%2F (Caused by "
            "NewConnectionError('Failed to establish a new connection: [Errno 111] Connection "
            "refused'))"
        )

    monkeypatch.setattr(storage, "_client", unreachable)  # every gs:// call
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)  # Cloud Storage itself
    assert cli.main(argv) == 1
    assert capsys.readouterr().err == (
        f"beamcap {argv[0]}: error: Cloud Storage at https://storage.googleapis.com did not "
        "answer (connection refused)\n"
    )


def test_a_refused_connection_elsewhere_is_not_called_a_storage_fault():
    from models.storage import in_words

    reason = "the SDK worker pool at localhost:50000 is not reachable (unavailable)"
    pool = ConnectionRefusedError(111, "Connection refused")
    assert in_words(reason, pool) == reason


def test_storage_flags_out_of_range_are_refused_in_one_line(tmp_path, capsys):
    argv = ["caption", "--input", str(tmp_path), "--model", str(tmp_path / "m")]
    argv += ["--output", str(tmp_path / "out"), "--storage_timeout", "0"]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == (
        "beamcap caption: error: --storage_timeout must be > 0 and --storage_deadline >= 0 "
        "(seconds), not 0 and 120\n"
    )


def test_input_values_add_up_from_flags_and_presets(tmp_path):
    """--input a --input b c (and a preset's list) means all of them; never only the last."""
    from pipeline.caption import CaptionSettings
    from pipeline.settings import parse_job

    for name in "abc":
        (tmp_path / name).mkdir()
    a, b, c = (str(tmp_path / name) for name in "abc")
    common = ["--model", str(tmp_path), "--output", str(tmp_path / "out")]

    def inputs(*argv):
        job = parse_job(CaptionSettings, [*argv, *common], prog="x", description="x", section="c")
        return job.settings.input

    assert inputs("--input", a, "--input", b, c) == f"{a},{b},{c}"
    preset = tmp_path / "preset.yaml"
    preset.write_text(f"c: {{input: [{a}, {b}]}}\n")
    assert inputs("--config", str(preset)) == f"{a},{b}"
    assert inputs("--config", str(preset), "--input", c) == c  # flags given win


# A run that fails while something it started never ends: a non-daemon thread, which
# interpreter exit joins, as it joins a ThreadPoolExecutor's workers; the launcher of
# test_spark's worker-kill fault once wrote its line, then never exited.
STUCK_RUN = """
import sys, threading, types
from models.faults import RunFailed
from pipeline import cli

def main(argv):
    threading.Thread(target=threading.Event().wait, name="never-ends").start()
    raise RunFailed("the job failed")

sys.modules["stuck"] = types.SimpleNamespace(main=main)
cli.SUBCOMMANDS["stuck"] = ("stuck", "a run that fails, leaving a thread that never ends")
cli.EXIT_SECONDS = float(sys.argv[1])
sys.argv[1:] = ["stuck"]
sys.exit(cli.main())
"""


def test_a_failed_run_exits_with_status_1_though_a_thread_never_ends():
    bound = 3
    stuck = subprocess.run(
        [sys.executable, "-c", STUCK_RUN, str(bound)],
        capture_output=True,
        text=True,
        timeout=bound + 60,  # the launcher's own bound, then a loaded machine's start and exit
        check=False,
    )
    assert stuck.returncode == 1
    lines = stuck.stderr.splitlines()
    assert lines[0] == "beamcap stuck: run failed: the job failed"
    # then every thread's stack, for the bug that held the exit up
    assert lines[1] == f"Timeout (0:00:{bound:02d})!" and "in wait" in stuck.stderr
