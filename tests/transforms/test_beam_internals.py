"""Guards of transforms.beam_internals: one test (or two) per private name of Beam's that it relies
on, each failing when Beam changes it, by name, signature or behaviour. When Beam is upgraded,
these say which patch to look at; WRITTEN_FOR is widened once they pass."""

import importlib.util
import inspect
import logging
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.io import filebasedsink, parquetio
from apache_beam.io.gcp import gcsio, gcsio_retry
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_job_api_pb2
from apache_beam.runners.portability import portable_runner
from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer

from models import storage
from models.configs import SettingsError
from transforms import beam_internals, gcs
from transforms.beam_internals import UntestedBeam, check_version, logs, options, portable
from transforms.beam_internals.gcs_client import beams_client, beams_retry
from transforms.beam_internals.parquet_sink import rerun_safe

ROOT = Path(__file__).resolve().parents[2]


def parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


# The version range


def test_the_installed_and_the_pinned_beam_are_the_range_it_was_written_for():
    assert metadata.version("apache-beam") == beam.__version__  # what the import checks
    check_version(beam.__version__)
    pins = {
        "constraints.txt": r"^apache-beam==(\S+)$",
        "setup.py": r'"apache-beam\[gcp\]==([^"]+)"',
        "Makefile": r"^BEAM_VERSION := (\S+)$",
    }
    for name, pin in pins.items():
        found = re.search(pin, (ROOT / name).read_text(encoding="utf-8"), re.MULTILINE)
        assert found, f"no Beam pin in {name}"
        check_version(found[1])


@pytest.mark.parametrize("version", ["2.76.1", "2.78.0", "2.78.0rc1", "3.77.0", "dev"])
def test_another_beam_is_refused_in_one_line(version):
    with pytest.raises(UntestedBeam) as refused:
        check_version(version)
    assert isinstance(refused.value, SettingsError)  # exit 2: refused before anything ran
    assert str(refused.value).startswith(
        f"apache-beam {version} is installed, but transforms/beam_internals was written for "
        "apache-beam>=2.77,<2.78: "
    )
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("version", ["2.77.0", "2.77.2", "2.77.0rc1"])
def test_a_release_of_the_range_is_taken(version):
    check_version(version)


def test_the_import_checks_the_installed_beam():
    pretend = (
        "from importlib import metadata; real = metadata.version\n"
        "metadata.version = lambda name: '2.78.0' if name == 'apache-beam' else real(name)\n"
        "import transforms.beam_internals\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", pretend], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1].startswith(
        "transforms.beam_internals.UntestedBeam: apache-beam 2.78.0 is installed"
    )


# gcs_client: gcsio.create_storage_client and gcsio_retry.get_retry


def test_gcsio_makes_its_client_and_retry_through_the_two_functions_routed():
    assert parameters(beams_client) == ["pipeline_options", "use_credentials"]
    assert parameters(beams_retry) == ["pipeline_options"]
    assert gcsio.create_storage_client is gcs._storage_client  # routed by importing gcs
    assert gcsio_retry.get_retry is gcs._retry


def test_a_gcsio_of_a_beamcap_job_is_anonymous_with_no_auth_and_retries_to_its_deadline(
    monkeypatch,
):
    for name in ("_RETRIES", "_GCS_CLIENT"):  # restored after the test
        monkeypatch.setattr(storage, name, getattr(storage, name))
    monkeypatch.setattr(gcs, "_configured_from", [None])
    flags = ["--no_auth", "--beam_plugins", gcs.PLUGIN, "--storage_deadline", "7"]
    made = gcsio.GcsIO(pipeline_options=PipelineOptions(flags))
    assert type(made.client._credentials).__name__ == "AnonymousCredentials"
    assert made._storage_client_retry.timeout == 7
    assert storage.retries().deadline == 7  # the worker's models.storage took the job's policy


# parquet_sink: WriteToParquet._sink, parquetio._ParquetSink, FileBasedSink.pre_finalize


def write_to(tmp_path, name: str) -> beam.io.WriteToParquet:
    schema = pa.schema([("x", pa.int64())])
    return beam.io.WriteToParquet(str(tmp_path / name), schema, file_name_suffix=".parquet")


def finalize_twice(write: beam.io.WriteToParquet) -> None:
    """Writes one shard through ``write``'s sink, then finalizes it twice, as a cluster that
    restarts a finalized region does."""
    sink = write._sink
    started = sink.initialize_write()
    writer = sink.open_writer(started, "uid-1")
    writer.write(pa.table({"x": [1, 2]}))
    written = [writer.close()]
    for _ in range(2):
        list(sink.finalize_write(started, written, sink.pre_finalize(started, written)))


def test_write_to_parquet_keeps_its_sink_where_the_patch_swaps_its_class(tmp_path):
    assert type(write_to(tmp_path, "x")._sink) is parquetio._ParquetSink
    assert issubclass(parquetio._ParquetSink, filebasedsink.FileBasedSink)
    assert parameters(parquetio._ParquetSink.pre_finalize) == [
        "self",
        "init_result",
        "writer_results",
    ]


def test_beams_sink_fails_a_second_finalize_and_the_rerun_safe_one_keeps_its_shards(tmp_path):
    with pytest.raises(Exception, match="src and dst files do not exist"):
        finalize_twice(write_to(tmp_path, "beams"))  # the problem: when it goes, so may the patch
    assert not list(tmp_path.glob("beams-*.parquet"))
    finalize_twice(rerun_safe(write_to(tmp_path, "ours")))
    (shard,) = tmp_path.glob("ours-*.parquet")
    assert shard.name == "ours-00000-of-00001.parquet"
    assert pq.read_table(shard).column("x").to_pylist() == [1, 2]


# portable: PipelineResult._job_id; the worker pool's and control's gRPC services


def failed_portable_result(job_id: str, error: str) -> portable_runner.PipelineResult:
    """Beam's portable result of a job whose one message is ``error`` and which then fails."""
    message = beam_job_api_pb2.JobMessage(
        importance=beam_job_api_pb2.JobMessage.JOB_MESSAGE_ERROR, message_text=error
    )
    messages = [beam_job_api_pb2.JobMessagesResponse(message_response=message)]
    states = [beam_job_api_pb2.JobStateEvent(state=beam_job_api_pb2.JobState.FAILED)]
    return portable_runner.PipelineResult(None, job_id, iter(messages), iter(states))


def test_a_portable_result_names_its_job():
    assert portable.job_id(failed_portable_result("BeamApp-x_0001", "")) == "BeamApp-x_0001"
    assert portable.job_id(object()) is None


def test_beams_own_worker_pool_starts_a_worker_that_connects_to_the_probe():
    address, server = BeamFnExternalWorkerPoolServicer.start(use_process=False)
    try:
        assert portable.probe_pool(address, 30) is None
        assert portable.pool_answers(address)
    finally:
        server.stop(0)
    assert portable.probe_pool(address, 5) == (
        f"the SDK worker pool at {address} is not reachable (unavailable)"
    )
    assert not portable.pool_answers(address)


# logs: the records Beam logs, by module, function and text; its loggers' names


def test_a_portable_jobs_error_message_is_the_record_filtered_and_no_other(caplog):
    with caplog.at_level(logging.INFO), pytest.raises(RuntimeError, match="failed in state"):
        failed_portable_result("job_1", "Traceback: the step failed").wait_until_finish()
    (logged,) = [r for r in caplog.records if r.getMessage() == "Traceback: the step failed"]
    assert (logged.levelno, logged.module, logged.funcName) == (
        logging.ERROR,
        "portable_runner",
        "read_messages",
    )
    assert not logs._portable_job_traceback(logged)
    ours = logging.LogRecord("x", logging.ERROR, __file__, 1, "a fault", None, None, "f")
    assert logs._portable_job_traceback(ours)


def test_the_spurious_warnings_are_beams_words():
    sources = [
        "apache_beam.ml.inference.base",  # RunInference's model load
        "apache_beam.utils.subprocess_server",  # a job server stopped at exit
    ]
    text = "".join(inspect.getsource(importlib.import_module(name)) for name in sources)
    for words in logs.SPURIOUS:
        assert words in text, f"Beam no longer logs {words!r}: its filter is dead"
        record = logging.LogRecord("x", logging.WARNING, __file__, 1, words + "...", None, None)
        assert not logs._spurious_warning(record)


def test_the_quietened_loggers_are_beams():
    for name in logs._FLOORS:
        if name.startswith("apache_beam."):
            assert importlib.util.find_spec(name), f"no Beam module {name}"
    prism = inspect.getsource(
        importlib.import_module("apache_beam.runners.portability.prism_runner")
    )
    assert '"PrismRunner"' in prism


# options: get_all_options(add_extra_args_fn=...) and its parser's error


def test_beams_parser_lists_unknown_flags_and_refuses_malformed_ones_through_ours():
    def refuse(message):
        raise SettingsError(message)

    assert parameters(PipelineOptions.get_all_options)[2] == "add_extra_args_fn"
    unknown = options.unknown_args(["--runner", "DirectRunner", "--bogus", "1"], refuse)
    assert unknown == ["--bogus", "1"]
    with pytest.raises(SettingsError, match="--no_auth: ignored explicit argument 'true'"):
        options.unknown_args(["--no_auth=true"], refuse)


def test_the_package_is_one_door():
    """Only beam_internals names Beam's private modules and attributes in beamcap's layers."""
    private = re.compile(r"_ParquetSink|_job_id|gcsio\.|record\.funcName|beam_fn_api_pb2")
    inside = Path(beam_internals.__file__).parent
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for layer in ("models", "transforms", "pipeline")
        for path in sorted((ROOT / layer).rglob("*.py"))
        if inside not in path.parents
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if private.search(line)
    ]
    assert found == []
