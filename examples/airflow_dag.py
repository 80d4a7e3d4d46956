"""Airflow: caption new images daily, locally/on Flink or on Dataflow (flex template).

Requires apache-airflow with the apache-beam and google providers. Set the Airflow Variables
beamcap_bucket, gcp_project, gcp_region and beamcap_template (the flex template's gs:// path).

One --only-new run at a time holds the output's lease; another exits with status 75 ("try
again later"). max_active_runs=1 keeps this DAG from overlapping itself, and the BashOperator
turns a 75 (another DAG or a manual run holding the lease) into a skipped task, not a failure.
"""

import datetime

import pendulum
from airflow import DAG
from airflow.models import Variable
from airflow.operators.bash import BashOperator
from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator
from airflow.providers.google.cloud.operators.dataflow import DataflowStartFlexTemplateOperator

BUCKET = "{{ var.value.beamcap_bucket }}"

with DAG(
    dag_id="beamcap_caption_new_images",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["beamcap"],
) as dag:
    # On the Airflow worker itself (DirectRunner): exit 75 marks the task skipped.
    caption_here = BashOperator(
        task_id="caption_here",
        bash_command=(
            f"beamcap caption --input gs://{BUCKET}/incoming/ --model gs://{BUCKET}/models/v1 "
            f"--output gs://{BUCKET}/captions --only-new"
        ),
        skip_on_exit_code=75,
    )

    # DirectRunner or Flink: the job's module run by Airflow's Beam operator.
    caption_on_flink = BeamRunPythonPipelineOperator(
        task_id="caption_on_flink",
        runner="FlinkRunner",
        py_file="pipeline/caption.py",
        py_requirements=["beamcap"],
        pipeline_options={
            "config": "flink",
            "input": f"gs://{BUCKET}/incoming/",
            "model": f"gs://{BUCKET}/models/v1",
            "output": f"gs://{BUCKET}/captions",
            "only-new": "true",
            # Beam's Flink job server beside the cluster (docs/flink.md, "Kubernetes"); the SDK
            # worker pool runs next to each TaskManager.
            "job_endpoint": "flink-jobserver:8099",
            "environment_config": "localhost:50000",
            # Flink's REST API: beamcap checks the task slots before it submits, and fails the
            # run in one line when the TaskManagers stay gone (docs/reliability.md).
            "flink_master": "flink-jobmanager:8081",
        },
        execution_timeout=datetime.timedelta(hours=6),  # a pool that never starts a worker
    )

    # Dataflow with GPU workers: launch the flex template built by `make flex-template`.
    caption_on_dataflow = DataflowStartFlexTemplateOperator(
        task_id="caption_on_dataflow",
        project_id=Variable.get("gcp_project", default_var="my-project"),
        location=Variable.get("gcp_region", default_var="us-central1"),
        body={
            "launchParameter": {
                "jobName": "beamcap-{{ ds_nodash }}",
                "containerSpecGcsPath": "{{ var.value.beamcap_template }}",
                "parameters": {
                    "config": "dataflow-gpu",
                    "input": f"gs://{BUCKET}/incoming/",
                    "model": f"gs://{BUCKET}/models/v1",
                    "output": f"gs://{BUCKET}/captions",
                    "only-new": "true",
                },
            }
        },
    )
