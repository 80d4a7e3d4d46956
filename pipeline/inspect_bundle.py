"""``beamcap inspect BUNDLE``: load a model bundle, verify every part, print what it holds.

Exits 2 with a one-line reason when a part is missing or does not match the manifest (the same
check every job runs at launch, ``models.captioner.manifest.verify_bundle``), then loads the
weights to check their fingerprints too; so it can gate a deployment:
``beamcap inspect gs://bucket/models/v3 && make run-dataflow ...``.
"""

from __future__ import annotations

import json

from models.backend import load_keras
from models.captioner.manifest import verify_bundle
from pipeline.quantize import describe
from pipeline.report import describe_pretraining
from pipeline.settings import Parser


def main(argv: list[str]) -> int:
    parser = Parser("beamcap inspect", __doc__)
    parser.add_argument("bundle", help="bundle directory: a local path or gs://BUCKET/PREFIX")
    parser.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    args = parser.parse_args(argv)
    manifest = verify_bundle(args.bundle)
    load_keras()  # TensorFlow: only for a bundle that passed the check
    from models.captioner.bundle import load_bundle

    bundle = load_bundle(args.bundle)
    if args.json:
        print(json.dumps(manifest.to_json(), indent=2))
        return 0
    encoder, decoder = manifest.encoder, manifest.decoder
    print(f"model_id    {bundle.model_id}  (format {manifest.format_version}, verified)")
    print(
        f"encoder     {encoder.architecture} {encoder.image_size}px, weights "
        f"{encoder.weights}, fingerprint {encoder.fingerprint[:12]}"
    )
    sizes = ", ".join(
        f"{key} {value}" for key, value in decoder.config.items() if key != "vocab_size"
    )
    print(f"decoder     {decoder.kind}: {sizes}, fingerprint {decoder.fingerprint[:12]}")
    print(f"vocabulary  {manifest.vocabulary.size} words")
    if encoder.pretraining:
        print(f"pretrain    {describe_pretraining(encoder.pretraining)}")
    if encoder.preprocessing:
        print(f"preprocess  {json.dumps(encoder.preprocessing)}")
    source = manifest.source
    if source:
        files = ", ".join(f"{name} ({digest[:12]})" for name, digest in source.files.items())
        print(f"source      {source.format} {source.kind}: {files}")
        if source.global_step is not None:
            print(f"source      global step {source.global_step}")
    for key, value in manifest.training.items():
        print(f"training    {key}: {value}")
    for name, engine in manifest.engines.items():
        versions = ", ".join(f"{k} {v.split('-')[0]}" for k, v in engine.versions.items())
        calibrated = engine.calibration
        made = f", calibrated on {calibrated['images']} images" if calibrated else ""
        print(f"engine      {name} ({versions}){made}")
        print(f"engine      {describe(name, engine)}")
    return 0
