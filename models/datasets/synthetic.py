"""beamcap's own captioned dataset: procedurally drawn scenes with a known ground truth.

Each image holds 1-3 objects, one per column (left, middle, right), each high or low in its
column, with a shape, a colour and a size, on a textured, noisy background. Five captions per
image describe every object's size, colour, shape and column, in varied phrasings; some add the
vertical relation between two objects ("above", "below"). ``models.evaluation.attributes`` reads
this grammar back into objects, which is how generated captions are scored against the scene.

Layout on disk (Flickr8k's): ``Images/*.jpg``, ``captions.txt`` (CSV, header ``image,caption``)
and ``scenes.jsonl`` (one JSON object per image: file name, size, objects).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("circle", "square", "triangle", "star")
COLOURS = {
    "red": (214, 39, 40),
    "green": (44, 160, 44),
    "blue": (31, 90, 220),
    "yellow": (245, 205, 30),
    "purple": (148, 73, 189),
    "orange": (255, 127, 14),
}
SIZES = ("small", "large")
COLUMNS = ("left", "middle", "right")
ROWS = ("top", "bottom")
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
COLUMN_PHRASES = {"left": "on the left", "middle": "in the middle", "right": "on the right"}
_RADIUS = {"small": 0.09, "large": 0.16}  # fraction of the image's shorter side


@dataclasses.dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    column: str
    row: str

    def phrase(self) -> str:
        return f"a {self.size} {self.colour} {self.shape}"


@dataclasses.dataclass(frozen=True)
class Scene:
    image: str
    width: int
    height: int
    objects: tuple[SceneObject, ...]  # ordered left to right

    def to_json(self) -> str:
        return json.dumps(
            {
                "image": self.image,
                "width": self.width,
                "height": self.height,
                "objects": [dataclasses.asdict(o) for o in self.objects],
            }
        )

    @classmethod
    def from_json(cls, line: str) -> Scene:
        data = json.loads(line)
        objects = tuple(SceneObject(**o) for o in data["objects"])
        return cls(data["image"], data["width"], data["height"], objects)


# ----------------------------------------------------------------------------- scenes and captions


def random_scene(rng: np.random.Generator, name: str, width: int, height: int) -> Scene:
    count = int(rng.integers(1, 4))
    columns = sorted(rng.choice(len(COLUMNS), count, replace=False))
    objects = tuple(
        SceneObject(
            shape=SHAPES[rng.integers(len(SHAPES))],
            colour=list(COLOURS)[rng.integers(len(COLOURS))],
            size=SIZES[rng.integers(len(SIZES))],
            column=COLUMNS[column],
            row=ROWS[rng.integers(len(ROWS))],
        )
        for column in columns
    )
    return Scene(name, width, height, objects)


def _placed(scene: Scene) -> str:
    parts = [f"{o.phrase()} {COLUMN_PHRASES[o.column]}" for o in scene.objects]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _relation(scene: Scene) -> str | None:
    """'X on the left above Y on the right' for the first two objects in different rows."""
    for first, second in zip(scene.objects, scene.objects[1:], strict=False):
        if first.row != second.row:
            word = "above" if first.row == "top" else "below"
            rest = [o for o in scene.objects if o not in (first, second)]
            extra = "".join(f" and {o.phrase()} {COLUMN_PHRASES[o.column]}" for o in rest)
            return (
                f"{first.phrase()} {COLUMN_PHRASES[first.column]} {word} "
                f"{second.phrase()} {COLUMN_PHRASES[second.column]}{extra}"
            )
    return None


def captions_for(scene: Scene, rng: np.random.Generator, count: int = 5) -> list[str]:
    """``count`` captions in varied phrasings, every one naming each object fully."""
    placed = _placed(scene)
    n = len(scene.objects)
    noun = "shape" if n == 1 else "shapes"
    templates = [
        placed,
        f"{COUNT_WORDS[n]} {noun}: {placed}",
        f"there is {placed}",
        f"a picture of {placed}",
        f"{placed} on a textured background",
        f"{COUNT_WORDS[n]} {noun} on a noisy background, {placed}",
    ]
    relation = _relation(scene)
    if relation:
        templates += [relation, f"{COUNT_WORDS[n]} {noun}: {relation}"]
    picks = rng.choice(len(templates), size=count, replace=len(templates) < count)
    return [templates[i][0].upper() + templates[i][1:] + "." for i in picks]


# ----------------------------------------------------------------------------------- drawing


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Low-frequency colour blotches plus fine grain, in muted tones."""
    base = rng.uniform(90, 200, 3)
    coarse = rng.normal(0, 28, (max(2, height // 40), max(2, width // 40), 3)) + base
    image = Image.fromarray(np.clip(coarse, 0, 255).astype(np.uint8)).resize(
        (width, height), Image.Resampling.BILINEAR
    )
    grain = rng.normal(0, 14, (height // 2, width // 2)).astype(np.float32)
    grain_image = Image.fromarray(np.clip(grain + 128, 0, 255).astype(np.uint8)).resize(
        (width, height), Image.Resampling.NEAREST
    )
    pixels = np.asarray(image, np.int16) + (np.asarray(grain_image, np.int16)[..., None] - 128)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple]:
    if shape == "square":
        corners = [np.pi / 4 + k * np.pi / 2 for k in range(4)]
        return [(cx + r * np.cos(a + angle), cy + r * np.sin(a + angle)) for a in corners]
    if shape == "triangle":
        corners = [-np.pi / 2 + k * 2 * np.pi / 3 for k in range(3)]
        return [(cx + r * np.cos(a + angle), cy + r * np.sin(a + angle)) for a in corners]
    points = []  # star: five points
    for k in range(10):
        radius = r if k % 2 == 0 else r * 0.45
        a = -np.pi / 2 + k * np.pi / 5 + angle
        points.append((cx + radius * np.cos(a), cy + radius * np.sin(a)))
    return points


def draw_scene(scene: Scene, rng: np.random.Generator) -> Image.Image:
    image = _background(rng, scene.width, scene.height)
    draw = ImageDraw.Draw(image)
    short = min(scene.width, scene.height)
    for obj in scene.objects:
        r = short * _RADIUS[obj.size] * rng.uniform(0.9, 1.1)
        column = COLUMNS.index(obj.column)
        cx = scene.width * (column + 0.5) / 3 + rng.uniform(-0.06, 0.06) * scene.width
        cy = scene.height * (0.3 if obj.row == "top" else 0.7) + rng.uniform(-0.05, 0.05) * short
        shade = np.clip(np.array(COLOURS[obj.colour]) + rng.integers(-18, 19, 3), 0, 255)
        fill = tuple(int(v) for v in shade)
        if obj.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        else:
            draw.polygon(_polygon(obj.shape, cx, cy, r, rng.uniform(-0.2, 0.2)), fill=fill)
    return image.filter(ImageFilter.SMOOTH) if rng.random() < 0.5 else image


# --------------------------------------------------------------------------------- the dataset


@dataclasses.dataclass(frozen=True)
class SynthConfig:
    images: int = 1000
    seed: int = 0
    min_size: tuple[int, int] = (320, 240)
    max_size: tuple[int, int] = (640, 480)
    jpeg_quality: int = 90


def make_example(config: SynthConfig, index: int) -> tuple[Scene, list[str], bytes]:
    """Example ``index`` of the dataset: the same for a seed whatever the order or process."""
    rng = np.random.default_rng([config.seed, index])
    width = int(rng.integers(config.min_size[0], config.max_size[0] + 1))
    height = int(rng.integers(config.min_size[1], config.max_size[1] + 1))
    scene = random_scene(rng, f"synth_{config.seed}_{index:06d}.jpg", width, height)
    buffer = io.BytesIO()
    draw_scene(scene, rng).save(buffer, format="JPEG", quality=config.jpeg_quality)
    return scene, captions_for(scene, rng), buffer.getvalue()


def _make_example(args):
    return make_example(*args)


def generate(config: SynthConfig, output: str, *, processes: int | None = None) -> dict:
    """Writes the dataset under ``output``; returns counts. ``processes``: drawing workers
    (default: one per core; 1 draws in this process)."""
    root = Path(output)
    (root / "Images").mkdir(parents=True, exist_ok=True)
    tasks = [(config, index) for index in range(config.images)]
    captions = 0
    with contextlib.ExitStack() as stack:
        if processes == 1:
            examples = map(_make_example, tasks)
        else:
            pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(processes))
            examples = pool.imap(_make_example, tasks, chunksize=16)
        caption_file = stack.enter_context(
            open(root / "captions.txt", "w", newline="", encoding="utf-8")
        )
        scene_file = stack.enter_context(open(root / "scenes.jsonl", "w", encoding="utf-8"))
        writer = csv.writer(caption_file)
        writer.writerow(["image", "caption"])
        for scene, texts, jpeg in examples:
            (root / "Images" / scene.image).write_bytes(jpeg)
            writer.writerows([scene.image, text] for text in texts)
            scene_file.write(scene.to_json() + "\n")
            captions += len(texts)
    return {"images": config.images, "captions": captions, "output": str(root)}


def read_scenes(path: str) -> Iterator[Scene]:
    from models import storage

    for line in storage.read_text(path).splitlines():
        if line.strip():
            yield Scene.from_json(line)
