"""Labelled images for encoder pretraining: which image files, and their labels per head.

Three layouts, told apart by what ``root`` holds (local or ``gs://``):

- beamcap's synthetic scenes (``beamcap synth``: ``scenes.jsonl`` and ``Images/``): per column
  (left, middle, right) one head each for ``present``, ``colour``, ``shape``, ``size`` and
  ``row``; an empty column labels only ``present``;
- a CSV file ``image,label[;label...]`` (header optional; image paths relative to the CSV's
  folder): one softmax head ``class`` when every image has one label, else one yes/no head per
  label (multi-label);
- a folder of class folders, as ImageNet lays it out (``ROOT/CLASS/*.jpg``): one head ``class``.

A label of -1 means "not labelled for this head": it adds nothing to that head's loss or
accuracy.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import posixpath

from models import storage
from models.configs import SettingsError
from models.datasets.synthetic import COLOURS, COLUMNS, ROWS, SHAPES, SIZES, read_scenes

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".avif")
SCENE_ATTRIBUTES = {
    "present": ("no", "yes"),
    "colour": tuple(COLOURS),
    "shape": SHAPES,
    "size": SIZES,
    "row": ROWS,
}


@dataclasses.dataclass(frozen=True)
class Head:
    """One softmax output: its ``name`` (a Keras output name), its ``classes``, and the
    ``group`` its held-out accuracy is reported under (the attribute, for scene heads)."""

    name: str
    classes: tuple[str, ...]
    group: str


@dataclasses.dataclass(frozen=True)
class LabelSet:
    """What ``labelled`` found: the heads, and per image file its label index per head."""

    kind: str  # "scenes", "folders" or "csv"
    heads: tuple[Head, ...]
    labels: dict[str, dict[str, int]]  # image URI -> {head name: class index, -1 unlabelled}

    def describe(self) -> str:
        groups = sorted({head.group for head in self.heads})
        return f"{len(self.labels)} images of {self.kind}, heads: {', '.join(groups)}"


def labelled(root: str) -> LabelSet:
    """The labelled images under ``root``: a synthetic dataset, a CSV or a folder of class
    folders (see the module docstring). SettingsError, in one line, for anything else."""
    if root.endswith(".csv"):
        return _from_csv(root)
    if storage.exists(storage.join(root, "scenes.jsonl")):
        return _from_scenes(root)
    return _from_folders(root)


def _from_scenes(root: str) -> LabelSet:
    heads = tuple(
        Head(f"{column}_{attribute}", classes, attribute)
        for column in COLUMNS
        for attribute, classes in SCENE_ATTRIBUTES.items()
    )
    labels = {}
    for scene in read_scenes(storage.join(root, "scenes.jsonl")):
        row = {head.name: -1 for head in heads}
        row |= {f"{column}_present": 0 for column in COLUMNS}
        for obj in scene.objects:
            row[f"{obj.column}_present"] = 1
            for attribute, classes in SCENE_ATTRIBUTES.items():
                if attribute != "present":
                    row[f"{obj.column}_{attribute}"] = classes.index(getattr(obj, attribute))
        labels[storage.join(root, "Images", scene.image)] = row
    return LabelSet("scenes", heads, labels)


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _from_folders(root: str) -> LabelSet:
    classes = tuple(name for name in storage.entries(root) if not _is_image(name))
    files = {
        name: [f for f, _ in storage.files_under(storage.join(root, name)) if _is_image(f)]
        for name in classes
    }
    classes = tuple(name for name in classes if files[name])
    if len(classes) < 2:
        raise SettingsError(
            f"--data: {root} is not a synthetic dataset (no scenes.jsonl), a CSV, or a folder "
            f"of at least two class folders of images (found {len(classes)})"
        )
    head = Head("class", classes, "class")
    labels = {f: {"class": index} for index, name in enumerate(classes) for f in files[name]}
    return LabelSet("folders", (head,), labels)


def _from_csv(path: str) -> LabelSet:
    rows = list(csv.reader(io.StringIO(storage.read_text(path))))
    if rows and [cell.strip().lower() for cell in rows[0][:2]] == ["image", "label"]:
        rows = rows[1:]
    folder = posixpath.dirname(path) if storage.is_gcs(path) else path.rpartition("/")[0] or "."
    images = {}
    for number, row in enumerate(rows, start=2):
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise SettingsError(f"--data: {path} line {number}: expected image,label[;label...]")
        names = tuple(label.strip() for label in row[1].split(";") if label.strip())
        images[storage.join(folder, row[0].strip())] = names
    if not images:
        raise SettingsError(f"--data: {path} lists no images")
    classes = tuple(sorted({label for names in images.values() for label in names}))
    if all(len(names) == 1 for names in images.values()):
        head = Head("class", classes, "class")
        labels = {uri: {"class": classes.index(names[0])} for uri, names in images.items()}
        return LabelSet("csv", (head,), labels)
    heads = tuple(Head(f"has_{i}", ("no", "yes"), label) for i, label in enumerate(classes))
    labels = {
        uri: {head.name: int(head.group in names) for head in heads}
        for uri, names in images.items()
    }
    return LabelSet("csv", heads, labels)
