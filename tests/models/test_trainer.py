import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from models.captioner.bundle import load_bundle
from models.captioner.encoder import EncoderSpec, ImageEncoder
from models.configs import SettingsError, TrainConfig
from models.training import train
from tests.conftest import TINY_SIZE

SMALL_DECODER = {"embedding_dim": 64, "lstm_units": 64, "dropout": 0.0}


def test_overfits_a_tiny_dataset_and_writes_a_working_bundle(tiny_features, tmp_path):
    data, dataset = tiny_features
    config = TrainConfig(
        batch_size=16, epochs=60, learning_rate=0.01, patience=100, bleu_sample=10, max_length=30
    )
    metrics = train(str(data), str(tmp_path / "model"), decoder_config=SMALL_DECODER, config=config)
    history = metrics["history"]
    assert len(history) == 60
    assert history[0]["loss"] > 2.5  # ~log(vocabulary size) at the start
    assert history[-1]["loss"] < 0.6, "the decoder should memorise 24 images' captions"
    assert metrics["val_loss"] is not None and "val_bleu4" in history[-1]
    assert (tmp_path / "model" / "loss.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert saved["model_id"] == metrics["model_id"]

    bundle = load_bundle(str(tmp_path / "model"))
    assert bundle.manifest.encoder.fingerprint == dataset["encoder"]["fingerprint"]
    assert bundle.manifest.training["epochs_run"] == 60
    images = np.random.default_rng(0).integers(0, 256, (2, TINY_SIZE, TINY_SIZE, 3), np.uint8)
    captions = bundle.caption(images, beam_size=2, max_length=30)
    assert all(image and image[0].tokens for image in captions)
    assert all(bundle.vocabulary.decode(image[0].tokens) for image in captions)
    assert not (tmp_path / "model" / "checkpoints").exists()


def test_rerun_after_a_kill_resumes_from_the_last_epoch(tiny_features, tmp_path):
    data, _ = tiny_features
    output = tmp_path / "model"
    command = [
        sys.executable,
        "-m",
        "pipeline.train",
        "--data",
        str(data),
        "--output",
        str(output),
        "--epochs",
        "4",
        "--patience",
        "100",
        "--batch-size",
        "8",
        "--bleu-sample",
        "4",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    metadata = output / "checkpoints" / "backup" / "training_metadata.json"
    deadline = time.time() + 240
    while not metadata.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert metadata.exists(), "no checkpoint was written before the deadline"
    assert not (output / "manifest.json").exists(), "the first run finished before the kill"

    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "resuming after epoch" in finished.stderr
    metrics = json.loads((output / "metrics.json").read_text())
    assert 1 <= metrics["resumed_after_epoch"] < 4
    assert [row["epoch"] for row in metrics["history"]] == list(range(4))


def test_refuses_features_whose_encoder_weights_changed(tiny_features, tmp_path):
    data, _ = tiny_features
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    ImageEncoder(EncoderSpec("random:4", TINY_SIZE)).save_weights(str(copy / "encoder.weights.h5"))
    with pytest.raises(SettingsError, match="does not hold the weights the features"):
        train(
            str(copy),
            str(tmp_path / "model"),
            decoder_config=SMALL_DECODER,
            config=TrainConfig(epochs=1, bleu_sample=2),
        )


def test_refuses_features_of_another_width_than_the_decoder(tiny_features, tmp_path):
    data, dataset = tiny_features
    assert dataset["encoder"]["feature_dim"] == 2048
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    changed = json.loads((copy / "dataset.json").read_text())  # the fixture's dict is shared
    changed["encoder"]["feature_dim"] = 1024
    (copy / "dataset.json").write_text(json.dumps(changed))
    with pytest.raises(
        SettingsError,
        match=r"dataset.json holds 1024-d features; the decoder takes 2048-d ones",
    ):
        train(
            str(copy),
            str(tmp_path / "model"),
            decoder_config={**SMALL_DECODER, "feature_dim": 2048},
            config=TrainConfig(epochs=1, bleu_sample=2),
        )


def test_feature_width_falls_back_to_the_architecture_for_older_dataset_json():
    from models.training.trainer import feature_width

    assert feature_width({"architecture": "InceptionV3", "feature_dim": 1024}) == 1024
    assert feature_width({"architecture": "InceptionV3"}) == 2048
    assert feature_width({}) == 2048
