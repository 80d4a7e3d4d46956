"""The encoder backbones beamcap knows, by name, without importing Keras at module load.

Each entry says how to build the backbone (a ``keras.applications`` constructor, taking
``include_top``, ``weights``, ``input_shape`` and ``pooling``), how a decoded image becomes its
input (beamcap's plain resize, or a ``preprocessing`` of ``models.captioner.preprocessing``) and
how those pixels are scaled, its smallest input and the width of its pooled features. An
``EncoderSpec`` names its entry (``architecture``); the manifest and dataset.json record the
name, and a bundle's manifest the entry's preprocessing. Another backbone is one more entry here.

``InceptionV3`` is beamcap's own encoder. ``im2txt-InceptionV3`` is the same network as im2txt
feeds it: resized to 346x346 with TF1's bilinear arithmetic and cropped to the central 299x299
(what ``beamcap import-im2txt`` bundles use, and ``beamcap features --encoder`` can match).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from models.captioner.preprocessing import check_preprocessing

DEFAULT_ARCHITECTURE = "InceptionV3"


@dataclasses.dataclass(frozen=True)
class Architecture:
    name: str
    application: str  # the keras.applications constructor's name
    scale: Callable  # float32 pixels in [0, 255] -> the backbone's input range
    min_image_size: int
    feature_dim: int  # channels of the last feature map, the pooled width
    # None: beamcap's resize (transforms.decode); else a PREPROCESSINGS entry and its parameters
    preprocessing: dict | None = None

    def constructor(self):
        import keras

        return getattr(keras.applications, self.application)


def inception_scale(pixels):
    """[0, 255] -> [-1, 1], as ``inception_v3.preprocess_input`` (numpy or backend tensors)."""
    return pixels / 127.5 - 1.0


ARCHITECTURES = {
    "InceptionV3": Architecture(
        "InceptionV3", "InceptionV3", inception_scale, min_image_size=75, feature_dim=2048
    ),
    "im2txt-InceptionV3": Architecture(
        "im2txt-InceptionV3",
        "InceptionV3",
        inception_scale,
        min_image_size=299,
        feature_dim=2048,
        preprocessing={"method": "im2txt", "resize": 346},
    ),
}


def architecture(name: str) -> Architecture:
    """The table's entry; ValueError naming the known ones for another name."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(
            f"unknown encoder architecture {name!r}; known: {', '.join(ARCHITECTURES)}"
        ) from None


def check_input_size(name: str, image_size: int) -> None:
    """The one rule for an encoder's input size: ValueError unless architecture ``name``
    takes ``image_size`` px (its minimum, and a size its preprocessing can give)."""
    entry = architecture(name)
    if image_size < entry.min_image_size:
        raise ValueError(f"{entry.name} needs at least {entry.min_image_size}px, got {image_size}")
    check_preprocessing(entry.preprocessing, image_size)


def random_seed(weights: str) -> int | None:
    """The one rule for ``random:SEED`` weights: their seed; None for other weights;
    ValueError for a seed that is not an integer."""
    if not weights.startswith("random:"):
        return None
    seed = weights[len("random:") :]
    if not seed.isdigit():
        raise ValueError(f"random weights need an integer seed, e.g. random:0; got {weights!r}")
    return int(seed)
