import re

import pytest

from models.configs import SettingsError
from models.datasets.labels import SCENE_ATTRIBUTES, labelled
from models.datasets.synthetic import COLUMNS, SynthConfig, generate, read_scenes


def test_scenes_label_every_column_and_leave_empty_ones_to_present(tmp_path):
    generate(
        SynthConfig(images=12, seed=3, min_size=(64, 48), max_size=(64, 48)),
        str(tmp_path),
        processes=1,
    )
    found = labelled(str(tmp_path))
    assert found.kind == "scenes"
    assert {head.group for head in found.heads} == set(SCENE_ATTRIBUTES)
    assert len(found.heads) == len(COLUMNS) * len(SCENE_ATTRIBUTES)
    for scene in read_scenes(str(tmp_path / "scenes.jsonl")):
        labels = found.labels[str(tmp_path / "Images" / scene.image)]
        objects = {obj.column: obj for obj in scene.objects}
        for column in COLUMNS:
            obj = objects.get(column)
            assert labels[f"{column}_present"] == int(obj is not None)
            for attribute in ("colour", "shape", "size", "row"):
                classes = SCENE_ATTRIBUTES[attribute]
                expected = classes.index(getattr(obj, attribute)) if obj else -1
                assert labels[f"{column}_{attribute}"] == expected


def test_a_folder_of_class_folders_is_one_class_head(tmp_path):
    for name, files in {"cats": ["a.jpg", "b.PNG"], "dogs": ["c.jpeg"], "notes": []}.items():
        (tmp_path / name).mkdir()
        for file in files:
            (tmp_path / name / file).write_bytes(b"x")
    (tmp_path / "dogs" / "readme.txt").write_text("not an image")
    found = labelled(str(tmp_path))
    [head] = found.heads
    assert head.classes == ("cats", "dogs")  # a folder without images is no class
    assert found.labels == {
        str(tmp_path / "cats" / "a.jpg"): {"class": 0},
        str(tmp_path / "cats" / "b.PNG"): {"class": 0},
        str(tmp_path / "dogs" / "c.jpeg"): {"class": 1},
    }


def test_a_csv_of_single_labels_is_one_head_and_of_several_is_one_yes_no_head_each(tmp_path):
    single = tmp_path / "single.csv"
    single.write_text("image,label\nx/a.jpg,cat\nb.jpg,dog\n")
    found = labelled(str(single))
    assert [h.classes for h in found.heads] == [("cat", "dog")]
    assert found.labels[str(tmp_path / "x" / "a.jpg")] == {"class": 0}
    multi = tmp_path / "multi.csv"
    multi.write_text("a.jpg,beach;dog\nb.jpg,dog\n")  # no header
    found = labelled(str(multi))
    assert [(h.group, h.classes) for h in found.heads] == [
        ("beach", ("no", "yes")),
        ("dog", ("no", "yes")),
    ]
    assert found.labels[str(tmp_path / "a.jpg")] == {"has_0": 1, "has_1": 1}
    assert found.labels[str(tmp_path / "b.jpg")] == {"has_0": 0, "has_1": 1}


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"bad.csv": "image,label\na.jpg\n"}, "bad.csv line 2: expected image,label"),
        ({"only/a.jpg": ""}, "at least two class folders of images (found 1)"),
    ],
)
def test_unusable_data_is_refused_in_one_line(tmp_path, layout, message):
    for name, text in layout.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    target = tmp_path / "bad.csv" if "bad.csv" in layout else tmp_path
    with pytest.raises(SettingsError, match=re.escape(message)):
        labelled(str(target))
