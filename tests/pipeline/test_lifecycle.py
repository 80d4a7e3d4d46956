"""A run's lifecycle, the one door of every job (pipeline/lifecycle.py): leases taken and
released, abandoned runs cleaned, the commit made exactly once, the first reason kept."""

import json
from pathlib import Path

import pytest

from models.faults import OutputBusy, RunFault, SettingsError
from pipeline import lease
from pipeline.lifecycle import RunLifecycle
from pipeline.output_root import OutputRoot, RunDir


def leases(output) -> list:
    return sorted(str(path.relative_to(output)) for path in output.rglob("_LEASE"))


def failed_reason(run: RunDir) -> str:
    return json.loads((Path(run.path) / "_FAILED").read_text())["reason"]


def test_a_run_commits_exactly_once(tmp_path):
    life = RunLifecycle.of(OutputRoot(str(tmp_path)), "run-a", exclusive=True)
    made, held = [], []

    def make_record():
        made.append(1)
        return {"run_id": "run-a", "n": len(made)}

    def before_success(run_path):  # between the record and _SUCCESS
        held.append((run_path, (tmp_path / "runs/run-a/summary.json").exists()))
        assert not (tmp_path / "runs/run-a/_SUCCESS").exists()

    with life.leased(pid=None):
        assert leases(tmp_path) == ["_LEASE", "runs/run-a/_LEASE"]
        assert life.commit("summary.json", make_record, before_success=before_success) == {
            "run_id": "run-a",
            "n": 1,
        }
    assert held == [(life.run_dir.path, True)]
    assert life.commit("summary.json", make_record) == {"run_id": "run-a", "n": 1}  # a rerun
    assert made == [1] and leases(tmp_path) == []
    assert life.run_dir.state() == {"state": "committed"}


def test_a_failed_run_keeps_its_first_reason_and_never_commits(tmp_path):
    life = RunLifecycle.of(OutputRoot(str(tmp_path)), "run-a", exclusive=True)
    with life.leased(pid=None):
        (tmp_path / "runs/run-a/beam-temp-x").mkdir()
        assert life.fail("first") == ""
    life.fail("second")
    assert failed_reason(life.run_dir) == "first"
    assert leases(tmp_path) == [] and not list(tmp_path.rglob("beam-temp-*"))
    with pytest.raises(RunFault, match="^first$"):
        life.commit("summary.json", lambda: {"never": "made"})
    assert not (tmp_path / "runs/run-a/summary.json").exists()


def test_the_commit_rule_failing_fails_the_run(tmp_path):
    life = RunLifecycle.of(OutputRoot(str(tmp_path)), "run-a")

    def too_many_failed():
        raise RunFault("9 of 10 matched images failed")

    with life.leased(pid=None), pytest.raises(RunFault, match="9 of 10"):
        life.commit("summary.json", too_many_failed)
    assert failed_reason(life.run_dir) == "9 of 10 matched images failed"
    assert leases(tmp_path) == []


def test_a_run_whose_output_lease_was_taken_over_cannot_commit(tmp_path):
    root = OutputRoot(str(tmp_path))
    life = RunLifecycle.of(root, "run-a", exclusive=True, lease_minutes=5)
    with life.leased(pid=None):
        root.release("run-a")
        root.acquire_lease(lease.new_lease("run-b", 5, pid=None))
        with pytest.raises(RunFault, match="lease on .* was taken over .*--lease-minutes 5"):
            life.commit("summary.json", lambda: {})
    assert life.run_dir.state()["state"] == "failed"
    assert root.lease_holder().run_id == "run-b"  # not ours to release


def test_one_exclusive_run_at_a_time(tmp_path):
    root = OutputRoot(str(tmp_path))
    first, second = (RunLifecycle.of(root, r, exclusive=True) for r in ("run-a", "run-b"))
    busy = pytest.raises(OutputBusy, match="leased by run run-a")
    with first.leased(pid=None), busy, second.leased(pid=None):
        pass
    assert leases(tmp_path) == ["_LEASE", "runs/run-a/_LEASE"]  # run-a runs on, unharmed


def test_a_fault_before_the_run_releases_its_leases(tmp_path):
    life = RunLifecycle.of(OutputRoot(str(tmp_path)), "run-a", exclusive=True)
    with pytest.raises(SettingsError, match="bad graph"), life.leased(pid=None):
        raise SettingsError("bad graph")
    assert leases(tmp_path) == [] and life.run_dir.state()["state"] == "unfinished"


def test_abandoned_runs_are_marked_failed_when_a_run_starts(tmp_path):
    root = OutputRoot(str(tmp_path))
    (tmp_path / "runs/dead/beam-temp-1").mkdir(parents=True)
    (tmp_path / "runs/dead/beam-temp-1/part").write_text("x")
    with RunLifecycle.of(root, "run-a").leased(pid=None):
        pass
    assert root.run("dead").state()["reason"] == "abandoned"
    assert not list(tmp_path.rglob("beam-temp-*"))


def test_a_run_outside_an_output_root_has_no_leases(tmp_path):
    """A features run: its OUTPUT is the run directory."""
    life = RunLifecycle(RunDir(str(tmp_path / "features")))
    with life.leased(pid=None):
        assert life.commit("dataset.json", lambda: {"counts": {}}) == {"counts": {}}
    assert (tmp_path / "features/_SUCCESS").exists() and leases(tmp_path) == []
