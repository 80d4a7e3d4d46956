"""Dataflow, offline: a --dry_run builds the job without submitting it (no network)."""

from apache_beam.options.pipeline_options import DebugOptions
from apache_beam.runners.dataflow.internal.apiclient import Environment

from pipeline.caption import run

IMAGE = "us-docker.pkg.dev/my-project-123/beamcap/worker:0.1.0"


def dataflow_flags(output) -> list[str]:
    """What `make run-dataflow` passes, less the model, offline: a --dry_run, no credentials."""
    return [
        "--config",
        "dataflow-gpu",
        "--input",
        "gs://my-bucket/images/",
        "--output",
        str(output),
        "--project",
        "my-project-123",
        "--region",
        "us-central1",
        "--temp_location",
        "gs://my-bucket/tmp",
        "--sdk_container_image",
        IMAGE,
        "--no_auth",
        "--dry_run=True",
    ]


def test_dry_run_builds_the_gpu_job(tmp_path, tiny_bundle):
    result = run(["--model", tiny_bundle, *dataflow_flags(tmp_path / "out")], wait=False)
    job = result.job
    names = {t.unique_name for t in job.proto_pipeline.components.transforms.values()}
    for step in (
        "MatchImages",
        "Redistribute",
        "ReadShards",
        "ReadImages",
        "CaptionOncePerContent/Join",
        "ReadAndDecode",
        "CaptionImages",
        "CaptionImages/RunInference/BatchElements",
        "CaptionImages/RunInference/BeamML_RunInference",
        "CaptionImages/SplitOutcomes",
        "WriteCaptions",
        "WriteFailures",
        "CommitRun/Commit",
    ):
        assert step in names, step
    environment = Environment(
        packages=[],
        options=job.options,
        environment_version="beamcap-test",
        proto_pipeline_staged_url="gs://my-bucket/tmp/pipeline.pb",
        proto_pipeline=job.proto_pipeline,
    ).proto
    assert "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver" in (
        environment.service_options
    )
    [pool] = environment.worker_pools
    assert pool.machine_type == "g2-standard-8"
    images = {e.payload for e in job.proto_pipeline.components.environments.values()}
    assert any(IMAGE.encode() in payload for payload in images)
    experiments = job.options.view_as(DebugOptions).experiments
    assert "no_use_multiple_sdk_containers" in experiments
