import math

import pytest

from models.datasets.synthetic import Scene, SceneObject
from models.evaluation.attributes import attribute_hits, attribute_scores, describes, parse_caption

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
