import csv
import io
import math

import numpy as np
import pytest
from PIL import Image

from models.synthetic import (
    COLOURS,
    SHAPES,
    Scene,
    SceneObject,
    SynthConfig,
    attribute_hits,
    attribute_scores,
    describes,
    generate,
    make_example,
    parse_caption,
    read_scenes,
)


def test_examples_are_deterministic_for_a_seed():
    config = SynthConfig(images=10, seed=5)
    first = make_example(config, 3)
    assert make_example(config, 3) == first
    assert make_example(SynthConfig(images=10, seed=6), 3)[2] != first[2]
    assert make_example(config, 4)[2] != first[2]


def test_generate_writes_the_flickr8k_layout_reproducibly(tmp_path):
    config = SynthConfig(images=12, seed=2)
    generate(config, str(tmp_path / "a"), processes=1)
    generate(config, str(tmp_path / "b"), processes=2)
    for name in ("captions.txt", "scenes.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    images = sorted(p.name for p in (tmp_path / "a" / "Images").iterdir())
    assert len(images) == 12
    for name in images:
        assert (tmp_path / "a/Images" / name).read_bytes() == (
            tmp_path / "b/Images" / name
        ).read_bytes()
        with Image.open(tmp_path / "a/Images" / name) as image:
            assert image.format == "JPEG"
            assert 320 <= image.width <= 640 and 240 <= image.height <= 480
    with open(tmp_path / "a" / "captions.txt", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12 * 5 and set(rows[0]) == {"image", "caption"}


def test_every_caption_parses_back_to_its_scene(tmp_path):
    generate(SynthConfig(images=150, seed=9), str(tmp_path), processes=1)
    scenes = {scene.image: scene for scene in read_scenes(str(tmp_path / "scenes.jsonl"))}
    with open(tmp_path / "captions.txt", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert all(describes(scenes[row["image"]], row["caption"]) for row in rows)
    for row in rows:  # sizes too, which attribute accuracy leaves out
        objects, _ = parse_caption(row["caption"])
        truth = [(o.size, o.colour, o.shape, o.column) for o in scenes[row["image"]].objects]
        assert sorted(tuple(o.values()) for o in objects) == sorted(truth)
    counts = [len(scene.objects) for scene in scenes.values()]
    assert set(counts) == {1, 2, 3}
    used = {(o.shape, o.colour) for scene in scenes.values() for o in scene.objects}
    assert {s for s, _ in used} == set(SHAPES) and {c for _, c in used} == set(COLOURS)
    phrasings = {row["caption"].split(" a ")[0] for row in rows}
    assert len(phrasings) >= 5
    assert any(" above " in row["caption"] or " below " in row["caption"] for row in rows)


SCENE = Scene(
    "x.jpg",
    400,
    300,
    (
        SceneObject("circle", "red", "small", "left", "top"),
        SceneObject("star", "blue", "large", "right", "bottom"),
    ),
)


@pytest.mark.parametrize(
    "caption, expected",
    [
        ("A small red circle on the left and a large blue star on the right.", True),
        ("Two shapes: a small red circle on the left above a large blue star on the right", True),
        ("a small red circle on the left below a large blue star on the right", False),
        ("a small red circle on the left", False),  # an object missing
        ("a small red square on the left and a large blue star on the right", False),
        ("a small red circle on the right and a large blue star on the left", False),
        ("a large red circle on the left and a small blue star on the right", True),  # size
    ],
)
def test_describes_checks_shape_colour_position_and_relations(caption, expected):
    assert describes(SCENE, caption) is expected


def test_attribute_hits_judge_each_object_in_its_column():
    # left: right colour, wrong shape; right: named in the wrong column; one object too many
    caption = "a small red square on the left, a large blue star in the middle and a red circle"
    assert attribute_hits(SCENE, caption) == {
        "count": [True],  # the third phrase lacks a size, so the grammar reads two objects
        "column": [True, False],
        "colour": [True, False],
        "shape": [False, False],
        "size": [True, False],
    }
    right = "a small red circle on the left and a large blue star on the right"
    assert set(map(all, attribute_hits(SCENE, right).values())) == {True}


def test_attribute_scores_pool_objects_and_images():
    wrong = "a small red square on the left"
    right = "a small red circle on the left and a large blue star on the right"
    scores = attribute_scores([(SCENE, right), (SCENE, wrong)])
    assert scores["attribute_accuracy"] == 0.5  # images
    assert scores["count_accuracy"] == 0.5
    assert scores["column_accuracy"] == 0.75  # objects: 3 of 4 named in their column
    assert scores["colour_accuracy"] == 0.75 and scores["shape_accuracy"] == 0.5
    assert all(math.isnan(value) for value in attribute_scores([]).values())


def test_parse_caption_reads_objects_and_relations():
    objects, relations = parse_caption(
        "a small red circle on the left above a large blue star on the right"
    )
    assert objects == [
        {"size": "small", "colour": "red", "shape": "circle", "column": "left"},
        {"size": "large", "colour": "blue", "shape": "star", "column": "right"},
    ]
    assert relations == [(0, "above", 1)]


def test_images_show_the_objects_colours():
    scene, _, jpeg = make_example(SynthConfig(images=1, seed=1), 0)
    pixels = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), np.int16)
    for obj in scene.objects:
        distance = np.abs(pixels - np.array(COLOURS[obj.colour])).sum(axis=-1)
        assert (distance < 60).sum() > 100, f"no {obj.colour} region drawn"
