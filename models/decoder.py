"""Show-and-Tell caption decoder (Vinyals et al. 2015, as in im2txt), in Keras 3.

The image embedding goes through a Dense projection (no activation) and is the first LSTM input,
from a zero state; then ``<start>`` and the caption's words follow, each embedded. The LSTM output
goes through dropout and a Dense layer over the vocabulary.

Two views share one set of layers:
  ``training_model``  (features [B, D], tokens [B, T]) -> logits [B, T-1, V] for teacher forcing:
                      the input is ``tokens[:, :-1]``, the target ``tokens[:, 1:]``;
  ``DecoderStepper``  the step protocol (docs/architecture.md) that beam search drives.
"""

from __future__ import annotations

import keras
import numpy as np

from models.configs import DecoderConfig
from models.encoder import pad_rows

__all__ = ["DecoderConfig", "DecoderStepper", "ShowAndTell", "masked_cross_entropy"]


class ShowAndTell:
    """The decoder's layers and the Keras models built from them."""

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
        self.initial_state_model, self.step_model = self._build_inference_models()

    def _build_training_model(self) -> keras.Model:
        features = keras.Input((self.config.feature_dim,), name="features")
        tokens = keras.Input((None,), dtype="int32", name="tokens")
        image = keras.ops.expand_dims(self.image_projection(features), 1)
        words = self.word_embedding(tokens[:, :-1])
        outputs, _, _ = self.lstm(keras.ops.concatenate([image, words], axis=1))
        logits = self.logits(self.dropout(outputs[:, 1:]))
        return keras.Model([features, tokens], logits, name="show_and_tell")

    def _build_inference_models(self) -> tuple[keras.Model, keras.Model]:
        features = keras.Input((self.config.feature_dim,), name="features")
        image = keras.ops.expand_dims(self.image_projection(features), 1)
        _, h, c = self.lstm(image)
        initial_state_model = keras.Model([features], [h, c], name="feed_image")

        tokens = keras.Input((), dtype="int32", name="tokens")
        state_h = keras.Input((self.config.lstm_units,), name="state_h")
        state_c = keras.Input((self.config.lstm_units,), name="state_c")
        words = keras.ops.expand_dims(self.word_embedding(tokens), 1)
        outputs, h, c = self.lstm(words, initial_state=[state_h, state_c])
        log_probs = keras.ops.log_softmax(self.logits(outputs[:, 0]), axis=-1)
        step_model = keras.Model([tokens, state_h, state_c], [log_probs, h, c], name="step")
        return initial_state_model, step_model

    @property
    def weights(self):
        return self.training_model.weights


def masked_cross_entropy(targets, logits, pad_id: int = 0):
    """Mean cross-entropy over the non-padding target tokens of a batch."""
    mask = keras.ops.cast(keras.ops.not_equal(targets, pad_id), logits.dtype)
    losses = keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
    return keras.ops.sum(losses * mask) / keras.ops.maximum(keras.ops.sum(mask), 1.0)


class DecoderStepper:
    """The batched step protocol (docs/architecture.md) over a :class:`ShowAndTell` decoder.

    A state is ``(h, c)``, each [N, lstm_units]. Calls run the compiled predict functions with
    rows padded to a multiple of ``row_multiple`` so that beam search, whose row count changes
    as hypotheses finish, triggers only a few compilations.
    """

    def __init__(self, decoder: ShowAndTell, *, start_id: int, end_id: int, row_multiple=16):
        self.decoder = decoder
        self.start_id, self.end_id = start_id, end_id
        self.row_multiple = row_multiple
        self._top_k_models: dict[int, keras.Model] = {}

    def _run(self, model: keras.Model, inputs: list[np.ndarray]) -> list[np.ndarray]:
        rows = len(inputs[0])
        padded_rows = -(-rows // self.row_multiple) * self.row_multiple
        outputs = model.predict_on_batch([pad_rows(np.asarray(x), padded_rows) for x in inputs])
        return [np.asarray(output)[:rows] for output in outputs]

    def initial_state(self, features) -> tuple[np.ndarray, np.ndarray]:
        features = np.asarray(features, dtype="float32")
        return tuple(self._run(self.decoder.initial_state_model, [features]))

    def step(self, tokens, state) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        tokens = np.asarray(tokens, dtype="int32")
        log_probs, h, c = self._run(self.decoder.step_model, [tokens, *state])
        return log_probs, (h, c)

    def step_top_k(self, tokens, state, k: int):
        """``step`` with the top-k taken inside the compiled model (see ``beam_search``)."""
        k = min(k, self.decoder.config.vocab_size)
        if k not in self._top_k_models:
            step = self.decoder.step_model
            values, ids = keras.ops.top_k(step.outputs[0], k)
            self._top_k_models[k] = keras.Model(step.inputs, [values, ids, *step.outputs[1:]])
        tokens = np.asarray(tokens, dtype="int32")
        values, ids, h, c = self._run(self._top_k_models[k], [tokens, *state])
        return values, ids, (h, c)
