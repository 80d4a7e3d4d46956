"""Phase 2: encoder and decoder trained together from a phase-1 bundle, on tiny inputs."""

import json
from pathlib import Path

import numpy as np
import pytest

from models.captioner.bundle import load_bundle
from models.configs import SettingsError, TrainConfig, check_ranges
from models.evaluation.attributes import scene_judge
from models.training import callbacks, train
from models.training.joint import resolve_batchnorm
from tests.conftest import TINY_SIZE

# on one test worker (make test: --dist loadgroup): the module trains one phase-1 bundle
pytestmark = pytest.mark.xdist_group("phase2")

SMALL_DECODER = {"embedding_dim": 32, "lstm_units": 32, "dropout": 0.0}


def phase2_config(phase1: str, **changes) -> TrainConfig:
    settings = dict(
        init_from=phase1,
        train_encoder=True,
        batch_size=4,
        images_per_epoch=8,
        epochs=2,
        patience=100,
        bleu_sample=3,
        max_length=12,
        encoder_learning_rate=1e-3,
    )
    return TrainConfig(**{**settings, **changes})


@pytest.fixture(scope="module")
def phase1(tiny_image_features, tmp_path_factory):
    data, _ = tiny_image_features
    output = tmp_path_factory.mktemp("phase1")
    train(
        str(data),
        str(output),
        decoder_config=SMALL_DECODER,
        config=TrainConfig(batch_size=16, epochs=2, bleu_sample=3, max_length=12),
    )
    return str(output)


def moving_means(bundle) -> list[np.ndarray]:
    return [w.numpy() for w in bundle.encoder.backbone.weights if "moving_mean" in w.path]


def kernels(bundle) -> list[np.ndarray]:
    return [w.numpy() for w in bundle.encoder.backbone.weights if w.path.endswith("kernel")]


def test_phase2_trains_both_resumes_after_an_interruption_and_says_so_in_the_bundle(
    tiny_image_features, tiny_dataset, phase1, tmp_path, monkeypatch
):
    """One phase-2 training, interrupted in its second epoch and run again: the rerun resumes
    from the checkpoint, and the bundle it writes is phase 2's (encoder and decoder trained)."""
    data, dataset = tiny_image_features
    output = tmp_path / "phase2"
    config = phase2_config(phase1, encoder_precision="bf16")
    scenes, judged = scene_judge(str(tiny_dataset / "scenes.jsonl")), []

    def judge(image_ids, captions):  # records what it said of each validation
        judged.append(scenes(image_ids, captions))
        return judged[-1]

    original = callbacks.Progress.on_epoch_begin

    def crash_in_the_second_epoch(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt("simulated interruption")
        original(self, epoch, logs)

    monkeypatch.setattr(callbacks.Progress, "on_epoch_begin", crash_in_the_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(str(data), str(output), config=config, judge=judge)
    assert (output / "checkpoints" / "backup").exists() and not (output / "manifest.json").exists()
    monkeypatch.setattr(callbacks.Progress, "on_epoch_begin", original)

    metrics = train(str(data), str(output), config=config, judge=judge)
    assert metrics["resumed_after_epoch"] == 1
    assert metrics["phase"] == 2 and metrics["encoder_batchnorm"] == "train"  # random weights
    assert [row["images_seen"] for row in metrics["history"]] == [8, 16]
    *per_epoch, final = judged  # each epoch's validation, across the interruption; the bundle's
    assert [row["val_attribute_accuracy"] for row in metrics["history"]] == [
        scores["attribute_accuracy"] for scores in per_epoch
    ]
    assert metrics["val_attribute_accuracy"] == final["attribute_accuracy"]
    assert metrics["images_seen"] == 16 and not metrics["stopped_by_time_budget"]

    before, after = load_bundle(phase1), load_bundle(str(output))
    encoder = after.manifest.encoder
    assert encoder.phase == 2 and before.manifest.encoder.phase == 1
    assert encoder.weights == "random:3" and encoder.image_size == TINY_SIZE
    assert encoder.fine_tuning == {
        "from_model": before.model_id,
        "from_fingerprint": dataset["encoder"]["fingerprint"],
        "images_seen": 16,
        "learning_rate": 1e-3,
        "batchnorm": "train",
        "precision": "bf16",
    }
    assert encoder.fingerprint != before.manifest.encoder.fingerprint
    assert after.manifest.decoder.fingerprint != before.manifest.decoder.fingerprint
    assert after.manifest.training["phase"] == 2
    assert any(not np.allclose(a, b) for a, b in zip(kernels(before), kernels(after), strict=True))
    assert any(  # BatchNorm trained: its moving statistics followed the batches
        not np.allclose(a, b)
        for a, b in zip(moving_means(before), moving_means(after), strict=True)
    )
    images = np.random.default_rng(0).integers(0, 256, (2, TINY_SIZE, TINY_SIZE, 3), np.uint8)
    assert all(hypotheses for hypotheses in after.caption(images, beam_size=2, max_length=12))
    assert (output / "loss.png").stat().st_size > 1000
    assert not (output / "checkpoints").exists()


def test_frozen_batchnorm_keeps_its_statistics_and_the_time_budget_stops(
    tiny_image_features, phase1, tmp_path
):
    data, _ = tiny_image_features
    config = phase2_config(
        phase1, encoder_batchnorm="frozen", epochs=1000, time_budget_minutes=0.01
    )
    metrics = train(str(data), str(tmp_path / "phase2"), config=config)
    assert metrics["stopped_by_time_budget"] and metrics["epochs_run"] < 1000
    before, after = load_bundle(phase1), load_bundle(str(tmp_path / "phase2"))
    for a, b in zip(moving_means(before), moving_means(after), strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.allclose(a, b) for a, b in zip(kernels(before), kernels(after), strict=True))
    assert after.manifest.encoder.fine_tuning["batchnorm"] == "frozen"


def test_phase2_needs_features_written_with_images(tiny_features, phase1, tmp_path):
    data, _ = tiny_features
    with pytest.raises(SettingsError, match="--with-images"):
        train(str(data), str(tmp_path / "phase2"), config=phase2_config(phase1))


def test_refuses_a_bundle_with_another_vocabulary(tiny_image_features, tiny_bundle, tmp_path):
    data, _ = tiny_image_features
    with pytest.raises(SettingsError, match="another vocabulary"):
        train(str(data), str(tmp_path / "phase2"), config=phase2_config(tiny_bundle))


def test_batchnorm_auto_trains_random_encoders_and_freezes_pretrained_ones():
    assert resolve_batchnorm("auto", "random:0") == "train"
    assert resolve_batchnorm("auto", "imagenet") == "frozen"
    assert resolve_batchnorm("auto", "gs://b/inception.h5") == "frozen"
    assert resolve_batchnorm("frozen", "random:0") == "frozen"
    with pytest.raises(ValueError):
        resolve_batchnorm("sometimes", "random:0")
    with pytest.raises(ValueError, match="--encoder-batchnorm must be one of auto, train"):
        check_ranges(TrainConfig(encoder_batchnorm="sometimes"))


def test_bundle_metrics_record_the_curve(tiny_image_features, phase1):
    metrics = json.loads(Path(phase1, "metrics.json").read_text())
    assert metrics["phase"] == 1
    assert [row["captions_seen"] for row in metrics["history"]] == [
        metrics["dataset"]["train_captions"] * (epoch + 1) for epoch in range(2)
    ]
