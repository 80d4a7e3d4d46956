"""Plain settings of the model layer, importable without Keras: what a launcher checks before
it loads a framework, and what ``beamcap train``'s flags and presets derive from.

A field declared with :func:`setting` carries its help text and its allowed range; the
``pipeline.settings`` module turns such dataclasses into flags, preset checks and launch checks.
"""

from __future__ import annotations

import dataclasses
import math

from models.captioner.architectures import ARCHITECTURES, DEFAULT_ARCHITECTURE
from models.faults import SettingsError

FEATURE_DIM = ARCHITECTURES[DEFAULT_ARCHITECTURE].feature_dim  # the default encoder's width
MIN_IMAGE_SIZE = min(entry.min_image_size for entry in ARCHITECTURES.values())  # any encoder's
PRECISIONS = ("fp32", "bf16", "fp16")  # the encoder's compute types; weights stay float32
BATCHNORM_MODES = ("auto", "train", "frozen")  # the encoder's BatchNorm in phase 2
PRECISION_HELP = (
    "encoder compute type: bf16 on CPUs with AVX512_BF16/AMX and on GPUs, fp16 on older GPUs; "
    "weights stay float32"
)


def setting(
    default,
    help: str,  # noqa: A002 - argparse's name for it
    *,
    type=None,  # noqa: A002
    minimum=None,
    maximum=None,
    choices=None,
    required: bool = False,
    uris: bool = False,
    many: bool = False,
):
    """A dataclass field with what its flag needs: help text, type (default: the default's),
    inclusive ``minimum``/``maximum``, ``choices``; ``required`` fields default to None.
    Float settings must also be finite; ``uris`` settings hold comma-separated local paths or
    ``gs://`` URIs, the schemes every part of beamcap reads and writes. A ``many`` flag takes
    several values (``--input a.jpg b.jpg``, as a shell expands a glob), kept comma-joined."""
    return dataclasses.field(
        default=default,
        metadata={
            "help": help,
            "type": type or builtin_type(default),
            "minimum": minimum,
            "maximum": maximum,
            "choices": choices,
            "required": required,
            "uris": uris,
            "many": many,
        },
    )


def builtin_type(value):
    if value is None:
        raise TypeError("a setting defaulting to None needs an explicit type")
    return type(value)


def flag(name: str) -> str:
    """The command-line flag of a field: ``beam_size`` -> ``--beam-size``."""
    return "--" + name.replace("_", "-")


def check_ranges(settings) -> None:
    """Raises :class:`SettingsError` for the first field outside its declared range."""
    for field in dataclasses.fields(settings):
        meta, value = field.metadata, getattr(settings, field.name)
        if "type" not in meta:
            continue
        name = flag(field.name)
        if value is None:
            if meta["required"]:
                raise SettingsError(f"{name} is required")
            continue
        kind = meta["type"]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise SettingsError(f"{name} must be {kind.__name__}, got {value!r}")
        if kind is float and not math.isfinite(value):
            raise SettingsError(f"{name} must be a finite number, got {value}")
        if meta["choices"] is not None and value not in meta["choices"]:
            raise SettingsError(f"{name} must be one of {', '.join(map(str, meta['choices']))}")
        if meta["minimum"] is not None and value < meta["minimum"]:
            raise SettingsError(f"{name} must be >= {meta['minimum']}, got {value}")
        if meta["maximum"] is not None and value > meta["maximum"]:
            raise SettingsError(f"{name} must be <= {meta['maximum']}, got {value}")
        if meta["uris"]:
            for uri in value.split(","):
                if "://" in uri and not uri.startswith("gs://"):
                    raise SettingsError(f"{name} takes local paths and gs:// URIs, got {uri}")


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """Decoder sizes (im2txt: 512 everywhere, dropout 0.3 when training)."""

    vocab_size: int
    embedding_dim: int = setting(512, "word and image embedding width", minimum=1)
    lstm_units: int = setting(512, "LSTM state width", minimum=1)
    dropout: float = setting(
        0.3, "dropout on the LSTM output while training", minimum=0.0, maximum=0.9
    )
    feature_dim: int = setting(FEATURE_DIM, "image feature width (the encoder's)", minimum=1)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How ``beamcap train`` fits the decoder (im2txt's values where it has them)."""

    batch_size: int = setting(64, "captions per training step", minimum=1)
    epochs: int = setting(20, "most epochs; early stopping may end sooner", minimum=1)
    learning_rate: float = setting(2e-3, "Adam learning rate", minimum=1e-8, maximum=1.0)
    clip_norm: float = setting(5.0, "gradient-norm clipping (im2txt: 5)", minimum=0.0)
    patience: int = setting(3, "epochs without a better validation loss before stopping", minimum=1)
    shuffle_buffer: int = setting(20_000, "captions held by the shuffle buffer", minimum=1)
    bleu_sample: int = setting(200, "validation images decoded for BLEU-4 each epoch", minimum=0)
    beam_size: int = setting(3, "beam width of the validation BLEU decoding", minimum=1)
    max_length: int = setting(20, "most tokens per decoded caption, <end> included", minimum=1)
    seed: int = setting(0, "random seed of weights and shuffling")
    # Phase 2 and run control.
    init_from: str = setting(
        "",
        "model bundle to start from (usually phase 1's): its decoder and encoder weights; its "
        "vocabulary must be the features'",
        uris=True,
    )
    train_encoder: bool = setting(
        False,
        "phase 2: fit the encoder together with the decoder, on the records' pixels (features "
        "written with --with-images)",
    )
    encoder_learning_rate: float = setting(
        3e-5,
        "Adam learning rate of the encoder in phase 2; small, as fine-tuning a pretrained encoder "
        "needs (0.001 wrecked one in 14 steps; im2txt's 0.0005 is for SGD)",
        minimum=1e-8,
        maximum=1.0,
    )
    encoder_batchnorm: str = setting(
        "auto",
        "encoder BatchNorm in phase 2: train (batch statistics, moving ones updated), frozen "
        "(inference mode), or auto: train for random:SEED weights, frozen for pretrained",
        choices=BATCHNORM_MODES,
    )
    encoder_precision: str = setting(
        "fp32", "phase-2 compute type of the encoder (weights stay float32)", choices=PRECISIONS
    )
    captions_per_image: int = setting(
        0,
        "phase 2: train on this many of each image's captions per step, drawn at random (0: "
        "all; fewer trade decoder steps for more images per second)",
        minimum=0,
    )
    images_per_epoch: int = setting(
        0,
        "phase 2: images per epoch, i.e. between evaluations and checkpoints (0: the train "
        "split once)",
        minimum=0,
    )
    time_budget_minutes: float = setting(
        0.0,
        "stop training once this many minutes have passed (the running epoch is cut short, "
        "then validated); 0: no limit",
        minimum=0.0,
    )
    val_scenes: str = setting(
        "",
        "synthetic ground truth (scenes.jsonl): adds validation attribute accuracy to every "
        "epoch's metrics",
        uris=True,
    )


PRETRAIN_PRECISIONS = ("auto", *PRECISIONS)


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """How ``beamcap pretrain`` fits the encoder as a classifier of labelled images."""

    batch_size: int = setting(32, "images per training step", minimum=1)
    learning_rate: float = setting(1e-3, "Adam learning rate", minimum=1e-8, maximum=1.0)
    stages: str = setting(
        "",
        "LAYER:IMAGES ...: the encoder grown from its input before it trains whole: for each "
        "stage in turn, heads on LAYER's flattened grid train the layers below it for IMAGES "
        "images (LAYER: stem, or a block such as mixed2); none by default",
        many=True,
    )
    images: int = setting(
        0,
        "stop after the whole encoder has trained on this many images (repeats included; "
        "--stages' images come before them); 0: no limit",
        minimum=0,
    )
    time_budget_minutes: float = setting(
        0.0,
        "stop after this many minutes of training (stages and resumed runs included); 0: no limit",
        minimum=0.0,
    )
    images_per_eval: int = setting(
        3200,
        "training images between held-out evaluations and checkpoints (a learning-curve point)",
        minimum=1,
    )
    seed: int = setting(0, "random seed of the heads and the shuffling")

    def __post_init__(self):
        self.stage_list  # noqa: B018 - a malformed --stages fails here, before any data is read

    @property
    def stage_list(self) -> tuple[tuple[str, int], ...]:
        """``stages`` as (layer, images) pairs; SettingsError, in one line, for a bad one."""
        pairs = []
        for stage in filter(None, (part.strip() for part in self.stages.split(","))):
            layer, _, images = stage.rpartition(":")
            if not layer or not images.isdigit() or int(images) < 1:
                raise SettingsError(
                    f"--stages: {stage!r} is not LAYER:IMAGES with IMAGES >= 1 (e.g. stem:42496)"
                )
            pairs.append((layer, int(images)))
        return tuple(pairs)
