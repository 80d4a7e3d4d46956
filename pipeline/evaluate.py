"""``beamcap evaluate``: score a caption run against reference captions.

BLEU-1..4, ROUGE-L and CIDEr-D (COCO-caption definitions, via pycocoevalcap) and, given the
synthetic dataset's ``scenes.jsonl``, attribute accuracy: the share of images whose caption names
every object's shape, colour and position correctly (and nothing else), and what it is made of
(``count_accuracy`` per image; ``column``, ``colour``, ``shape``, ``size_accuracy`` per object).
Images are matched to references by file name. ``--captions`` is one committed run, or an
output root: then every committed run's latest caption of each image by one model
(``OutputRoot.read_captions``; ``--model-id`` when several models captioned there). Writes
``metrics.json`` into that directory (with each image's attribute scores, ``per_image``, which
``beamcap report`` shows beside it) and prints a table.

    beamcap evaluate --captions out/runs/RUN_ID --references data/synth/captions.txt \\
        --scenes data/synth/scenes.jsonl
    beamcap evaluate --captions out --model-id showtell-1a2b3c --references ...
"""

from __future__ import annotations

import collections
import json
import posixpath
import sys

import pyarrow.compute as pc

from models import storage
from models.configs import SettingsError
from models.datasets.caption_files import read_caption_file
from models.datasets.synthetic import read_scenes
from models.evaluation.attributes import (
    ACCURACY_KEYS,
    attribute_hits,
    attribute_scores,
    describes,
)
from models.evaluation.metrics import caption_scores
from pipeline.output_root import METRICS, OutputRoot, RunDir
from pipeline.settings import Parser


def read_scored_captions(uri: str, model_id: str | None = None):
    """(captions, {"run_id", "model_id"}) of a committed run directory, or of an output root:
    the latest caption of each image by one model across its committed runs."""
    if RunDir(uri).state()["state"] == "committed":
        captions, _, summary = RunDir(uri).read()
        return captions, {"run_id": summary["run_id"], "model_id": summary["model_id"]}
    captions = OutputRoot(uri).read_captions()
    models = sorted(set(captions.column("model_id").to_pylist()))
    if not models:
        raise SettingsError(f"--captions: {uri} is no committed run and holds none")
    if model_id is None and len(models) > 1:
        raise SettingsError(
            f"--captions: {uri} holds captions by {len(models)} models ({', '.join(models)}); "
            "choose one with --model-id"
        )
    model_id = model_id or models[0]
    if model_id not in models:
        raise SettingsError(f"--model-id: no captions by {model_id} under {uri}")
    mine = captions.filter(pc.equal(captions["model_id"], model_id))
    runs = sorted(set(mine.column("run_id").to_pylist()))
    return mine, {"run_id": ",".join(runs), "model_id": model_id}


def evaluate(
    run_dir: str, references_uri: str, scenes_uri: str | None = None, model_id: str | None = None
) -> dict:
    captions, summary = read_scored_captions(run_dir, model_id)
    references = collections.defaultdict(list)
    for image, caption in read_caption_file(references_uri).pairs:
        references[image].append(caption)
    rows = [
        (posixpath.basename(uri), caption)
        for uri, caption in zip(
            captions.column("image_uri").to_pylist(),
            captions.column("caption").to_pylist(),
            strict=True,
        )
    ]
    scored = [(name, caption) for name, caption in rows if name in references]
    metrics = {
        "run_id": summary["run_id"],
        "model_id": summary["model_id"],
        "images_captioned": len(rows),
        "images_scored": len(scored),
        "images_without_references": len(rows) - len(scored),
        **caption_scores([c for _, c in scored], [references[n] for n, _ in scored]),
    }
    if scenes_uri:
        scenes = {scene.image: scene for scene in read_scenes(scenes_uri)}
        judged = [(scenes[n], c) for n, c in rows if n in scenes]
        scores = attribute_scores(judged).items()
        metrics |= {key: value if judged else None for key, value in scores}
        metrics["images_with_scenes"] = len(judged)
        metrics["per_image"] = {n: image_verdict(scenes[n], c) for n, c in rows if n in scenes}
    return metrics


def image_verdict(scene, caption: str) -> dict:
    """One image's attribute scores: whether the caption ``describes`` the scene, and per
    ``ATTRIBUTE_FIELDS`` field [right, of] (objects; for count, the image)."""
    hits = attribute_hits(scene, caption)
    return {
        "describes": describes(scene, caption),
        **{f: [sum(v), len(v)] for f, v in hits.items()},
    }


def table(metrics: dict) -> str:
    keys = ["bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider_d", *ACCURACY_KEYS]
    lines = [f"{'metric':<20}{'value':>10}"]
    lines += [f"{key:<20}{metrics[key]:>10.4f}" for key in keys if metrics.get(key) is not None]
    lines.append(f"{'images scored':<20}{metrics['images_scored']:>10}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = Parser("beamcap evaluate", __doc__)
    parser.add_argument(
        "--captions",
        required=True,
        help="a committed run directory (OUTPUT/runs/RUN_ID), or an output root: the latest "
        "caption of each image across its committed runs",
    )
    parser.add_argument(
        "--model-id",
        default=None,
        help="with an output root: score this model's captions (needed when several models "
        "captioned there)",
    )
    parser.add_argument(
        "--references",
        required=True,
        help="reference captions: Flickr8k captions.txt / token file or COCO JSON",
    )
    parser.add_argument(
        "--scenes",
        default=None,
        help="synthetic ground truth (scenes.jsonl) for attribute accuracy",
    )
    parser.add_argument(
        "--output",
        default=None,
        help="where to write the metrics JSON (default: RUN_DIR/metrics.json)",
    )
    args = parser.parse_args(argv)
    metrics = evaluate(args.captions, args.references, args.scenes, args.model_id)
    output = args.output or storage.join(args.captions, METRICS)  # a run's or an output root's
    storage.write_text(output, json.dumps(metrics, indent=2))
    print(table(metrics))
    print(f"metrics written to {output}")
    return 0


if __name__ == "__main__":
    from pipeline.cli import main as beamcap

    sys.exit(beamcap(["evaluate", *sys.argv[1:]]))
