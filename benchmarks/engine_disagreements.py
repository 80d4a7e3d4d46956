"""Where an engine's best captions part from the fp32 model's, on a bundle trained on
``beamcap synth`` scenes: the same caption, the same objects in other words (one of the
grammar's phrasings), or other objects (and which attribute: shape, colour, size, column).

The images are those ``beamcap quantize`` checks the engines on (the sample after its
calibration images, decoded as the caption job decodes them); the scenes' grammar is read back
by ``models.evaluation.attributes.parse_caption``.

    python benchmarks/engine_disagreements.py [--model data/demo/model]
        [--data data/demo/synth/Images] [--engines int8 bf16]
"""

from __future__ import annotations

import argparse
import collections
import datetime
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cpu import machine  # noqa: E402


def attributes_apart(ours: list[dict], theirs: list[dict]) -> str:
    """Which attributes two parsed captions' objects differ in, e.g. ``shape`` or
    ``count``."""
    if len(ours) != len(theirs):
        return "count"
    keys = ("shape", "colour", "size", "column")
    return "+".join(
        k for k in keys if any(a.get(k) != b.get(k) for a, b in zip(ours, theirs, strict=True))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="data/demo/model", help="a bundle with engines")
    parser.add_argument("--data", default="data/demo/synth/Images", help="as --calibration")
    parser.add_argument("--engines", nargs="+", default=["int8", "bf16"])
    parser.add_argument("--calibration-images", type=int, default=300, help="as quantize's")
    parser.add_argument("--check-images", type=int, default=100, help="as quantize's")
    args = parser.parse_args()
    print(f"{machine()}; {datetime.date.today()}")
    from models.captioner.engine_build import feature_cosines
    from models.captioner.engines import load_captioner
    from models.captioner.manifest import Manifest
    from models.evaluation.attributes import parse_caption
    from pipeline.quantize import decode_sample, list_images

    manifest = Manifest.read(args.model)
    count = args.calibration_images + args.check_images
    images = decode_sample(list_images([args.data]), count, manifest)[args.calibration_images :]
    search = {"beam_size": 3, "max_length": 30}
    reference = load_captioner(args.model, "fp32", manifest=manifest)
    theirs = reference.encoder.encode(images)
    their_captions = reference.caption_features(theirs, **search)
    for name in args.engines:
        if name not in manifest.engines:
            print(f"{name}: not in {args.model} (beamcap quantize makes it)")
            continue
        engine = load_captioner(args.model, name, manifest=manifest)
        ours = engine.encoder.encode(images)
        cosines = feature_cosines(ours, theirs)
        verdicts = collections.Counter()
        captions = engine.caption_features(ours, **search)
        for mine, reference_best in zip(captions, their_captions, strict=True):
            a, b = mine[0], reference_best[0]
            if a.tokens == b.tokens:
                verdicts["same caption"] += 1
                continue
            apart = attributes_apart(parse_caption(a.text)[0], parse_caption(b.text)[0])
            verdicts[f"other objects: {apart}" if apart else "same objects, other words"] += 1
        print(
            f"{name}: {len(images)} images, feature cosine mean {cosines.mean():.4f} "
            f"(images under 0.9: {int((cosines < 0.9).sum())})"
        )
        for verdict, times in verdicts.most_common():
            print(f"  {times:4d}  {verdict}")


if __name__ == "__main__":
    main()
