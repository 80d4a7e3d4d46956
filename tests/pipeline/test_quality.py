import json
import math
import os

import yaml

from pipeline import quality

TINY_PRESET = """
synth: {images: 60, seed: 5}
features: {encoder_weights: "random:0", image_size: 75, val_fraction: 0.2, test_fraction: 0.2}
decoder: {embedding_dim: 32, lstm_units: 32, dropout: 0.0}
train: {batch_size: 16, epochs: 1, bleu_sample: 4, max_length: 20}
phase2: {train_encoder: true, batch_size: 4, captions_per_image: 2, images_per_epoch: 8,
         epochs: 2, patience: 10, encoder_learning_rate: 0.001}
caption: {beam_size: 2, max_length: 20, num_candidates: 2, batch_size: 8}
"""


def test_quality_runs_both_phases_and_reports_the_curve(tmp_path, capsys):
    preset = tmp_path / "tiny.yaml"
    preset.write_text(TINY_PRESET)
    work = tmp_path / "quality"
    flags = ["--workdir", str(work), "--config", str(preset), "--runner", "FnApiRunner"]
    assert quality.main([*flags, "--minutes", "30"]) == 0
    out = capsys.readouterr().out
    for step in ("synth", "features", "phase1", "phase2", "caption", "evaluate", "report"):
        assert f"=== {step}" in out
    result = json.loads((work / "quality.json").read_text())
    assert result["phase2_images_seen"] == 16 and result["machine"]["cores"] == os.cpu_count()
    phase2 = [point for point in result["curve"] if point["phase"] == 2]
    assert [point["images_seen"] for point in phase2] == [8, 16]
    history = json.loads((work / "model-phase2" / "metrics.json").read_text())["history"]
    for key in ("val_attribute_accuracy", "val_count_accuracy", "val_shape_accuracy", "val_loss"):
        assert [point[key] for point in phase2] == [row[key] for row in history]
    effective = yaml.safe_load((work / "preset.yaml").read_text())
    assert effective["train"] == yaml.safe_load(TINY_PRESET)["train"]  # what both phases read
    held = result["held_out"]
    assert held["images_scored"] == held["images_with_scenes"] > 0
    keys = ("attribute_accuracy", "colour_accuracy", "shape_accuracy", "bleu4", "cider_d")
    assert all(math.isfinite(held[key]) for key in keys), held

    manifest = json.loads((work / "model-phase2" / "manifest.json").read_text())
    assert manifest["encoder"]["phase"] == 2
    [run_dir] = (work / "captions" / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["model_id"] == manifest["model_id"]  # the caption job read the phase-2 bundle
    assert summary["counts"]["captioned"] == held["images_scored"]
    page = (run_dir / "report.html").read_text()
    assert "id='learning-curve'" in page and "encoder-warning" not in page
    assert "fine-tuned with the decoder (phase 2)" in page

    assert quality.reusable(work / "synth", work / "features", 60, {"image_size": 75})
    assert not quality.reusable(work / "synth", work / "features", 61, {"image_size": 75})
    assert not quality.reusable(work / "synth", work / "features", 60, {"image_size": 96})
    assert not quality.reusable(work / "synth", tmp_path / "nowhere", 60, {"image_size": 75})


def test_gpu_overrides_apply_only_when_there_is_a_gpu():
    preset = {
        "train": {"batch_size": 128, "epochs": 1},
        "gpu": {"train": {"batch_size": 512}, "synth": {"images": 9}},
    }
    assert quality.with_gpu_overrides(preset, []) is preset
    merged = quality.with_gpu_overrides(preset, ["H100"])
    assert merged["train"] == {"batch_size": 512, "epochs": 1} and merged["synth"] == {"images": 9}
    assert preset["train"] == {"batch_size": 128, "epochs": 1}  # the preset itself is untouched
