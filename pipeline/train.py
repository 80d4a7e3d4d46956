"""``beamcap train``: fit the caption decoder on ``beamcap features`` output; write a bundle.

    beamcap train --data data/features --output data/model --config demo
    beamcap train --data gs://B/features --output gs://B/models/v1 --config flickr8k --epochs 5
    beamcap train --data data/features --output data/model2 --config demo \\
        --init-from data/model --train-encoder       # phase 2 (features --with-images)

Rerun the same command after an interruption to resume from the last finished epoch. A preset's
``train`` section sets the flags below, its ``decoder`` section the decoder's sizes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys

from models import storage
from models.backend import load_keras
from models.configs import DecoderConfig, SettingsError, TrainConfig, check_ranges, setting
from pipeline.settings import parse_job, preset_section


@dataclasses.dataclass(frozen=True)
class TrainSettings(TrainConfig):
    data: str = setting(
        None,
        "a `beamcap features` output directory (local or gs://)",
        type=str,
        required=True,
        uris=True,
    )
    output: str = setting(
        None,
        "bundle directory to write (local or gs://); also gets loss.png and metrics.json",
        type=str,
        required=True,
        uris=True,
    )
    checkpoint_dir: str = setting(
        None,
        "local folder for per-epoch checkpoints; rerunning the same command resumes from it "
        "(default: OUTPUT/checkpoints for a local output; for a gs:// output a temporary folder, "
        "so give one to be able to resume)",
        type=str,
    )

    def check(self) -> None:
        if self.checkpoint_dir and storage.is_gcs(self.checkpoint_dir):
            raise SettingsError(
                f"--checkpoint-dir takes a local folder (Keras writes checkpoints locally), "
                f"got {self.checkpoint_dir}"
            )
        if not storage.exists(storage.join(self.data, "dataset.json")):
            raise SettingsError(
                f"--data: {self.data} holds no dataset.json; write it with `beamcap features`"
            )

    @property
    def config(self) -> TrainConfig:
        return TrainConfig(
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(TrainConfig)}
        )


def main(argv: list[str] | None = None) -> int:
    job = parse_job(
        TrainSettings,
        sys.argv[1:] if argv is None else argv,
        prog="beamcap train",
        description=__doc__,
        section="train",
        beam=False,
    )
    decoder_settings = preset_section(job.preset, "decoder", DecoderConfig)
    check_ranges(DecoderConfig(vocab_size=1, **decoder_settings))
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    load_keras()  # TensorFlow, quietly, once the flags are good
    from models.evaluation.attributes import scene_judge
    from models.training import headline, train

    settings = job.settings
    metrics = train(
        settings.data,
        settings.output,
        decoder_config=decoder_settings,
        config=settings.config,
        checkpoint_dir=settings.checkpoint_dir,
        judge=scene_judge(settings.val_scenes) if settings.val_scenes else None,
    )
    logging.info("bundle written to %s", settings.output)
    print(json.dumps({"model_id": metrics["model_id"], **headline(metrics)}, indent=2))
    return 0


if __name__ == "__main__":
    from pipeline.cli import main as beamcap

    sys.exit(beamcap(["train", *sys.argv[1:]]))
