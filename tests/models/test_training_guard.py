"""The guard of the training path: when the features carry the scene, trainer + bundle + beam
search + the evaluator's judge (``describes``) must caption held-out scenes almost perfectly.

The features are a fixed random projection of each scene's attributes (per column: present,
shape, colour, size, row) plus noise, written in the features job's own record format. Nothing
here knows about images, so the test takes seconds; what it checks is everything downstream of
the encoder: the teacher-forcing shift, the padding mask, the vocabulary round trip, the step
protocol, beam search and the scoring. Break any of them and accuracy collapses far below 98 %;
the control (features shuffled between images) shows the same path without the scene.

The scenes are the generator's one-object scenes. Measured here with the generator's full mix
(1-3 objects): the decoder binds three objects' attributes slowly, not for want of plumbing:
LSTM 256 plateaued near 87 % (val sample), LSTM 512 reached 94.5 % on 200 held-out scenes after
5 epochs of 6,000 (about 4 minutes, its loss at the captions' own entropy), its errors colours
and shapes swapped between objects; two-object scenes were at ~87 % after 1.3 minutes.
"""

import json

import numpy as np
import tensorflow as tf

from models.captioner.beam_search import beam_search
from models.captioner.bundle import load_bundle
from models.captioner.encoder import EncoderSpec, ImageEncoder
from models.captioner.vocabulary import Vocabulary
from models.configs import TrainConfig
from models.datasets.feature_records import FeatureRecord, encode_example
from models.datasets.synthetic import (
    COLOURS,
    COLUMNS,
    ROWS,
    SHAPES,
    SIZES,
    captions_for,
    random_scene,
)
from models.evaluation.attributes import describes, scene_judge
from models.evaluation.metrics import caption_scores
from models.training import train

ATTRIBUTES = (("shape", SHAPES), ("colour", tuple(COLOURS)), ("size", SIZES), ("row", ROWS))
PER_COLUMN = 1 + sum(len(values) for _, values in ATTRIBUTES)


def scene_vector(scene) -> np.ndarray:
    """One-hot attributes per column (absent columns all zero)."""
    vector = np.zeros(len(COLUMNS) * PER_COLUMN, np.float32)
    for obj in scene.objects:
        offset = COLUMNS.index(obj.column) * PER_COLUMN
        vector[offset] = 1.0
        offset += 1
        for name, values in ATTRIBUTES:
            vector[offset + values.index(getattr(obj, name))] = 1.0
            offset += len(values)
    return vector


# Over 60 lines: the whole fixture dataset (features, captions, splits, dataset.json) in one
# place, so a reader sees what the training guard is given.
def write_scene_features(root, *, counts, noise=0.1, seed=0, max_objects=3, shuffle=False):
    """A `beamcap features`-shaped directory whose features are the scenes' attributes, projected
    to 2048 dimensions; returns {split: [(scene, captions, features)]}. ``max_objects``: keep
    only the generator's scenes with at most that many objects. ``shuffle``: the control, each
    train image gets another train image's features."""
    rng = np.random.default_rng(seed)
    projection = rng.normal(0, 1 / np.sqrt(PER_COLUMN), (len(COLUMNS) * PER_COLUMN, 2048))
    splits = {}
    for split, count in counts.items():
        items = []
        while len(items) < count:
            scene = random_scene(rng, f"{split}_{len(items):05d}.jpg", 320, 240)
            if len(scene.objects) > max_objects:
                continue
            features = scene_vector(scene) @ projection + rng.normal(0, noise, 2048)
            items.append((scene, captions_for(scene, rng), features.astype(np.float32)))
        splits[split] = items
    if shuffle:
        order = rng.permutation(len(splits["train"]))
        train_items = splits["train"]
        splits["train"] = [
            (s, c, train_items[j][2]) for (s, c, _), j in zip(train_items, order, strict=True)
        ]
    vocabulary = Vocabulary.build([c for _, captions, _ in splits["train"] for c in captions])
    vocabulary.save(str(root / "vocab.txt"))
    encoder = ImageEncoder(EncoderSpec("random:0", 75))  # the bundle needs one; unused here
    encoder.save_weights(str(root / "encoder.weights.h5"))
    for split, items in splits.items():
        with tf.io.TFRecordWriter(str(root / f"{split}-00000-of-00001.tfrecord")) as writer:
            for scene, captions, features in items:
                writer.write(
                    encode_example(
                        FeatureRecord(
                            image_id=scene.image,
                            uri=f"/nowhere/{scene.image}",
                            features=features,
                            fingerprint=encoder.fingerprint,
                            caption_ids=[vocabulary.encode(c) for c in captions],
                            caption_texts=captions,
                        )
                    )
                )
    with open(root / "scenes.jsonl", "w") as handle:
        for items in splits.values():
            handle.writelines(scene.to_json() + "\n" for scene, _, _ in items)
    dataset = {
        "counts": {
            **{f"{split}_images": len(items) for split, items in splits.items()},
            **{f"{split}_captions": 5 * len(items) for split, items in splits.items()},
        },
        "encoder": {
            "architecture": "InceptionV3",
            "image_size": 75,
            "pooling": "avg",
            "weights": "random:0",
            "fingerprint": encoder.fingerprint,
            "weights_file": "encoder.weights.h5",
        },
        "vocabulary": {"size": len(vocabulary), "file": "vocab.txt"},
        "settings": {"with_images": False},
    }
    (root / "dataset.json").write_text(json.dumps(dataset))
    return splits


def fit_and_caption(tmp_path, *, shuffle=False, epochs=4):
    data = tmp_path / "features"
    data.mkdir()
    splits = write_scene_features(
        data, counts={"train": 1500, "val": 60, "test": 200}, max_objects=1, shuffle=shuffle
    )
    config = TrainConfig(
        batch_size=64,
        epochs=epochs,
        learning_rate=0.004,
        patience=100,
        bleu_sample=60,
        max_length=30,
    )
    decoder = {"embedding_dim": 64, "lstm_units": 128, "dropout": 0.0}
    judge = scene_judge(str(data / "scenes.jsonl"))
    metrics = train(
        str(data), str(tmp_path / "model"), decoder_config=decoder, config=config, judge=judge
    )
    bundle = load_bundle(str(tmp_path / "model"))
    test = splits["test"]
    best = beam_search(
        bundle.stepper, np.stack([f for _, _, f in test]), beam_size=3, max_length=30
    )
    captions = [bundle.vocabulary.decode(hypotheses[0].tokens) for hypotheses in best]
    judged = [describes(scene, c) for (scene, _, _), c in zip(test, captions, strict=True)]
    wrong = [
        (s.to_json(), c) for (s, _, _), c, ok in zip(test, captions, judged, strict=True) if not ok
    ]
    bleu4 = caption_scores(captions, [references for _, references, _ in test])["bleu4"]
    return metrics, float(np.mean(judged)), bleu4, wrong


def test_features_that_carry_the_scene_give_near_perfect_held_out_captions(tmp_path):
    metrics, accuracy, bleu4, wrong = fit_and_caption(tmp_path)
    assert accuracy >= 0.98, f"held-out attribute accuracy {accuracy:.3f}; e.g. {wrong[:3]}"
    assert metrics["val_attribute_accuracy"] >= 0.95  # the trainer's own per-epoch judge agrees
    assert bleu4 > 0.5


def test_control_features_that_do_not_carry_the_scene_give_grammar_only(tmp_path):
    metrics, accuracy, bleu4, _ = fit_and_caption(tmp_path, shuffle=True, epochs=2)
    assert accuracy < 0.2 and metrics["val_attribute_accuracy"] < 0.2
    assert bleu4 > 0.2  # fluent: it learned the captions' grammar
