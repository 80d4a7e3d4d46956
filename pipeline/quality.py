"""``beamcap quality``: prove that the captions describe the scenes, both training phases, offline.

synth -> pretrain (when the preset has a ``pretrain`` section: the encoder learns the scenes'
labels) -> features ``--with-images`` -> train phase 1 (the decoder on the encoder's features)
-> train phase 2 (``--init-from`` phase 1 ``--train-encoder``: encoder and decoder together) ->
caption (the held-out test images, the caption job unchanged) -> evaluate -> report,
each step the real command with the ``quality`` preset. Phase 2 gets the time the other steps
leave of ``--minutes``. Writes ``WORKDIR/quality.json`` (machine, date, minutes per step, images
seen, held-out attribute accuracy, BLEU-4, CIDEr-D, the accuracy-versus-images-seen curve) and
the run's report with the learning curve.

    beamcap quality --workdir data/quality --minutes 85      # what `make quality` runs

Hardware: training runs on Keras' TensorFlow backend (tf.data, GradientTape); when TensorFlow
sees a GPU, the preset's ``gpu`` section overrides the CPU sizes.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import sys
from pathlib import Path

import yaml

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from models.backend import load_keras  # noqa: E402
from models.captioner.manifest import ENCODER_WEIGHTS  # noqa: E402
from models.configs import setting  # noqa: E402
from models.evaluation.attributes import ACCURACY_KEYS, ATTRIBUTE_FIELDS  # noqa: E402
from pipeline import features, pretrain, synth, train  # noqa: E402
from pipeline.demo import (  # noqa: E402
    Steps,
    Walkthrough,
    caption_and_score,
    features_flags,
    held_out_images,
    parse_walkthrough,
)
from pipeline.settings import as_flags  # noqa: E402

RESERVE_MINUTES = 4.0  # caption, evaluate and report of ~1,200 images, plus phase 2's last epoch


def machine() -> dict:
    """What the run ran on, for quality.json."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "gpus": []}
    try:
        load_keras()  # quietly: TensorFlow's C++ start-up lines unless --log-level debug
        import tensorflow as tf

        info["gpus"] = [
            tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
            for gpu in tf.config.list_physical_devices("GPU")
        ]
    except Exception:  # noqa: BLE001 - a description, never a reason to fail
        pass
    return info


def with_gpu_overrides(preset: dict, gpus: list) -> dict:
    if not gpus:
        return preset
    merged = {
        key: dict(value) if isinstance(value, dict) else value for key, value in preset.items()
    }
    for section, values in (preset.get("gpu") or {}).items():
        merged.setdefault(section, {}).update(values)
    return merged


def reusable(data: Path, feats: Path, images: int, feature_settings: dict) -> bool:
    """True when ``data`` holds ``images`` scenes and ``feats`` their finished features
    (dataset.json is written last) with images, at the preset's size."""
    try:
        scenes = sum(1 for line in (data / "scenes.jsonl").open() if line.strip())
        dataset = json.loads((feats / "dataset.json").read_text())
    except OSError:
        return False
    return (
        scenes == images
        and dataset["settings"].get("with_images") is True
        and dataset["encoder"]["image_size"] == feature_settings.get("image_size")
    )


def curve(metrics: dict, phase: int) -> list[dict]:
    key = "images_seen" if phase == 2 else "captions_seen"
    return [
        {
            "phase": phase,
            key: int(row[key]),
            "minutes": row.get("minutes"),
            **{f"val_{key}": row.get(f"val_{key}") for key in ACCURACY_KEYS},
            "val_bleu4": row.get("val_bleu4"),
            "val_loss": row.get("val_loss"),
        }
        for row in metrics["history"]
    ]


@dataclasses.dataclass(frozen=True)
class QualitySettings(Walkthrough):
    workdir: str = setting("data/quality", "where every step writes")
    minutes: float = setting(
        85.0,
        "time budget of the whole run; phase 2 gets what the other steps leave",
    )
    reuse_data: bool = setting(
        False,
        "keep WORKDIR's synthetic images and features when a previous run completed them "
        "(same preset): start at phase 1",
    )


class Workdir:
    """Where each step of a quality run writes, under ``--workdir``."""

    def __init__(self, root: Path):
        self.root = root
        self.data, self.features = root / "synth", root / "features"
        self.pretrained = root / "pretrained"
        self.phase1, self.phase2 = root / "model-phase1", root / "model-phase2"
        self.captions, self.summary = root / "captions", root / "quality.json"
        self.preset = root / "preset.yaml"  # after the GPU overrides: what both phases read


def run_steps(args, step: Steps, preset: dict, work: Workdir, images: int) -> Path:
    """synth and features (or reused), both training phases in what the budget leaves, then
    caption and score the held-out images; returns the scored run's directory."""
    synth_settings, feature_settings = preset.get("synth", {}), dict(preset.get("features", {}))
    reuse = args.reuse_data and reusable(work.data, work.features, images, feature_settings)
    if reuse:
        print(f"\n=== synth, features: reusing {work.data} and {work.features}", flush=True)
    else:
        seed = str(synth_settings.get("seed", 0))
        synth_flags = ["--output", str(work.data), "--images", str(images), "--seed", seed]
        step("synth", synth.main, synth_flags)
    if "pretrain" in preset and not reuse:
        pretrain_flags = ["--data", str(work.data), "--output", str(work.pretrained)]
        step("pretrain", pretrain.main, [*pretrain_flags, *as_flags(preset["pretrain"])])
        feature_settings["encoder_weights"] = str(work.pretrained / ENCODER_WEIGHTS)
    step(
        "features",
        lambda flags: None if reuse else features.run(flags),
        [
            *features_flags(work.data, work.features, args.runner),
            "--with-images",
            *as_flags(feature_settings),
        ],
    )
    work.preset.write_text(yaml.safe_dump({k: v for k, v in preset.items() if k != "gpu"}))
    scenes = str(work.data / "scenes.jsonl")
    common = ["--data", str(work.features), "--config", str(work.preset), "--val-scenes", scenes]
    step("phase1", train.main, [*common, "--output", str(work.phase1)])
    left = args.minutes - step.elapsed() - RESERVE_MINUTES
    if left < 1:
        print(f"warning: only {left:.1f} minutes left for phase 2; giving it 1", flush=True)
    phase2_flags = [
        *as_flags({**preset.get("phase2", {}), "time_budget_minutes": round(max(left, 1.0), 2)}),
        "--init-from",
        str(work.phase1),
    ]
    step("phase2", train.main, [*common, "--output", str(work.phase2), *phase2_flags])
    caption_flags = ["--runner", args.runner, *as_flags(preset.get("caption", {}))]
    held_out = held_out_images(work.data, feature_settings)
    run_dir, _ = caption_and_score(
        step, work.data, work.phase2, work.captions, held_out, caption_flags
    )
    return run_dir


def quality_result(args, step: Steps, hardware: dict, preset: dict, work: Workdir, images, run_dir):
    """What quality.json records: the budget, each step's minutes, both phases' figures, the
    held-out scores and the learning curve."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    first = json.loads((work.phase1 / "metrics.json").read_text())
    second = json.loads((work.phase2 / "metrics.json").read_text())
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": hardware,
        "minutes_budget": args.minutes,
        "minutes_total": round(step.elapsed(), 1),
        "minutes_per_step": step.minutes,
        "synthetic_images": images,
        "image_size": preset.get("features", {}).get("image_size"),
        "phase1_captions_seen": first.get("captions_seen"),
        "phase2_images_seen": second.get("images_seen"),
        "phase2_images_per_second": round(
            second["images_seen"] / max(second["history"][-1]["minutes"] * 60, 1e-9), 1
        )
        if second.get("history")
        else None,
        "phase2_stopped_by_time_budget": second.get("stopped_by_time_budget"),
        "held_out": {
            key: metrics.get(key)
            for key in (
                "images_scored",
                *ACCURACY_KEYS,
                "bleu4",
                "cider_d",
                "rouge_l",
                "images_with_scenes",
            )
        },
        "target_attribute_accuracy": 0.9,
        "curve": curve(first, 1) + curve(second, 2),
        "model": str(work.phase2),
        "report": str((run_dir / "report.html").resolve()),
    }


def print_result(result: dict, work: Workdir) -> None:
    hardware, held = result["machine"], result["held_out"]
    print("\n=== beamcap quality: done")
    print(f"machine             {hardware['cpu']} x{hardware['cores']}  gpus {hardware['gpus']}")
    print(f"minutes per step    {result['minutes_per_step']}  total {result['minutes_total']}")
    print(
        f"phase 2             {result['phase2_images_seen']} images seen "
        f"({result['phase2_images_per_second']} images/s)"
    )
    print(
        "curve (phase 2)     images seen, minutes: validation attribute accuracy "
        f"({', '.join(ATTRIBUTE_FIELDS)})"
    )
    for point in (point for point in result["curve"] if point["phase"] == 2):
        parts = ", ".join(f"{point[f'val_{field}_accuracy']:.3f}" for field in ATTRIBUTE_FIELDS)
        print(
            f"    {point['images_seen']:>9}  {point['minutes']:5.1f} min:  "
            f"{point['val_attribute_accuracy']:.3f}  ({parts})"
        )
    print(
        f"held-out            attribute accuracy {held['attribute_accuracy']:.4f} "
        f"(target 0.90), BLEU-4 {held['bleu4']:.4f}, CIDEr-D {held['cider_d']:.4f} "
        f"on {held['images_scored']} images"
    )
    parts = ", ".join(f"{field} {held[f'{field}_accuracy']:.3f}" for field in ATTRIBUTE_FIELDS)
    print(f"held-out, in parts  {parts}")
    print(f"report              {result['report']}")
    print(f"summary             {work.summary.resolve()}")


def main(argv: list[str] | None = None) -> int:
    job = parse_walkthrough(QualitySettings, "quality", __doc__, argv)
    args = job.settings
    step = Steps(job.log_level)  # the budget counts from here
    hardware = machine()
    preset = with_gpu_overrides(job.preset, hardware["gpus"])
    work = Workdir(Path(args.workdir))
    work.root.mkdir(parents=True, exist_ok=True)
    print(f"beamcap quality: {args.minutes:g} minutes on {hardware}", flush=True)
    images = args.images or preset.get("synth", {}).get("images", 60000)
    run_dir = run_steps(args, step, preset, work, images)
    result = quality_result(args, step, hardware, preset, work, images, run_dir)
    work.summary.write_text(json.dumps(result, indent=2))
    print_result(result, work)
    return 0


if __name__ == "__main__":
    from pipeline.cli import main as beamcap

    sys.exit(beamcap(["quality", *sys.argv[1:]]))
