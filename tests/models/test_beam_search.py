import math

import numpy as np
import pytest

from models.captioner.beam_search import (
    Hypothesis,
    TopKOfStep,
    beam_search,
    ties_to_lower_id,
    top_k,
)
from tests.models.toy_stepper import ToyStepper, exhaustive_search, reference_beam_search


def assert_same_hypotheses(got, expected):
    assert [h.tokens for h in got] == [h.tokens for h in expected]
    assert [h.complete for h in got] == [h.complete for h in expected]
    np.testing.assert_allclose([h.log_prob for h in got], [h.log_prob for h in expected], rtol=1e-9)
    np.testing.assert_allclose([h.score for h in got], [h.score for h in expected], rtol=1e-9)


def features_for(images):
    return np.array([[image, 0.5] for image in images], dtype=np.float32)


@pytest.mark.parametrize("penalty", [0.0, 0.7, 1.5])
@pytest.mark.parametrize("max_length", [1, 2, 4])
def test_wide_beam_equals_exhaustive_search(penalty, max_length):
    vocab_size = 4  # with <start> and <end>: every live prefix fits in the beam below
    stepper = ToyStepper(vocab_size, seed=3)
    beam = 3**max_length
    got = beam_search(
        stepper,
        features_for([5]),
        beam_size=beam,
        max_length=max_length,
        length_penalty=penalty,
    )[0]
    expected = exhaustive_search(
        stepper, 5, vocab_size=vocab_size, max_length=max_length, length_penalty=penalty
    )
    assert_same_hypotheses(got, expected[:beam])


@pytest.mark.parametrize("beam_size", [1, 2, 3, 5])
@pytest.mark.parametrize("max_length", [1, 3, 8, 20])
@pytest.mark.parametrize("penalty", [0.0, 1.0, 2.5])
def test_batched_search_equals_plain_one_image_search(beam_size, max_length, penalty):
    stepper = ToyStepper(12, seed=beam_size * 100 + max_length)
    images = [0, 1, 2, 3, 4, 5, 6]
    got = beam_search(
        stepper,
        features_for(images),
        beam_size=beam_size,
        max_length=max_length,
        length_penalty=penalty,
    )
    for image, hypotheses in zip(images, got, strict=True):
        expected = reference_beam_search(
            stepper, image, beam_size=beam_size, max_length=max_length, length_penalty=penalty
        )
        assert_same_hypotheses(hypotheses, expected)


def test_many_images_give_the_same_n_best_as_each_alone():
    stepper = ToyStepper(30, seed=11)
    images = list(range(64))
    together = beam_search(stepper, features_for(images), beam_size=4, max_length=12)
    for image in images:
        alone = beam_search(stepper, features_for([image]), beam_size=4, max_length=12)[0]
        assert_same_hypotheses(together[image], alone)


def test_one_step_call_per_time_step_for_the_whole_batch():
    stepper = ToyStepper(30, seed=2)
    beam_search(stepper, features_for(range(16)), beam_size=3, max_length=7)
    assert 1 <= len(stepper.calls) <= 7
    assert stepper.calls[0] == 16 and max(stepper.calls) <= 16 * 3


class ChainStepper(TopKOfStep):
    """Always prefers word (previous + 1) strongly; <end> after word 5."""

    start_id, end_id, vocab = 0, 1, 8

    def initial_state(self, features):
        return (np.zeros(len(features), np.int64),)

    def step(self, tokens, state):
        tokens = np.asarray(tokens)
        probs = np.full((len(tokens), self.vocab), 0.01)
        favourite = np.where(tokens == 0, 2, np.where(tokens >= 5, 1, tokens + 1))
        probs[np.arange(len(tokens)), favourite] = 1.0
        probs /= probs.sum(axis=1, keepdims=True)
        return np.log(probs), state


@pytest.mark.parametrize("beam_size", [1, 2, 3])
def test_keeps_the_most_probable_words(beam_size):
    """im2txt once shipped ``argsort(p)[:-beam][::-1]``, which drops the best words."""
    best = beam_search(ChainStepper(), np.zeros((2, 3)), beam_size=beam_size, max_length=10)
    for hypotheses in best:
        assert hypotheses[0].tokens == (2, 3, 4, 5)
        assert hypotheses[0].complete
        assert len(hypotheses) == beam_size


def test_top_k_orders_by_value_then_lower_index():
    values = np.array([[0.1, 0.5, 0.5, 0.9, 0.5], [3.0, 2.0, 1.0, 0.0, -1.0]])
    assert top_k(values, 3).tolist() == [[3, 1, 2], [0, 1, 2]]
    assert top_k(values, 5).tolist() == [[3, 1, 2, 4, 0], [0, 1, 2, 3, 4]]


def test_returns_truncated_live_hypotheses_when_nothing_completes():
    class NeverEnds(ChainStepper):
        def step(self, tokens, state):
            log_probs, state = super().step(tokens, state)
            log_probs[:, self.end_id] = -np.inf
            return log_probs, state

    [hypotheses] = beam_search(NeverEnds(), np.zeros((1, 3)), beam_size=2, max_length=4)
    assert [h.complete for h in hypotheses] == [False, False]
    assert hypotheses[0].tokens == (2, 3, 4, 5)
    assert hypotheses[0].log_prob >= hypotheses[1].log_prob


def test_scores_are_length_normalised_log_probs():
    [hypotheses] = beam_search(
        ToyStepper(9, seed=1), features_for([0]), beam_size=3, max_length=6, length_penalty=1.0
    )
    for h in hypotheses:
        assert h.score == pytest.approx(h.log_prob / (len(h.tokens) + 1))
    assert [h.score for h in hypotheses] == sorted((h.score for h in hypotheses), reverse=True)


def test_num_candidates_truncates_and_is_validated():
    stepper = ToyStepper(9, seed=1)
    [hypotheses] = beam_search(stepper, features_for([0]), beam_size=4, num_candidates=2)
    assert len(hypotheses) == 2
    with pytest.raises(ValueError, match="num_candidates"):
        beam_search(stepper, features_for([0]), beam_size=2, num_candidates=3)
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(stepper, features_for([0]), beam_size=0)
    assert beam_search(stepper, np.zeros((0, 2))) == []


def test_is_deterministic():
    stepper = ToyStepper(50, seed=4)
    first = beam_search(stepper, features_for(range(9)), beam_size=3, max_length=15)
    second = beam_search(stepper, features_for(range(9)), beam_size=3, max_length=15)
    assert first == second
    assert isinstance(first[0][0], Hypothesis) and math.isfinite(first[0][0].score)


def test_nan_log_probs_are_an_error():
    class Broken(ChainStepper):
        def step(self, tokens, state):
            log_probs, state = super().step(tokens, state)
            return log_probs * np.nan, state

    with pytest.raises(FloatingPointError, match="NaN"):
        beam_search(Broken(), np.zeros((1, 3)))


class GridStepper(ToyStepper):
    """The toy model over per-image features of any shape (an attention decoder's grid): the
    image id is every cell's value."""

    def initial_state(self, features):
        features = np.asarray(features)
        return super().initial_state(features.reshape(len(features), -1))


@pytest.mark.parametrize("shape", [(3, 2), (2, 2, 3)])
def test_features_of_any_per_image_shape(shape):
    images = [4, 0, 7]
    grid = np.stack([np.full(shape, image, np.float32) for image in images])
    got = beam_search(GridStepper(20, seed=2), grid, beam_size=3, max_length=6)
    expected = beam_search(ToyStepper(20, seed=2), features_for(images), beam_size=3, max_length=6)
    assert len(got) == len(images)
    for got_image, expected_image in zip(got, expected, strict=True):
        assert_same_hypotheses(got_image, expected_image)
    assert beam_search(GridStepper(20), np.zeros((0, *shape))) == []


def test_features_without_an_image_axis_are_refused():
    with pytest.raises(ValueError, match=r"features must be \[images, \.\.\.\].*got shape \(2,\)"):
        beam_search(ToyStepper(9), np.array([4.0, 0.5]))


def test_every_stepper_keeps_the_one_tie_rule():
    """Equal log-probabilities come lower id first, from the numpy top-k and the rule alone."""
    values = np.array([[0.0, -1.0, -1.0, 0.0, -1.0]])
    assert top_k(values, 3).tolist() == [[0, 3, 1]]
    ordered, ids = ties_to_lower_id(np.array([[-1.0, 0.0, -1.0]]), np.array([[9, 4, 2]]))
    assert ordered.tolist() == [[0.0, -1.0, -1.0]] and ids.tolist() == [[4, 2, 9]]
