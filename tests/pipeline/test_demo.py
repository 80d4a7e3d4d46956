import json

from models.captioner.engines import choose
from models.captioner.manifest import Manifest
from pipeline import demo

TINY_PRESET = """
synth: {images: 30, seed: 3}
pretrain: {image_size: 75, val_fraction: 0.2, test_fraction: 0.2, batch_size: 8, images: 16,
           images_per_eval: 8}
features: {encoder_weights: "random:0", image_size: 75, val_fraction: 0.2, test_fraction: 0.2}
decoder: {embedding_dim: 32, lstm_units: 32, dropout: 0.0}
train: {batch_size: 16, epochs: 2, bleu_sample: 5, max_length: 30}
caption: {beam_size: 2, max_length: 30, num_candidates: 2, batch_size: 8}
"""


def test_demo_runs_every_step_end_to_end(tmp_path, capsys):
    preset = tmp_path / "tiny.yaml"
    preset.write_text(TINY_PRESET)
    work = tmp_path / "demo"
    flags = ["--workdir", str(work), "--config", str(preset), "--runner", "FnApiRunner"]
    assert demo.main(flags) == 0
    out = capsys.readouterr().out
    steps = ("synth", "pretrain", "features", "train", "quantize", "caption", "evaluate", "report")
    assert [line.split(" (")[0][4:] for line in out.splitlines() if line.startswith("=== ")][
        : len(steps)
    ] == list(steps)
    assert "attribute_accuracy" in out and "report.html" in out
    assert "WARNING" not in out  # the encoder was pretrained: no random-encoder warning
    assert out.rstrip().endswith(demo.REAL_CAPTIONS)  # the way to photo captions comes last
    [run_dir] = (work / "captions" / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    tests = len((work / "caption-inputs.txt").read_text().splitlines())
    assert summary["counts"]["matched"] == tests
    assert summary["counts"]["failed"]["decode"] == 3  # the three broken files
    assert summary["counts"]["captioned"] == tests - 3
    assert (run_dir / "report.html").exists() and (run_dir / "metrics.json").exists()
    manifest = json.loads((work / "model" / "manifest.json").read_text())
    chosen = choose(
        "auto", Manifest.from_json(manifest), gpu=False
    )  # the rule, on the engines' recorded checks
    assert summary["precision"] == chosen.precision  # --precision auto, applied by the worker
    page = (run_dir / "report.html").read_text()
    assert "encoder-warning" not in page and "pretrained on" in page
    record = json.loads((work / "pretrained" / "pretraining.json").read_text())
    dataset = json.loads((work / "features" / "dataset.json").read_text())
    assert dataset["encoder"]["weights"] == str(work / "pretrained" / "encoder.weights.h5")
    for encoder in (dataset["encoder"], manifest["encoder"]):
        assert encoder["fingerprint"] == record["fingerprint"]
        assert encoder["pretraining"]["images_seen"] == record["images_seen"] == 16
        assert encoder["pretraining"]["held_out_accuracy"] == record["held_out_accuracy"]
