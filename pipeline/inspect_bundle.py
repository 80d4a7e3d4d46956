"""``beamcap inspect BUNDLE``: load a model bundle, verify every part, print what it holds.

Exits 1 with the reason when a part is missing or does not match the manifest, so it can gate a
deployment: ``beamcap inspect gs://bucket/models/v3 && make run-dataflow ...``.
"""

from __future__ import annotations

import json

from models.bundle import BundleError, load_bundle
from pipeline.options import command_parser


def main(argv: list[str]) -> int:
    parser = command_parser("beamcap inspect", __doc__)
    parser.add_argument("bundle", help="bundle directory: a local path or gs://BUCKET/PREFIX")
    parser.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    args = parser.parse_args(argv)
    try:
        bundle = load_bundle(args.bundle)
    except (BundleError, FileNotFoundError) as error:
        print(f"beamcap inspect: {error}")
        return 1
    manifest = bundle.manifest
    if args.json:
        print(json.dumps(manifest, indent=2))
        return 0
    encoder, decoder = manifest["encoder"], manifest["decoder"]
    print(f"model_id    {bundle.model_id}  (format {manifest['format_version']}, verified)")
    print(
        f"encoder     {encoder['architecture']} {encoder['image_size']}px, weights "
        f"{encoder['weights']}, fingerprint {encoder['fingerprint'][:12]}"
    )
    print(
        f"decoder     LSTM {decoder['lstm_units']}, embedding {decoder['embedding_dim']}, "
        f"fingerprint {decoder['fingerprint'][:12]}"
    )
    print(f"vocabulary  {manifest['vocabulary']['size']} words")
    for key, value in manifest.get("training", {}).items():
        print(f"training    {key}: {value}")
    return 0
