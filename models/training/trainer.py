"""``train``: load the data and the starting point, build a phase, fit it, write the bundle."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import tempfile
import time
from pathlib import Path

import keras

from models import storage
from models.captioner.architectures import DEFAULT_ARCHITECTURE, architecture
from models.captioner.bundle import load_bundle, save_bundle
from models.captioner.decoder import Decoder, DecoderStepper, ShowAndTell
from models.captioner.encoder import EncoderSpec, ImageEncoder
from models.captioner.vocabulary import Vocabulary
from models.configs import DecoderConfig, SettingsError, TrainConfig
from models.training.callbacks import Judge, Progress, Seen, TimeBudget, Validation
from models.training.curve import headline, plot_curve, read_history
from models.training.inputs import shards
from models.training.phases import Phase, decoder_phase, fine_tuned, joint_phase

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Start:
    """What training starts from: an encoder and a decoder, fresh or from ``init_from``."""

    encoder: ImageEncoder
    decoder: Decoder
    extras: dict  # the manifest's encoder keys beyond the spec (phase, fine_tuning)
    model_id: str | None = None  # the starting bundle's


# Over 60 lines: the trainer's outline, load -> phase -> callbacks -> fit -> bundle, read top
# to bottom; each step is a call into phases, inputs, callbacks and curve.
def train(
    data_dir: str,
    output: str,
    *,
    decoder_config: dict | None = None,
    config: TrainConfig = TrainConfig(),
    checkpoint_dir: str | None = None,
    judge: Judge | None = None,
) -> dict:
    """Trains, writes the bundle and reports to ``output``; returns the metrics. ``judge``
    scores the validation sample's captions after each epoch, next to BLEU-4."""
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError("training uses tf.data: run it with KERAS_BACKEND=tensorflow")
    dataset, vocabulary, train_files, val_files = _load_data(data_dir, config)
    keras.utils.set_random_seed(config.seed)
    start = _start(data_dir, dataset["encoder"], vocabulary, decoder_config, config)
    _check_feature_width(data_dir, dataset["encoder"], start.decoder)
    initial_fingerprint = start.encoder.fingerprint
    counts = dataset["counts"]
    if config.train_encoder:
        phase = joint_phase(start.encoder, start.decoder, train_files, val_files, counts, config)
    else:
        phase = decoder_phase(start.decoder, train_files, val_files, counts, config)

    work = work_dir(output, checkpoint_dir)
    last = _resume_point(work)
    stepper = DecoderStepper(start.decoder, start_id=vocabulary.start_id, end_id=vocabulary.end_id)
    validation = Validation(
        stepper, vocabulary, phase.sample, config, featurize=phase.featurize, judge=judge
    )
    monitor = "val_loss" if phase.val_data is not None else "loss"
    callbacks, budget = _callbacks(phase, config, work, validation, last, monitor=monitor)
    started = time.time()
    phase.model.fit(
        phase.train_data,
        validation_data=phase.val_data,
        epochs=config.epochs,
        steps_per_epoch=phase.steps_per_epoch,
        callbacks=callbacks,
        shuffle=False,  # tf.data shuffles
        verbose=0,
    )
    history = read_history(work / "history.csv")
    metrics = _metrics(
        phase,
        history,
        validation.evaluate(),
        monitor=monitor,
        seconds=time.time() - started,
        stopped_by_time_budget=bool(budget and budget.stopped_early),
        resumed_after_epoch=last["epoch"] + 1 if last else None,
        counts=counts,
        config=config,
        decoder=start.decoder,
    )
    encoder, extras = start.encoder, start.extras
    if phase.number == 2:
        origin = {
            "model_id": start.model_id,
            "fingerprint": initial_fingerprint,
            "images_seen": metrics["images_seen"],
        }
        encoder, extras = fine_tuned(encoder, phase, config, extras=extras, origin=origin)
        metrics["encoder_batchnorm"] = phase.batchnorm
    manifest = save_bundle(
        output,
        encoder=encoder,
        decoder=start.decoder,
        vocabulary=vocabulary,
        training={**headline(metrics), "data": data_dir, "init_from": config.init_from or None},
        encoder_extras=extras,
    )
    metrics["model_id"] = manifest.model_id
    _write_report(output, history, metrics)
    (work / "history.csv").unlink()  # now in metrics.json; a rerun starts afresh
    if not any(work.iterdir()):
        work.rmdir()
    return metrics


def _load_data(data_dir: str, config: TrainConfig):
    """dataset.json, the vocabulary and the train and val shards, checked against ``config``."""
    dataset = json.loads(storage.read_text(storage.join(data_dir, "dataset.json")))
    vocabulary = Vocabulary.load(storage.join(data_dir, dataset["vocabulary"]["file"]))
    train_files, val_files = shards(data_dir, "train"), shards(data_dir, "val")
    if not train_files:
        raise FileNotFoundError(f"no train-*.tfrecord in {data_dir}")
    if config.train_encoder and not dataset.get("settings", {}).get("with_images"):
        raise SettingsError(
            f"{data_dir} holds no images: phase 2 (--train-encoder) trains on pixels; write the "
            "features with `beamcap features ... --with-images`"
        )
    return dataset, vocabulary, train_files, val_files


def _start(
    data_dir: str,
    encoder_info: dict,
    vocabulary: Vocabulary,
    decoder_config: dict | None,
    config: TrainConfig,
) -> Start:
    """A fresh decoder on the features' encoder, or the ``init_from`` bundle's parts."""
    precision = config.encoder_precision if config.train_encoder else "fp32"
    if config.init_from:
        bundle = _bundle_that_fits(config, vocabulary, encoder_info, precision=precision)
        wanted = {k: v for k, v in (decoder_config or {}).items() if k != "vocab_size"}
        ignored = {k: v for k, v in wanted.items() if getattr(bundle.decoder.config, k) != v}
        if ignored:
            log.warning(
                "decoder settings %s ignored: the decoder comes from %s", ignored, config.init_from
            )
        known = {f.name for f in dataclasses.fields(EncoderSpec)} | {"fingerprint"}
        encoder_section = bundle.manifest.encoder.to_json()
        extras = {k: v for k, v in encoder_section.items() if k not in known}
        return Start(bundle.encoder, bundle.decoder, extras, bundle.model_id)
    encoder = ImageEncoder(
        EncoderSpec(
            encoder_info["weights"],
            encoder_info["image_size"],
            encoder_info.get("architecture", DEFAULT_ARCHITECTURE),
        ),
        weights_file=storage.join(data_dir, encoder_info["weights_file"]),
        precision=precision,
    )
    if encoder.fingerprint != encoder_info["fingerprint"]:
        raise SettingsError(
            f"{data_dir}/{encoder_info['weights_file']} does not hold the weights the features "
            f"were computed with (fingerprint {encoder.fingerprint[:12]}, dataset.json says "
            f"{encoder_info['fingerprint'][:12]})"
        )
    decoder = ShowAndTell(
        DecoderConfig(
            **{
                "feature_dim": feature_width(encoder_info),
                **(decoder_config or {}),
                "vocab_size": len(vocabulary),
            }
        )
    )
    pretraining = (
        {"pretraining": encoder_info["pretraining"]} if "pretraining" in encoder_info else {}
    )
    return Start(encoder, decoder, {"phase": 1, **pretraining})


def feature_width(encoder_info: dict) -> int:
    """The features' width: dataset.json's ``encoder.feature_dim``, or for data written before
    it was recorded, the width of the encoder architecture's table entry."""
    if "feature_dim" in encoder_info:
        return encoder_info["feature_dim"]
    return architecture(encoder_info.get("architecture", DEFAULT_ARCHITECTURE)).feature_dim


def _check_feature_width(data_dir: str, encoder_info: dict, decoder: Decoder) -> None:
    width = feature_width(encoder_info)
    if decoder.config.feature_dim != width:
        raise SettingsError(
            f"{storage.join(data_dir, 'dataset.json')} holds {width}-d features; the decoder "
            f"takes {decoder.config.feature_dim}-d ones (its feature_dim): train on features "
            "of the decoder's encoder"
        )


def _bundle_that_fits(
    config: TrainConfig, vocabulary: Vocabulary, encoder_info: dict, *, precision
):
    """The ``init_from`` bundle, after checking it fits the data."""
    uri = config.init_from
    bundle = load_bundle(uri, precision=precision)
    if bundle.vocabulary.words != vocabulary.words:
        raise SettingsError(
            f"--init-from {uri} has another vocabulary ({len(bundle.vocabulary)} words) than the "
            f"features ({len(vocabulary)}): train phase 2 on the features phase 1 was trained on"
        )
    if bundle.encoder.spec.image_size != encoder_info["image_size"]:
        raise SettingsError(
            f"--init-from {uri} encodes {bundle.encoder.spec.image_size}px images, the features "
            f"hold {encoder_info['image_size']}px"
        )
    if not config.train_encoder and bundle.encoder.fingerprint != encoder_info["fingerprint"]:
        raise SettingsError(
            f"--init-from {uri} has another encoder (fingerprint "
            f"{bundle.encoder.fingerprint[:12]}) than the one the features were computed with "
            f"({encoder_info['fingerprint'][:12]}): its decoder cannot continue on these "
            "features; add --train-encoder (phase 2 reads pixels) or recompute the features"
        )
    return bundle


def work_dir(output: str, checkpoint_dir: str | None) -> Path:
    """Where a trainer's checkpoints and CSV history go: local, so Keras can write them
    (``checkpoint_dir``; OUTPUT/checkpoints; a temporary folder for a gs:// output)."""
    if checkpoint_dir:
        work = Path(checkpoint_dir)
    elif storage.is_gcs(output):
        work = Path(tempfile.mkdtemp(prefix="beamcap-checkpoints-"))
    else:
        work = Path(output) / "checkpoints"
    work.mkdir(parents=True, exist_ok=True)
    return work


def _callbacks(
    phase: Phase, config: TrainConfig, work: Path, validation: Validation, last: dict, *, monitor
) -> tuple[list, TimeBudget | None]:
    """Validation, the learning curve's counters, early stopping, the CSV history, checkpoints
    (resumed from ``last``), progress lines and the time budget."""
    budget = TimeBudget(config.time_budget_minutes * 60) if config.time_budget_minutes else None
    callbacks = [
        validation,
        Seen(
            phase.seen_key,
            config.batch_size,
            per_epoch=phase.per_epoch,
            seen=int(last.get(phase.seen_key, 0)),
            minutes=last.get("minutes", 0.0),
        ),
        keras.callbacks.EarlyStopping(
            monitor=monitor, patience=config.patience, restore_best_weights=True
        ),
        keras.callbacks.CSVLogger(str(work / "history.csv"), append=True),
        keras.callbacks.BackupAndRestore(str(work / "backup")),  # deleted when training completes
        Progress(phase.steps, config.batch_size, unit=phase.seen_key.split("_")[0]),
        *([budget] if budget else []),
    ]
    return callbacks, budget


def _resume_point(work: Path) -> dict:
    """The last finished epoch's row of an interrupted run in ``work``, or {}."""
    history_csv = work / "history.csv"
    if history_csv.exists() and not (work / "backup").exists():
        history_csv.unlink()  # left by a run that stopped before its first checkpoint
    resumed_from = read_history(history_csv)
    if not resumed_from:
        return {}
    log.info("resuming after epoch %d (checkpoint in %s)", resumed_from[-1]["epoch"] + 1, work)
    return resumed_from[-1]


def _metrics(phase: Phase, history: list[dict], final: dict, *, monitor: str, **run) -> dict:
    """metrics.json: the best epoch's losses, the final validation scores, the history."""
    best = min(history, key=lambda row: row.get(monitor, math.inf))
    return {
        "phase": phase.number,
        "epochs_run": len(history),
        "best_epoch": best["epoch"] + 1,
        "train_loss": best["loss"],
        "val_loss": best.get("val_loss"),
        **final,
        "val_bleu_sample": len(phase.sample.references),
        phase.seen_key: int(history[-1][phase.seen_key]) if history else 0,
        "seconds": round(run["seconds"], 1),
        "stopped_by_time_budget": run["stopped_by_time_budget"],
        "resumed_after_epoch": run["resumed_after_epoch"],
        "init_from": run["config"].init_from or None,
        "dataset": run["counts"],
        "config": dataclasses.asdict(run["config"]),
        "decoder": dataclasses.asdict(run["decoder"].config),
        "history": history,
    }


def _write_report(output: str, history: list[dict], metrics: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        plot_curve(history, Path(tmp, "loss.png"))
        storage.write_bytes(storage.join(output, "loss.png"), Path(tmp, "loss.png").read_bytes())
    storage.write_text(storage.join(output, "metrics.json"), json.dumps(metrics, indent=2))
