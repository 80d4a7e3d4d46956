"""TF-slim's InceptionV3 variables onto Keras' InceptionV3, matched by the networks' structure.

Keras side: the graph of ``keras.applications.InceptionV3`` is walked from its ``mixed0`` ..
``mixed10`` concatenations back to their common input; each branch is the concatenation's i-th
input, its convolutions in data-flow order (the two parallel ones of ``mixed9``/``mixed10`` in
their own concatenation's order). Slim side: ``InceptionV3/<block>/Branch_<i>/<conv>``, the
convolutions of a branch ordered by slim's naming convention ``_<depth><letter>_`` (``0a`` before
``0b`` before ``1a``), a parallel pair (same position) with the 1xN kernel before the Nx1, as slim
concatenates them. Each conv is a ``weights`` kernel and ``BatchNorm/{beta,moving_mean,
moving_variance}`` (Keras: a bias-free Conv2D and a BatchNormalization without scale, epsilon
0.001, as im2txt's slim arg_scope). Every pair's kernel shapes must agree.
"""

from __future__ import annotations

import dataclasses
import re

import keras
import numpy as np

SCOPE = "InceptionV3"
STEM = "stem"
# Keras' concatenation layers (named by keras.applications) and slim's blocks, in network order.
BLOCKS = dict(
    zip(
        [f"mixed{i}" for i in range(11)],
        ["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d"]
        + ["Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"],
        strict=True,
    )
)
BATCHNORM = ("beta", "moving_mean", "moving_variance")
_POSITION = re.compile(r"_(\d)([a-z])_(\d+)x(\d+)$")


class MappingError(ValueError):
    """The variables do not fit Keras' InceptionV3 (missing, extra or of another shape)."""


@dataclasses.dataclass(frozen=True)
class ConvUnit:
    """One Keras conv2d_bn unit and the slim variable prefix mapped onto it."""

    conv: keras.layers.Conv2D
    batchnorm: keras.layers.BatchNormalization
    slim: str


def _producer(tensor):
    history = tensor._keras_history
    layer = history.operation
    return layer, layer._inbound_nodes[history.node_index].input_tensors


def _conv_unit(tensor):
    """Activation <- BatchNormalization <- Conv2D ending at ``tensor``: (conv, bn, input)."""
    activation, (bn_out,) = _producer(tensor)
    batchnorm, (conv_out,) = _producer(bn_out)
    conv, (source,) = _producer(conv_out)
    kinds = (keras.layers.Activation, keras.layers.BatchNormalization, keras.layers.Conv2D)
    layers = (activation, batchnorm, conv)
    if not all(isinstance(*pair) for pair in zip(layers, kinds, strict=True)):
        raise MappingError(f"unexpected Keras layers before {activation.name}")
    return conv, batchnorm, source


def _branch(tensor, block_input) -> list[tuple]:
    """The (conv, bn) units from ``block_input`` to ``tensor``, in data-flow order."""
    units = []
    while tensor is not block_input:
        layer, inputs = _producer(tensor)
        if isinstance(layer, keras.layers.Concatenate):  # the parallel 1x3 / 3x1 pair
            parallel = [_conv_unit(t) for t in inputs]
            units[:0] = [(conv, bn) for conv, bn, _ in parallel]
            tensor = parallel[0][2]
        elif isinstance(layer, (keras.layers.AveragePooling2D, keras.layers.MaxPooling2D)):
            (tensor,) = inputs
        else:
            conv, bn, tensor = _conv_unit(tensor)
            units.insert(0, (conv, bn))
    return units


def keras_structure(backbone: keras.Model) -> dict[str, list[list[tuple]]]:
    """{``stem``: [[units]], ``mixedN``: [[units of branch 0], [branch 1], ...]}."""
    structure = {}
    # Branch 0 of mixed0 is one conv unit on the stem's output (a max pool).
    block_input = _conv_unit(backbone.get_layer("mixed0")._inbound_nodes[0].input_tensors[0])[2]
    structure[STEM] = [_branch(block_input, backbone.inputs[0])]
    for name in BLOCKS:
        layer = backbone.get_layer(name)
        structure[name] = [_branch(t, block_input) for t in layer._inbound_nodes[0].input_tensors]
        block_input = layer.output
    return structure


def _order(prefix: str, shape) -> tuple:
    found = _POSITION.search(prefix)
    if not found:
        raise MappingError(f"{prefix}: not a slim conv name (expected _<depth><letter>_HxW)")
    return int(found.group(1)), found.group(2), shape[0]


def slim_structure(shapes: dict[str, tuple]) -> dict[str, dict[int, list[str]]]:
    """The slim conv prefixes of ``shapes`` (variable name -> shape): {block: {branch index:
    prefixes in data-flow order}}; a branch without convolutions (a lone pool) is absent."""
    convs = [name[: -len("/weights")] for name in shapes if name.endswith("/weights")]
    convs = [name for name in convs if name.startswith(SCOPE + "/")]
    structure: dict[str, dict[int, list[str]]] = {}
    for prefix in convs:
        parts = prefix.split("/")
        if len(parts) == 2:
            block, branch = STEM, 0
        elif len(parts) == 4 and parts[1].startswith("Mixed_") and parts[2].startswith("Branch_"):
            block, branch = parts[1], int(parts[2].removeprefix("Branch_"))
        else:
            continue  # e.g. an ImageNet classifier's Logits / AuxLogits: not the embedding
        structure.setdefault(block, {}).setdefault(branch, []).append(prefix)
    return {
        block: {
            index: sorted(prefixes, key=lambda p: _order(p, shapes[p + "/weights"]))
            for index, prefixes in branches.items()
        }
        for block, branches in structure.items()
    }


def map_inception(backbone: keras.Model, shapes: dict[str, tuple]) -> list[ConvUnit]:
    """Every Keras conv unit with its slim prefix; raises :class:`MappingError` when the two
    networks differ in blocks, branches, convolutions or kernel shapes."""
    slim = slim_structure(shapes)
    units = []
    for keras_block, branches in keras_structure(backbone).items():
        slim_block = STEM if keras_block == STEM else BLOCKS[keras_block]
        found = slim.pop(slim_block, {})
        slim_branches = [found.pop(index, []) for index in range(len(branches))]
        if found or [len(b) for b in slim_branches] != [len(b) for b in branches]:
            raise MappingError(
                f"{SCOPE}/{slim_block}: convolutions per branch "
                f"{[len(b) for b in slim_branches]}, Keras' InceptionV3 has "
                f"{[len(b) for b in branches]}"
            )
        for keras_branch, slim_branch in zip(branches, slim_branches, strict=True):
            for (conv, batchnorm), prefix in zip(keras_branch, slim_branch, strict=True):
                shape = tuple(shapes[prefix + "/weights"])
                if shape != tuple(conv.kernel.shape):
                    raise MappingError(
                        f"{prefix}/weights has shape {shape}, the Keras conv it maps onto "
                        f"{tuple(conv.kernel.shape)}"
                    )
                units.append(ConvUnit(conv, batchnorm, prefix))
    if slim:
        raise MappingError(f"{SCOPE} blocks Keras' InceptionV3 lacks: {', '.join(sorted(slim))}")
    return units


def required_variables(units: list[ConvUnit]) -> list[str]:
    return [
        name
        for unit in units
        for name in (f"{unit.slim}/weights", *(f"{unit.slim}/BatchNorm/{v}" for v in BATCHNORM))
    ]


def load_inception(units: list[ConvUnit], variables: dict[str, np.ndarray]) -> None:
    """Sets every mapped Keras conv and BatchNorm from ``variables`` (name -> array)."""
    for unit in units:
        unit.conv.set_weights([variables[f"{unit.slim}/weights"]])
        unit.batchnorm.set_weights([variables[f"{unit.slim}/BatchNorm/{v}"] for v in BATCHNORM])
