"""One fault hierarchy (models/faults.py): each type carries its exit status and heading, the
command maps by type, and the one reader of a runner's text finds beamcap's faults in it."""

import logging

import pytest

from models import faults
from pipeline import cli
from pipeline.runner_faults import reason_of


@pytest.mark.parametrize(
    "fault, status, heading",
    [
        (faults.SettingsError("--beam-size must be >= 1"), 2, "error"),
        (faults.BundleError("m/vocab.txt does not match the manifest's sha256"), 2, "error"),
        (faults.StorageUnavailable("Cloud Storage at X did not answer"), 1, "error"),
        (faults.ModelFault("the decoder returned non-finite scores"), 1, "error"),
        (faults.RunFailed("the job server at h:1 stopped answering"), 1, "run failed"),
        (faults.JobServerLost("the job server at h:1 stopped answering"), 1, "error"),
        (faults.OutputBusy("out is leased by run r"), 75, "busy"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else None,
)
def test_the_command_maps_each_fault_by_its_type(fault, status, heading, capsys):
    def command():
        raise fault

    assert cli.exit_status("beamcap x", command) == status == fault.exit_code
    assert capsys.readouterr().err == f"beamcap x: {heading}: {fault}\n"


def test_faults_that_are_no_beamcap_fault_are_not_mapped():
    def command():
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        cli.exit_status("beamcap x", command)


def test_the_hierarchy():
    assert issubclass(faults.SettingsError, faults.Refused)
    assert issubclass(faults.BundleError, faults.Refused)
    for run_fault in (faults.ModelFault, faults.StorageUnavailable, faults.JobServerLost):
        assert issubclass(run_fault, faults.RunFault)
    assert not issubclass(faults.StageFailed, faults.BeamcapError)  # an image's, not a fault


@pytest.mark.parametrize(
    "text, reason",
    [
        (
            "Pipeline job-1 failed in state FAILED: Traceback ...\nmodels.faults.RunFault: all 8 "
            "images of a batch failed [while running 'CaptionImages/RunInference']",
            "all 8 images of a batch failed",
        ),
        (
            "RuntimeError: Pipeline failed: models.faults.StorageUnavailable: Cloud Storage at "
            "http://h:1 did not answer (connection refused)",
            "Cloud Storage at http://h:1 did not answer (connection refused)",
        ),
        ("a runner's own words\nand more", "RuntimeError: a runner's own words"),
    ],
)
def test_a_runners_text_is_read_for_the_workers_fault(text, reason):
    assert reason_of(RuntimeError(text)) == reason


def test_a_beamcap_fault_is_its_own_reason():
    error = faults.RunFault("the model returned 1 results for 2 images [while running 'X']")
    assert reason_of(error) == "the model returned 1 results for 2 images"


def test_a_stream_error_logged_by_a_loopback_workers_data_plane_stays_at_debug(caplog):
    """A job server gone: the data plane logs its gRPC error after the run's one line; it is
    kept at debug level, and the same logger's other errors are not."""
    import grpc

    from pipeline import runner_faults

    runner_faults._quiet_rpc_thread_deaths()
    caplog.set_level(logging.DEBUG)
    data_plane = logging.getLogger("apache_beam.runners.worker.data_plane")
    for error in (grpc.RpcError("Stream removed"), ValueError("a bug")):
        try:
            raise error
        except Exception:
            data_plane.exception("Failed to read inputs in the data plane.")
    errors = [r.exc_info[1] for r in caplog.records if r.levelno >= logging.ERROR]
    assert [type(e) for e in errors] == [ValueError]
    debug = [r.exc_info[1] for r in caplog.records if r.levelno == logging.DEBUG and r.exc_info]
    assert [str(e) for e in debug] == ["Stream removed"]
