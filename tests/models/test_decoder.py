import keras
import numpy as np
import pytest

from models.captioner.decoder import (
    DecoderConfig,
    DecoderStepper,
    ShowAndTell,
    masked_cross_entropy,
)

CONFIG = DecoderConfig(vocab_size=40, embedding_dim=16, lstm_units=24, feature_dim=32)


@pytest.fixture(scope="module")
def decoder():
    keras.utils.set_random_seed(0)
    return ShowAndTell(CONFIG)


def batch(rows=4, length=7, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(rows, CONFIG.feature_dim)).astype("float32")
    tokens = rng.integers(4, CONFIG.vocab_size, (rows, length)).astype("int32")
    tokens[:, 0] = 1
    return features, tokens


def test_teacher_forcing_shapes(decoder):
    features, tokens = batch()
    logits = decoder.training_model([features, tokens], training=True)
    assert tuple(logits.shape) == (4, 6, CONFIG.vocab_size)


def test_padding_does_not_change_the_loss(decoder):
    features, tokens = batch(length=6)
    tokens[:, -1] = 2
    tokens[1, 3:] = [2, 0, 0]  # a shorter caption inside the batch
    padded = np.concatenate([tokens, np.zeros((4, 5), "int32")], axis=1)

    def loss(t):
        logits = decoder.training_model([features, t], training=False)
        return float(masked_cross_entropy(t[:, 1:], logits))

    assert loss(padded) == pytest.approx(loss(tokens), rel=1e-6)
    assert loss(tokens) != pytest.approx(loss(np.where(tokens == 0, 5, tokens)), rel=1e-6)


def test_step_reproduces_training_log_probs(decoder):
    features, tokens = batch(rows=3, length=6)
    logits = keras.ops.convert_to_numpy(decoder.training_model([features, tokens], training=False))
    expected = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    stepper = DecoderStepper(decoder, start_id=1, end_id=2)
    state = stepper.initial_state(features)
    assert [part.shape for part in state] == [(3, 24), (3, 24)]
    for t in range(5):
        log_probs, state = stepper.step(tokens[:, t], state)
        np.testing.assert_allclose(log_probs, expected[:, t], atol=2e-5)


def test_step_rows_are_independent(decoder):
    features, tokens = batch(rows=5)
    stepper = DecoderStepper(decoder, start_id=1, end_id=2)
    full, _ = stepper.step(tokens[:, 0], stepper.initial_state(features))
    part, _ = stepper.step(tokens[3:4, 0], stepper.initial_state(features[3:4]))
    np.testing.assert_allclose(full[3], part[0], atol=1e-5)


def test_in_graph_top_k_gives_the_same_beam_search(decoder):
    from models.captioner.beam_search import TopKOfStep, beam_search

    class FullLogProbsOnly(TopKOfStep):  # the top-k taken in numpy
        def __init__(self, stepper):
            self.start_id, self.end_id = stepper.start_id, stepper.end_id
            self.initial_state, self.step = stepper.initial_state, stepper.step

    features, _ = batch(rows=6, seed=4)
    stepper = DecoderStepper(decoder, start_id=1, end_id=2)
    for beam_size in (1, 3, 50):  # 50 > vocabulary: the top-k is clamped
        fast = beam_search(stepper, features, beam_size=beam_size, max_length=8)
        plain = beam_search(FullLogProbsOnly(stepper), features, beam_size=beam_size, max_length=8)
        assert_same_hypotheses(fast, plain)


def assert_same_hypotheses(found, expected):
    """Two beam searches' N-best lists: the same tokens, log-probs within float32 noise."""
    assert [[h.tokens for h in image] for image in found] == [
        [h.tokens for h in image] for image in expected
    ]
    np.testing.assert_allclose(
        [h.log_prob for image in found for h in image],
        [h.log_prob for image in expected for h in image],
        rtol=1e-5,
    )


class GridMean:
    """A decoder over a feature grid [B, 2, 2, D] (as an attention decoder takes): it averages
    the cells, then decodes with a Show-and-Tell decoder's layers."""

    kind, id_prefix, config_type = "grid_mean", "gridmean", DecoderConfig

    def __init__(self, inner: ShowAndTell):
        self.config, self.training_model, self.step = inner.config, None, inner.step
        self.inner = inner

    @property
    def feature_shape(self):
        return (2, 2, self.config.feature_dim)

    def initial_state(self, features):
        return self.inner.initial_state(keras.ops.mean(features, axis=(1, 2)))


def test_the_stepper_drives_any_decoder_of_the_step_protocol(decoder):
    from models.captioner.beam_search import beam_search

    rng = np.random.default_rng(5)
    grid = rng.normal(size=(4, 2, 2, CONFIG.feature_dim)).astype("float32")
    stepper = DecoderStepper(GridMean(decoder), start_id=1, end_id=2)
    assert [part.shape for part in stepper.initial_state(grid)] == [(4, 24), (4, 24)]
    on_grid = beam_search(stepper, grid, max_length=6)
    pooled = beam_search(
        DecoderStepper(decoder, start_id=1, end_id=2), grid.mean(axis=(1, 2)), max_length=6
    )
    assert_same_hypotheses(on_grid, pooled)
