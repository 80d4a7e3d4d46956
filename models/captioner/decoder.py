"""Caption decoders (Keras 3) and the stepper that beam search drives over any of them.

A decoder implements :class:`Decoder`: a teacher-forcing ``training_model`` and the step
protocol's two halves as backend calls, ``initial_state(features)`` and ``step(tokens, state)``
(docs/architecture.md, "Decoder step protocol"). :class:`DecoderStepper` only batches, converts
and compiles those calls; beam search sees numpy.

:class:`ShowAndTell` (Vinyals et al. 2015, as in im2txt): the image embedding goes through a
Dense projection (no activation) and is the first LSTM input, from a zero state; then
``<start>`` and the caption's words follow, each embedded. The LSTM output goes through dropout
and a Dense layer over the vocabulary. ``training_model``: (features [B, D], tokens [B, T]) ->
logits [B, T-1, V]; the input is ``tokens[:, :-1]``, the target ``tokens[:, 1:]``.
"""

from __future__ import annotations

from typing import ClassVar, Protocol

import keras
import numpy as np

from models.captioner.arrays import pad_rows, padded_to
from models.captioner.beam_search import ties_to_lower_id
from models.configs import DecoderConfig

__all__ = ["Decoder", "DecoderConfig", "DecoderStepper", "ShowAndTell", "masked_cross_entropy"]


class Decoder(Protocol):
    """What the bundle, the trainer and :class:`DecoderStepper` need of a decoder."""

    kind: ClassVar[str]  # the manifest's ``decoder.kind``
    id_prefix: ClassVar[str]  # model ids start with it
    config_type: ClassVar[type]  # its hyper-parameters' dataclass, the manifest's decoder section
    config: DecoderConfig  # at least vocab_size and feature_dim (the encoder's width)
    training_model: keras.Model  # teacher forcing; its weights are the decoder's weights

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """One image's features, as ``initial_state`` takes them (batch axis first)."""

    def initial_state(self, features) -> tuple:
        """Backend tensors: features [B, *feature_shape] -> state, a tuple of [B, ...]."""

    def step(self, tokens, state) -> tuple:
        """Backend tensors: (tokens [N], state) -> (log_probs [N, V], state)."""


class ShowAndTell:
    """The decoder's layers and its training model."""

    kind, id_prefix, config_type = "show_and_tell", "showtell", DecoderConfig

    def __init__(self, config: DecoderConfig):
        self.config = config
        self.image_projection = keras.layers.Dense(config.embedding_dim, name="image_projection")
        self.word_embedding = keras.layers.Embedding(
            config.vocab_size, config.embedding_dim, name="word_embedding"
        )
        self.lstm = keras.layers.LSTM(
            config.lstm_units, return_sequences=True, return_state=True, name="lstm"
        )
        self.dropout = keras.layers.Dropout(config.dropout, name="dropout")
        self.logits = keras.layers.Dense(config.vocab_size, name="logits")
        self.training_model = self._build_training_model()

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return (self.config.feature_dim,)

    def _build_training_model(self) -> keras.Model:
        features = keras.Input(self.feature_shape, name="features")
        tokens = keras.Input((None,), dtype="int32", name="tokens")
        image = keras.ops.expand_dims(self.image_projection(features), 1)
        words = self.word_embedding(tokens[:, :-1])
        outputs, _, _ = self.lstm(keras.ops.concatenate([image, words], axis=1))
        logits = self.logits(self.dropout(outputs[:, 1:]))
        return keras.Model([features, tokens], logits, name="show_and_tell")

    # One time step goes through the LSTM's cell, as the layer does inside its loop: the same
    # weights and arithmetic, and a graph without a loop, which exports (OpenVINO, beamcap's
    # int8 engine, has no rule for TensorFlow's loop over a sequence).
    def initial_state(self, features) -> tuple:
        """im2txt's ``feed_image``: the projected image through the LSTM from a zero state."""
        image = self.image_projection(features)
        zero = keras.ops.tile(keras.ops.zeros_like(image[:, :1]), [1, self.config.lstm_units])
        _, (h, c) = self.lstm.cell(image, [zero, zero])
        return h, c

    def step(self, tokens, state) -> tuple:
        """im2txt's ``inference_step``: one word through the LSTM, log-softmax over the words."""
        outputs, (h, c) = self.lstm.cell(self.word_embedding(tokens), list(state))
        return keras.ops.log_softmax(self.logits(outputs), axis=-1), (h, c)


def masked_cross_entropy(targets, logits, pad_id: int = 0):
    """Mean cross-entropy over the non-padding target tokens of a batch."""
    mask = keras.ops.cast(keras.ops.not_equal(targets, pad_id), logits.dtype)
    losses = keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
    return keras.ops.sum(losses * mask) / keras.ops.maximum(keras.ops.sum(mask), 1.0)


class DecoderStepper:
    """The batched step protocol (docs/architecture.md) over any :class:`Decoder`.

    The decoder's ``initial_state`` and ``step`` are traced once into Keras models,
    ``initial_state_model`` and ``step_model`` (sharing its layers, so its weights as they
    change; what the int8 engine exports), and run compiled, with rows padded to a multiple of
    ``row_multiple`` so that beam search, whose row count changes as hypotheses finish,
    triggers only a few compilations. States are tuples of numpy arrays, row axis first.
    """

    def __init__(self, decoder: Decoder, *, start_id: int, end_id: int, row_multiple=16):
        self.decoder = decoder
        self.start_id, self.end_id = start_id, end_id
        self.row_multiple = row_multiple
        features = keras.Input(decoder.feature_shape, name="features")
        state = tuple(decoder.initial_state(features))
        self.initial_state_model = keras.Model([features], list(state), name="initial_state")
        tokens = keras.Input((), dtype="int32", name="tokens")
        state_inputs = [
            keras.Input(tuple(part.shape[1:]), dtype=part.dtype, name=f"state_{index}")
            for index, part in enumerate(state)
        ]
        log_probs, next_state = decoder.step(tokens, tuple(state_inputs))
        self.step_model = keras.Model(
            [tokens, *state_inputs], [log_probs, *next_state], name="step"
        )
        self._top_k_models: dict[int, keras.Model] = {}

    def _run(self, model: keras.Model, inputs: list[np.ndarray]) -> list[np.ndarray]:
        rows = len(inputs[0])
        padded_rows = padded_to(rows, self.row_multiple)
        outputs = model.predict_on_batch([pad_rows(np.asarray(x), padded_rows) for x in inputs])
        return [np.asarray(output)[:rows] for output in keras.tree.flatten(outputs)]

    def initial_state(self, features) -> tuple[np.ndarray, ...]:
        features = np.asarray(features, dtype="float32")
        return tuple(self._run(self.initial_state_model, [features]))

    def step(self, tokens, state) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        tokens = np.asarray(tokens, dtype="int32")
        log_probs, *state = self._run(self.step_model, [tokens, *state])
        return log_probs, tuple(state)

    def step_top_k(self, tokens, state, k: int):
        """``step`` with the top-k taken inside the compiled model (see ``beam_search``)."""
        step = self.step_model
        k = min(k, step.outputs[0].shape[-1])
        if k not in self._top_k_models:
            values, ids = keras.ops.top_k(step.outputs[0], k)
            self._top_k_models[k] = keras.Model(step.inputs, [values, ids, *step.outputs[1:]])
        tokens = np.asarray(tokens, dtype="int32")
        values, ids, *state = self._run(self._top_k_models[k], [tokens, *state])
        return (*ties_to_lower_id(values, ids), tuple(state))
