"""``beamcap train``: fit the caption decoder on ``beamcap features`` output; write a bundle.

    beamcap train --data data/features --output data/model --config demo
    beamcap train --data gs://B/features --output gs://B/models/v1 --config flickr8k --epochs 5
    beamcap train --data data/features --output data/model2 --config demo \
        --init-from data/model --train-encoder       # phase 2 (features --with-images)

Rerun the same command after an interruption to resume from the last finished epoch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from models.decoder import DecoderConfig  # noqa: E402
from models.trainer import TrainConfig, train  # noqa: E402
from pipeline.options import command_parser, configure_logging  # noqa: E402
from pipeline.presets import load_preset, section  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("beamcap train", __doc__)
    parser.add_argument(
        "--data", required=True, help="a `beamcap features` output directory (local or gs://)"
    )
    parser.add_argument(
        "--output",
        required=True,
        help="bundle directory to write (local or gs://); also gets loss.png and metrics.json",
    )
    parser.add_argument(
        "--config",
        default=None,
        help="preset name (configs/NAME.yaml) or YAML path: its decoder and train sections",
    )
    parser.add_argument(
        "--checkpoint-dir",
        default=None,
        help="where per-epoch checkpoints go (default: OUTPUT/checkpoints for "
        "a local output, a temporary directory otherwise)",
    )
    defaults = TrainConfig()
    for field in dataclasses.fields(TrainConfig):
        text = field.metadata.get("help", "overrides the preset")
        if isinstance(field.default, bool):  # type=bool would read "False" as True
            parser.add_argument(
                f"--{field.name.replace('_', '-')}",
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"{text} (default {field.default})",
            )
            continue
        parser.add_argument(
            f"--{field.name.replace('_', '-')}",
            type=type(field.default),
            default=None,
            help=f"{text} (default {field.default!r})",
        )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    configure_logging()
    preset = load_preset(args.config)
    train_settings = section(preset, "train", TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        if getattr(args, field.name) is not None:
            train_settings[field.name] = getattr(args, field.name)
    config = dataclasses.replace(defaults, **train_settings)
    decoder_settings = section(preset, "decoder", DecoderConfig)
    metrics = train(
        args.data,
        args.output,
        decoder_config=decoder_settings,
        config=config,
        checkpoint_dir=args.checkpoint_dir,
    )
    summary = {
        k: metrics[k]
        for k in (
            "model_id",
            "phase",
            "epochs_run",
            "best_epoch",
            "train_loss",
            "val_loss",
            "val_bleu4",
            "seconds",
        )
    }
    logging.info("bundle written to %s", args.output)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
