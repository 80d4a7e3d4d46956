"""Attribute accuracy: how far a caption describes a synthetic scene (models.datasets.synthetic).

``parse_caption`` reads the generator's own grammar back into objects and relations;
``describes`` is the whole-scene verdict and ``attribute_hits`` its parts (count, column,
colour, shape, size), which move on a learning curve long before the whole does.
``scene_judge`` turns a scenes.jsonl into the trainer's judge of validation captions.
"""

from __future__ import annotations

import re

from models.captioner.vocabulary import tokenize
from models.datasets.synthetic import COLOURS, COLUMN_PHRASES, SHAPES, SIZES, Scene, read_scenes

_OBJECT = re.compile(
    rf"\b(?P<size>{'|'.join(SIZES)}) (?P<colour>{'|'.join(COLOURS)}) "
    rf"(?P<shape>{'|'.join(SHAPES)}) (?P<where>{'|'.join(COLUMN_PHRASES.values())})"
    r"(?: (?P<relation>above|below))?"
)
_COLUMN_OF = {phrase: column for column, phrase in COLUMN_PHRASES.items()}


def parse_caption(caption: str) -> tuple[list[dict], list[tuple[int, str, int]]]:
    """The generator's grammar back to ``objects`` (dicts of size, colour, shape, column) and
    ``relations`` (``(i, 'above'|'below', j)``: object i is above/below object j)."""
    text = " ".join(tokenize(caption))
    objects, relations = [], []
    for match in _OBJECT.finditer(text):
        objects.append(
            {
                "size": match["size"],
                "colour": match["colour"],
                "shape": match["shape"],
                "column": _COLUMN_OF[match["where"]],
            }
        )
        if match["relation"]:
            relations.append((len(objects) - 1, match["relation"], len(objects)))
    return objects, relations


def describes(scene: Scene, caption: str) -> bool:
    """True when the caption names every object's shape, colour and column, and nothing else,
    and each relation it states holds."""
    objects, relations = parse_caption(caption)
    named = sorted((o["column"], o["shape"], o["colour"]) for o in objects)
    if named != sorted((o.column, o.shape, o.colour) for o in scene.objects):
        return False
    truth = {o.column: o for o in scene.objects}
    for i, word, j in relations:
        if j >= len(objects):
            return False
        upper, lower = (i, j) if word == "above" else (j, i)
        rows = (truth[objects[upper]["column"]].row, truth[objects[lower]["column"]].row)
        if rows != ("top", "bottom"):
            return False
    return True


ATTRIBUTE_FIELDS = ("count", "column", "colour", "shape", "size")
# What ``attribute_scores`` returns, scene-level first; validation adds a ``val_`` prefix.
ACCURACY_KEYS = ("attribute_accuracy", *(f"{field}_accuracy" for field in ATTRIBUTE_FIELDS))


def attribute_hits(scene: Scene, caption: str) -> dict[str, list[bool]]:
    """What ``describes`` is made of, for a learning curve that moves before it does: per
    ``ATTRIBUTE_FIELDS`` field, one verdict per object of the scene (``count``: one per image,
    whether the caption names as many objects as the scene holds). An object's ``colour``,
    ``shape`` and ``size`` count as right when the caption names an object in its column with
    that value (chance: 1/6, 1/4, 1/2)."""
    objects, _ = parse_caption(caption)
    named = {o["column"]: o for o in objects}
    hits: dict[str, list[bool]] = {field: [] for field in ATTRIBUTE_FIELDS}
    hits["count"].append(len(objects) == len(scene.objects))
    for truth in scene.objects:
        found = named.get(truth.column)
        hits["column"].append(found is not None)
        for field in ("colour", "shape", "size"):
            hits[field].append(found is not None and found[field] == getattr(truth, field))
    return hits


def attribute_scores(pairs: list[tuple[Scene, str]]) -> dict[str, float]:
    """Over ``(scene, caption)`` pairs: ``attribute_accuracy``, the share of images whose caption
    ``describes`` its scene, and ``FIELD_accuracy`` for each of ``ATTRIBUTE_FIELDS`` from
    ``attribute_hits`` (the learning curve moves in these long before it moves in the first).
    NaN for no pairs."""
    hits: dict[str, list[bool]] = {field: [] for field in ATTRIBUTE_FIELDS}
    for scene, caption in pairs:
        for field, values in attribute_hits(scene, caption).items():
            hits[field] += values
    verdicts = {"attribute": [describes(scene, caption) for scene, caption in pairs], **hits}
    return {
        f"{name}_accuracy": sum(values) / len(values) if values else float("nan")
        for name, values in verdicts.items()
    }


def scene_judge(scenes_file: str):
    """The trainer's judge for synthetic validation images: (image ids, captions) ->
    ``attribute_scores`` of the pairs whose image is in ``scenes_file`` (scenes.jsonl)."""
    scenes = {scene.image: scene for scene in read_scenes(scenes_file)}

    def judge(image_ids: list[str], captions: list[str]) -> dict[str, float]:
        pairs = zip(image_ids, captions, strict=True)
        return attribute_scores([(scenes[i], c) for i, c in pairs if i in scenes])

    return judge
