"""Image encoder (Keras 3): uint8 RGB batches in, pooled image embeddings out.

The backbone is an entry of ``models.captioner.architectures.ARCHITECTURES`` (InceptionV3
today: 2048-d).

Weights are named by a spec string:
  ``imagenet``     Keras' ImageNet weights (downloaded by Keras on a connected machine);
  ``random:SEED``  He-initialised from a numpy generator: the same weights for a seed on every
                   backend and machine (what offline runs and tests use);
  a path or ``gs://`` URI of the backbone's (``include_top=False``) weights file.

The architecture's scaling (InceptionV3: ``x / 127.5 - 1``, its ``preprocess_input``) runs
inside the model so callers ship compact uint8 arrays. ``encode`` runs the compiled predict
function (``tf.function`` on TensorFlow, ``jax.jit`` on JAX) and pads batches to a few fixed
sizes so it compiles rarely.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import posixpath

import keras
import numpy as np

from models import storage
from models.captioner.architectures import (
    DEFAULT_ARCHITECTURE,
    Architecture,
    architecture,
    check_input_size,
    random_seed,
)
from models.captioner.arrays import checked_images, pad_rows
from models.configs import PRECISIONS
from models.faults import ModelFault

DEFAULT_IMAGE_SIZE = 299
PRETRAINING = "pretraining.json"  # beside a weights file `beamcap pretrain` wrote: provenance


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
    """What the encoder is: enough to rebuild it and to check features came from it."""

    weights: str = "random:0"
    image_size: int = DEFAULT_IMAGE_SIZE
    architecture: str = DEFAULT_ARCHITECTURE
    pooling: str = "avg"

    def __post_init__(self):
        check_input_size(self.architecture, self.image_size)
        random_seed(self.weights)  # a bad random:SEED is refused here, not at load
        if self.pooling != "avg":
            raise ValueError(f"unsupported encoder pooling {self.pooling!r} (avg only)")

    @property
    def entry(self) -> Architecture:
        return architecture(self.architecture)


def preprocess(images, name: str = DEFAULT_ARCHITECTURE):
    """uint8 RGB in [0, 255] -> float32 in the backbone's input range (InceptionV3: [-1, 1])."""
    return architecture(name).scale(keras.ops.cast(images, "float32"))


_ONES, _ZEROS = ("moving_variance", "gamma"), ("beta", "moving_mean", "bias")


def _random_weights(model: keras.Model, seed: int) -> list[np.ndarray]:
    """He-normal kernels, BatchNorm at identity statistics, zero biases; numpy-seeded. A weight
    of another kind (a depthwise kernel, an embedding...) is refused, not silently zeroed."""
    rng = np.random.default_rng(seed)
    values = []
    for variable in model.weights:
        shape, name = tuple(variable.shape), variable.path.rsplit("/", 1)[-1]
        if name == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            values.append(rng.normal(0.0, np.sqrt(2.0 / fan_in), shape).astype("float32"))
        elif name in _ONES:
            values.append(np.ones(shape, "float32"))
        elif name in _ZEROS:
            values.append(np.zeros(shape, "float32"))
        else:
            raise ValueError(
                f"random:SEED weights cannot initialise {variable.path} (a {name!r} weight): "
                "it knows kernel, bias and BatchNorm weights; use a weights file"
            )
    return values


def weights_fingerprint(model: keras.Model) -> str:
    """sha256 over every weight's shape and float32 bytes, in the model's weight order.

    Layer names are left out on purpose: Keras numbers them per process, so they differ
    between two runs that build the same model.
    """
    digest = hashlib.sha256()
    for value in model.get_weights():
        digest.update(repr(tuple(value.shape)).encode())
        digest.update(np.ascontiguousarray(value, dtype="<f4").tobytes())
    return digest.hexdigest()


def _load_weights(backbone: keras.Model, spec: str, image_size: int, entry: Architecture) -> None:
    if spec == "imagenet":
        try:
            reference = entry.constructor()(
                include_top=False, weights="imagenet", input_shape=(image_size, image_size, 3)
            )
        except Exception as error:  # noqa: BLE001 - Keras raises several types offline
            raise RuntimeError(
                f"could not get Keras' ImageNet weights for {entry.name} "
                f"({type(error).__name__}: {error}). Offline, use --encoder-weights random:SEED "
                "or the path / gs:// URI of a weights file (for InceptionV3 Keras' "
                "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5)."
            ) from error
        backbone.set_weights(reference.get_weights())
    elif (seed := random_seed(spec)) is not None:
        backbone.set_weights(_random_weights(backbone, seed))
    else:
        with storage.local_copy(spec) as path:
            try:
                backbone.load_weights(path)
            except Exception as error:
                raise ValueError(
                    f"{spec} is not an {entry.name} (include_top=False) weights file: {error}"
                ) from error


def pretraining_of(weights: str, fingerprint: str) -> dict | None:
    """What ``beamcap pretrain`` recorded of a weights file (the PRETRAINING file beside it:
    dataset, images seen, held-out accuracy), when it is of these weights (``fingerprint``);
    None for imagenet, random:SEED and other files."""
    if weights == "imagenet" or random_seed(weights) is not None:
        return None
    uri = storage.join(posixpath.dirname(weights) or ".", PRETRAINING)  # gs:// or a local path
    if not storage.exists(uri):
        return None
    record = json.loads(storage.read_text(uri))
    if record.get("fingerprint") != fingerprint:
        return None
    keys = ("images_seen", "kept_after_images", "minutes", "held_out_accuracy", "precision")
    keys += ("stages", "fingerprint")
    dataset = {k: v for k, v in record.get("dataset", {}).items() if k != "heads"}
    return {"dataset": dataset, **{key: record.get(key) for key in keys}}


DTYPE_POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def _grow_gpu_memory() -> None:
    """On TensorFlow, let visible GPUs allocate memory as needed instead of all of it up front
    (several models or processes can then share one GPU). A no-op without GPUs, on JAX, or once
    TensorFlow has already initialised the devices."""
    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        # Once TensorFlow has initialised the devices the setting can no longer change.
        with contextlib.suppress(RuntimeError):
            tf.config.experimental.set_memory_growth(gpu, True)


class ImageEncoder:
    """The spec's backbone without its classifier; ``encode`` maps uint8 [B, S, S, 3] to
    [B, feature_dim] (InceptionV3: 2048).

    ``weights_file`` (a path or gs:// URI) replaces ``spec.weights`` as the source of the weights
    while the spec keeps naming where they came from (how a bundle loads its copy). ``precision``
    (fp32, bf16, fp16) is the compute type: weights stay float32 (same fingerprint) and the
    outputs are float32.

    On TensorFlow on a CPU, ``encode`` runs one graph traced for any batch size: a short batch
    costs in proportion to its rows, and nothing is traced again mid-run. Elsewhere (GPUs,
    JAX), where each shape compiles anew, batches up to ``batch_size`` are padded to it,
    rounded up to a power of two, so a job's last, short batch reuses the compiled shape.
    """

    def __init__(
        self,
        spec: EncoderSpec,
        *,
        with_grid: bool = False,
        weights_file: str | None = None,
        precision: str = "fp32",
        batch_size: int | None = None,
    ):
        if precision not in DTYPE_POLICIES:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.spec, self.precision, self.batch_size = spec, precision, batch_size
        _grow_gpu_memory()
        size, entry = spec.image_size, spec.entry
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(DTYPE_POLICIES[precision])  # read while the layers are built
        try:
            self.backbone = entry.constructor()(
                include_top=False, weights=None, input_shape=(size, size, 3), pooling=None
            )
        finally:
            keras.config.set_dtype_policy(previous)
        if self.backbone.output.shape[-1] != entry.feature_dim:
            raise ValueError(
                f"{entry.name} gives {self.backbone.output.shape[-1]}-d features, its table "
                f"entry says {entry.feature_dim}"
            )
        _load_weights(self.backbone, weights_file or spec.weights, size, entry)
        self.fingerprint = weights_fingerprint(self.backbone)
        images = keras.Input((size, size, 3), dtype="uint8", name="images")
        grid = keras.ops.cast(self.backbone(preprocess(images, entry.name)), "float32")
        pooled = keras.layers.GlobalAveragePooling2D(name="pooled")(grid)
        outputs = {"pooled": pooled, "grid": grid} if with_grid else pooled
        self.model = keras.Model(images, outputs, name="image_encoder")
        self._any_batch = _any_batch_function(self.model, size)

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        """Shape of the spatial feature grid per image (8x8x2048 at 299px)."""
        return tuple(self.backbone.output.shape[1:])

    def encode(self, images: np.ndarray) -> np.ndarray | dict[str, np.ndarray]:
        """Compiled batched inference; ``images`` is uint8 [B, S, S, 3], B >= 1. Raises
        :class:`ModelFault` if the features are not all finite."""
        images = checked_images(images, self.spec.image_size)
        if self._any_batch is not None:
            outputs = keras.tree.map_structure(np.asarray, self._any_batch(images))
        else:
            count = len(images)
            rows = self.batch_size if self.batch_size and count <= self.batch_size else count
            padded = pad_rows(images, bucket_size(rows))
            outputs = keras.tree.map_structure(
                lambda array: np.asarray(array)[:count], self.model.predict_on_batch(padded)
            )
        if not all(np.isfinite(array).all() for array in keras.tree.flatten(outputs)):
            raise ModelFault(f"encoder {self.fingerprint[:12]} returned non-finite features")
        return outputs

    def save_weights(self, uri: str) -> None:
        """Writes the backbone's weights (Keras ``.weights.h5``) to a path or ``gs://`` URI."""
        with storage.local_file_for(uri) as path:
            self.backbone.save_weights(path)


def _any_batch_function(model: keras.Model, size: int):
    """On TensorFlow with no GPU, ``model`` as a ``tf.function`` for uint8 [any, size, size,
    3]: traced once, at its first call; else None."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return None
    signature = [tf.TensorSpec([None, size, size, 3], tf.uint8)]
    return tf.function(lambda images: model(images, training=False), input_signature=signature)


def bucket_size(count: int) -> int:
    """Rounds a batch size up to the next power of two, so compiled shapes stay few."""
    if count < 1:
        raise ValueError("an empty batch has nothing to encode")
    return 1 << (count - 1).bit_length()
