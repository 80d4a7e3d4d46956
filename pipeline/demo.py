"""``beamcap demo``: the whole product on beamcap's own synthetic dataset, offline.

synth -> pretrain (the encoder learns the scenes' labels) -> features -> train -> quantize (the
CPU engines, int8 and bf16) -> caption (the held-out test images plus a few broken files) ->
evaluate -> report, each step the real command with the ``demo`` preset, timed. Prints the
headline metrics and the path of the HTML report.

    beamcap demo --workdir data/demo        # what `make demo` runs
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
import time
from pathlib import Path

from models.captioner.manifest import ENCODER_WEIGHTS
from models.configs import setting
from models.datasets.splits import split_for
from models.datasets.synthetic import read_scenes
from pipeline import caption, evaluate, features, pretrain, quantize, report, synth, train
from pipeline.output_root import METRICS, REPORT, OutputRoot
from pipeline.settings import parse_job


def write_broken_files(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {"empty.jpg": b"", "not-an-image.jpg": b"just text", "truncated.jpg": b"\xff\xd8\xff"}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return [folder / name for name in files]


@dataclasses.dataclass(frozen=True)
class Walkthrough:
    """The flags every walk-through has (beside --config, its preset, and --workdir)."""

    images: int = setting(None, "synthetic images (default: the preset's)", type=int)
    runner: str = setting("DirectRunner", "Beam runner for the two Beam jobs")


def parse_walkthrough(settings_type, name: str, doc: str, argv: list[str] | None):
    """``beamcap NAME``'s flags: ``settings_type`` (a :class:`Walkthrough`), with the preset
    NAME as every step's default --config."""
    return parse_job(
        settings_type,
        sys.argv[1:] if argv is None else argv,
        prog=f"beamcap {name}",
        description=doc,
        section=name,
        beam=False,
        steps_preset=name,
    )


@dataclasses.dataclass(frozen=True)
class DemoSettings(Walkthrough):
    workdir: str = setting("data/demo", "where every step writes")
    encoder_weights: str = setting(
        None,
        "InceptionV3 weights for the features step: imagenet on a connected machine, a "
        "weights file, or random:SEED; given, the pretrain step is skipped (default: the "
        "weights the pretrain step writes)",
        type=str,
    )


class Steps:
    """Runs a walk-through's steps, each a command's ``main(flags)``: a header line, the run's
    ``--log-level``, and the minutes each took (``minutes``; ``elapsed()`` since the start)."""

    def __init__(self, log_level: str):
        self.log_level, self.started, self.minutes = log_level, time.time(), {}

    def elapsed(self) -> float:
        return (time.time() - self.started) / 60

    def __call__(self, name: str, function, flags: list):
        print(f"\n=== {name} ({self.elapsed():.1f} min in)", flush=True)
        begun = time.time()
        result = function([*flags, "--log-level", self.log_level])
        self.minutes[name] = round((time.time() - begun) / 60, 2)
        return result


def features_flags(data: Path, feats: Path, runner: str) -> list[str]:
    """The features job over the synthetic dataset in ``data``, into ``feats`` (overwritten)."""
    inputs = ["--images", str(data / "Images"), "--captions", str(data / "captions.txt")]
    return [*inputs, "--output", str(feats), "--overwrite", "--runner", runner]


def held_out_images(data: Path, feature_settings: dict) -> list[Path]:
    """The synthetic dataset's test split, as the features job drew it from ``feature_settings``."""
    fractions = {k: feature_settings.get(k, 0.1) for k in ("val_fraction", "test_fraction")}
    return [
        data / "Images" / scene.image
        for scene in read_scenes(str(data / "scenes.jsonl"))
        if split_for(scene.image, **fractions) == "test"
    ]


def caption_and_score(step, data: Path, model: Path, out: Path, inputs: list[Path], flags: list):
    """caption ``inputs`` with ``model`` into ``out`` -> evaluate against ``data``'s captions and
    scenes -> report, each through ``step(name, main, flags)``: ``(run directory, summary)``."""
    listing = out.parent / "caption-inputs.txt"
    listing.write_text("".join(f"{path.resolve()}\n" for path in inputs))
    summary = step(
        "caption",
        caption.run,
        ["--input-list", str(listing), "--model", str(model), "--output", str(out), *flags],
    )
    run_dir = Path(OutputRoot(str(out)).run(summary["run_id"]).path)
    references = ["--references", str(data / "captions.txt")]
    scenes = ["--scenes", str(data / "scenes.jsonl")]
    step("evaluate", evaluate.main, ["--captions", str(run_dir), *references, *scenes])
    step("report", report.main, [str(run_dir), "--model", str(model)])
    return run_dir, summary


def main(argv: list[str] | None = None) -> int:
    job = parse_walkthrough(DemoSettings, "demo", __doc__, argv)
    args, preset, config = job.settings, job.preset, job.config
    work = Path(args.workdir)
    data, feats, model, out = work / "synth", work / "features", work / "model", work / "captions"
    step = Steps(job.log_level)
    synth_settings = preset.get("synth", {})
    step(
        "synth",
        synth.main,
        [
            "--output",
            str(data),
            "--images",
            str(args.images or synth_settings.get("images", 1000)),
            "--seed",
            str(synth_settings.get("seed", 0)),
        ],
    )
    weights = args.encoder_weights
    if not weights:
        pretrained = work / "pretrained"
        flags = ["--data", str(data), "--output", str(pretrained), "--config", config]
        step("pretrain", pretrain.main, flags)
        weights = str(pretrained / ENCODER_WEIGHTS)
    step(
        "features",
        features.run,
        [
            *features_flags(data, feats, args.runner),
            "--config",
            config,
            "--encoder-weights",
            weights,
        ],
    )
    step("train", train.main, ["--data", str(feats), "--output", str(model), "--config", config])
    calibration = ["--calibration", str(data / "Images"), "--config", config]
    if importlib.util.find_spec("nncf"):
        step("quantize", quantize.main, ["--model", str(model), *calibration])
    else:
        print(f"\n=== quantize skipped: {quantize.MISSING_NNCF}; captions run fp32")

    inputs = [
        *held_out_images(data, preset.get("features", {})),
        *write_broken_files(work / "broken"),
    ]
    flags = ["--runner", args.runner, "--config", config]
    run_dir, summary = caption_and_score(step, data, model, out, inputs, flags)

    metrics = json.loads((run_dir / METRICS).read_text())
    training = json.loads((model / "metrics.json").read_text())
    encoder = summary.get("encoder") or json.loads((model / "manifest.json").read_text())["encoder"]
    warning = report.encoder_warning(encoder)
    print("\n=== beamcap demo: done")
    if warning:
        print(f"\n{'!' * 100}\nWARNING: {warning}\n{'!' * 100}\n")
    print(f"minutes per step    {step.minutes}  total {step.elapsed():.1f}")
    print(
        f"captioned           {summary['counts']['captioned']} of "
        f"{summary['counts']['matched']} (failed: {summary['counts']['failed']})"
    )
    print(f"train / val loss    {training['train_loss']:.3f} / {training['val_loss']:.3f}")
    for key in ("bleu4", "cider_d", "rouge_l", "attribute_accuracy"):
        print(f"{key:<20}{metrics[key]:.4f}")
    print(f"encoder             {report.describe_encoder(encoder)}")
    print(f"engine              {summary['precision']} (--precision auto)")
    print(f"report              {(run_dir / REPORT).resolve()}")
    if warning:
        print("WARNING: random, untrained encoder: the captions above do not describe the images")
    print(REAL_CAPTIONS)
    return 0


REAL_CAPTIONS = (
    "Captions of photos come from the published im2txt model: "
    "beamcap caption --input photos/ --model data/im2txt --output out/captions, "
    "once it is imported with\n"
    "  beamcap import-im2txt --checkpoint model.ckpt-2000000 --vocab word_counts.txt "
    "--output data/im2txt"
)


if __name__ == "__main__":
    from pipeline.cli import main as beamcap

    sys.exit(beamcap(["demo", *sys.argv[1:]]))
