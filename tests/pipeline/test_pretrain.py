import json

import numpy as np
from PIL import Image

from models.captioner.encoder import EncoderSpec, ImageEncoder, weights_fingerprint
from models.datasets.splits import split_for
from pipeline import pretrain
from pipeline.report import describe_pretraining

TINY = ["--image-size", "75", "--batch-size", "8", "--images-per-eval", "16", "--seed", "1"]


def write_classes(root, count=24, seed=0):
    """Two classes of 64x48 JPEGs a classifier can tell apart: red and blue, with noise."""
    rng = np.random.default_rng(seed)
    for name, colour in {"red": (200, 30, 30), "blue": (30, 30, 200)}.items():
        (root / name).mkdir(parents=True)
        for index in range(count):
            pixels = np.clip(rng.normal(colour, 40, (48, 64, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{name}{index}.jpg")
    (root / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff")  # truncated: skipped, counted


def test_pretrain_on_a_folder_per_class_trains_the_encoder_and_records_it(tmp_path, capsys):
    data, out = tmp_path / "classes", tmp_path / "pretrained"
    write_classes(data)
    flags = ["--data", str(data), "--output", str(out), *TINY, "--images", "32"]
    assert pretrain.main([*flags, "--val-fraction", "0.25", "--test-fraction", "0.1"]) == 0
    record = json.loads((out / "pretraining.json").read_text())
    assert record["dataset"]["kind"] == "folders"
    assert record["dataset"]["heads"] == {"class": ["blue", "red"]}
    held_out = [
        f"{name}{i}.jpg"
        for name in ("red", "blue")
        for i in range(24)
        if split_for(f"{name}{i}.jpg", val_fraction=0.25, test_fraction=0.1) == "val"
    ]
    assert record["dataset"]["held_out_images"] == len(held_out) > 0
    broken_split = split_for("broken.jpg", val_fraction=0.25, test_fraction=0.1)
    assert record["dataset"]["unreadable_images"] == int(broken_split != "test")
    assert record["images_seen"] == 32 and set(record["held_out_accuracy"]) == {"class"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert [row["images_seen"] for row in metrics["history"]] == [16, 32]
    best = max(metrics["history"], key=lambda row: row["val_mean_accuracy"])  # the first best
    assert record["kept_after_images"] == best["images_seen"]  # its weights are the ones written
    assert record["held_out_accuracy"]["class"] == round(best["val_class_accuracy"], 4)
    assert (out / "accuracy.png").stat().st_size > 0
    trained = ImageEncoder(
        EncoderSpec("random:0", 75), weights_file=str(out / "encoder.weights.h5")
    )
    assert trained.fingerprint == record["fingerprint"]
    assert trained.fingerprint != ImageEncoder(EncoderSpec("random:0", 75)).fingerprint
    printed = json.loads(capsys.readouterr().out)
    assert printed["held_out_accuracy"] == record["held_out_accuracy"]


def test_pretrain_refuses_data_without_one_batch_of_training_images(tmp_path):
    data = tmp_path / "classes"
    write_classes(data, count=2)
    from tests.jobs import beamcap_job

    result = beamcap_job("pretrain", "--data", data, "--output", tmp_path / "out", *TINY)
    assert result.returncode == 2
    assert "training images, fewer than one batch (--batch-size 8)" in result.stderr
    assert not (tmp_path / "out").exists()


def test_stages_train_the_layers_below_first_then_the_whole_encoder(tmp_path):
    data, out = tmp_path / "classes", tmp_path / "pretrained"
    write_classes(data)
    flags = ["--data", str(data), "--output", str(out), *TINY, "--images", "16"]
    assert (
        pretrain.main([*flags, "--stages", "stem:32", "mixed0:16", "--val-fraction", "0.25"]) == 0
    )
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [(row["stage"], row["images_seen"]) for row in history] == [
        ("stem", 16), ("stem", 32), ("mixed0", 48), ("encoder", 64)
    ]  # fmt: skip
    assert [row["epoch"] for row in history] == [0, 1, 2, 3]  # one curve
    record = json.loads((out / "pretraining.json").read_text())
    assert record["images_seen"] == 64 and record["kept_after_images"] == 64
    assert [(stage["layer"], stage["images_seen"]) for stage in record["stages"]] == [
        ("stem", 32), ("mixed0", 48)
    ]  # fmt: skip
    assert set(record["stages"][0]["held_out_accuracy"]) == {"class"}
    line = describe_pretraining(record)  # what beamcap inspect and the report print
    assert "images): stages stem 32 -> mixed0 48 -> whole encoder 64 seen, kept after 64" in line
    assert not (out / "checkpoints").exists()  # a rerun starts afresh


def test_a_stage_trains_only_the_layers_below_its_layer(tmp_path):
    import keras

    from models.datasets.labels import Head
    from models.training.pretrain import grid_classifier, stage_layer

    encoder = ImageEncoder(EncoderSpec("random:0", 75))
    heads = (Head("class", ("blue", "red"), "class"),)
    model = grid_classifier(encoder, heads, "stem")
    stem = stage_layer(encoder.backbone, "stem")
    assert tuple(stem.output.shape[1:]) == (7, 7, 192)  # InceptionV3's stem at 75 px
    before = [weight.numpy().copy() for weight in encoder.backbone.weights]
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    images = np.random.default_rng(0).integers(0, 255, (8, 75, 75, 3), dtype=np.uint8)
    model.fit(images, {"class": np.arange(8) % 2}, epochs=1, verbose=0)
    last_of_stem = [layer.name for layer in encoder.backbone.layers].index(stem.name)
    below = {id(w) for layer in encoder.backbone.layers[: last_of_stem + 1] for w in layer.weights}
    changed = {
        id(weight)
        for weight, old in zip(encoder.backbone.weights, before, strict=True)
        if not np.array_equal(weight.numpy(), old)
    }
    assert changed and changed <= below  # the stem learned; mixed0 and above did not move


def test_a_rerun_loads_a_finished_stage_instead_of_training_it_again(tmp_path):
    from models.configs import PretrainConfig
    from models.datasets.labels import Head
    from models.training.pretrain import Examples, run_stages

    rng = np.random.default_rng(0)
    examples = Examples(
        rng.integers(0, 255, (16, 75, 75, 3), dtype=np.uint8), {"class": np.arange(16) % 2}
    )
    heads = (Head("class", ("blue", "red"), "class"),)
    config = PretrainConfig(batch_size=8, images_per_eval=16, stages="stem:16")
    encoder = ImageEncoder(EncoderSpec("random:0", 75))
    rows = run_stages(encoder, heads, examples, examples, config, tmp_path)
    trained = weights_fingerprint(encoder.backbone)
    assert trained != encoder.fingerprint  # the fingerprint it was built with
    fresh = ImageEncoder(EncoderSpec("random:0", 75))
    assert run_stages(fresh, heads, examples, examples, config, tmp_path) == rows
    assert (
        weights_fingerprint(fresh.backbone) == trained
    )  # the finished stage's weights, not a second fit


def test_pretrain_refuses_a_malformed_stage_or_a_layer_the_encoder_lacks(tmp_path):
    data = tmp_path / "classes"
    write_classes(data, count=8)
    from tests.jobs import beamcap_job

    flags = ["--data", data, "--output", tmp_path / "out", *TINY]
    result = beamcap_job("pretrain", *flags, "--stages", "stem")
    assert result.returncode == 2
    assert (
        "--stages: 'stem' is not LAYER:IMAGES with IMAGES >= 1 (e.g. stem:42496)" in result.stderr
    )
    result = beamcap_job("pretrain", *flags, "--stages", "mixed99:16", "--val-fraction", "0.25")
    assert result.returncode == 2
    assert "--stages: the encoder has no layer 'mixed99' (stem, mixed0, mixed1" in result.stderr
    assert not (tmp_path / "out" / "encoder.weights.h5").exists()
