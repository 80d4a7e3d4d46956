"""Batched beam search over the decoder step protocol (docs/architecture.md), in plain numpy.

The semantics are im2txt's ``caption_generator.beam_search`` with its top-k bug fixed, run for
every image and every beam in one ``stepper.step_top_k`` call per time step:

* each live hypothesis expands to its ``beam_size`` most probable next words;
* a word equal to ``end_id`` completes the hypothesis, scored
  ``log_prob / length ** length_penalty`` (length = generated tokens including ``<end>``), into a
  top-``beam_size`` completed set; any other word goes into a top-``beam_size`` live set ranked by
  ``log_prob``;
* the search stops when no hypothesis is live or after ``max_length`` generated tokens; it returns
  the completed set by score, or, only if nothing completed, the live set by ``log_prob``.

Ties are broken deterministically: a completed hypothesis already held beats a new one of equal
score; among new ones, the better-ranked parent wins, then the lower word id. Words of zero
probability (``-inf``) are never expanded.

An image stops early, with an identical result, once its completed set is full and no live
hypothesis can still beat the worst completed one: log-probabilities only fall as words are
added, so ``log_prob / max(length ** length_penalty)`` over the lengths still reachable bounds
every later score. This needs the stepper to return log-probabilities (all <= 0).
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

BEAM_SIZE, MAX_LENGTH = 3, 20  # im2txt's search: every job's default


class Stepper(Protocol):
    """What beam search needs of a decoder (shapes in docs/architecture.md): the state of
    each image's features, then, per step, the ``k`` most probable next words of each row,
    ``k' = min(k, V)`` of them, best first, ties to the lower id (:func:`ties_to_lower_id`),
    with their log-probabilities and the next state. The full [N, V] log-probabilities need
    never leave a compiled model."""

    start_id: int
    end_id: int

    def initial_state(self, features: np.ndarray) -> tuple[np.ndarray, ...]: ...  # [B, ...]

    def step_top_k(
        self, tokens: np.ndarray, state: tuple[np.ndarray, ...], k: int
    ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]: ...  # [N, k'], [N, k'], state


class TopKOfStep:
    """``step_top_k`` for a stepper whose ``step(tokens, state) -> (log_probs[N, V], state)``
    gives every word's log-probability."""

    def step_top_k(self, tokens, state, k: int):
        log_probs, state = self.step(tokens, state)
        log_probs = np.asarray(log_probs)
        words = top_k(log_probs, k)
        return np.take_along_axis(log_probs, words, 1), words, state


@dataclasses.dataclass(frozen=True)
class Hypothesis:
    """A caption: ``tokens`` exclude ``<start>``/``<end>``; ``complete`` is False only for a
    caption cut at ``max_length`` (returned when nothing completed)."""

    tokens: tuple[int, ...]
    log_prob: float
    score: float
    complete: bool = True


def top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` largest values per row, best first, ties to the lower index."""
    if k >= values.shape[1]:
        return np.argsort(-values, axis=1, kind="stable")[:, :k]
    chosen = np.argpartition(-values, k - 1, axis=1)[:, :k]
    kth = np.take_along_axis(values, chosen, 1).min(axis=1)
    tied = (values >= kth[:, None]).sum(axis=1) > k  # a tie straddles the cut: sort fully
    if tied.any():
        chosen[tied] = np.argsort(-values[tied], axis=1, kind="stable")[:, :k]
    return ties_to_lower_id(np.take_along_axis(values, chosen, 1), chosen)[1]


def ties_to_lower_id(values: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's (values, ids) ordered best first, equal values by the lower id: beam
    search's one tie rule, which every stepper's top-k keeps."""
    order = np.lexsort((ids, -values), axis=-1)
    return np.take_along_axis(values, order, 1), np.take_along_axis(ids, order, 1)


def expand(stepper: Stepper, tokens: np.ndarray, state, k: int):
    """One decoder step: the ``k`` best next words per row, their log-probs, the new state."""
    log_probs, words, state = stepper.step_top_k(tokens, state, k)
    log_probs, words = np.asarray(log_probs), np.asarray(words)
    if np.isnan(log_probs).any():
        raise FloatingPointError("the decoder returned NaN log-probabilities")
    return log_probs, words, state


def _length_divisor(length: int, length_penalty: float) -> float:
    return float(length) ** length_penalty if length_penalty else 1.0


class _Completed:
    """The top-``beam_size`` completed hypotheses of every image, best first."""

    def __init__(self, images: int, beam_size: int, max_length: int):
        self.score = np.full((images, beam_size), -np.inf)
        self.log_prob = np.full((images, beam_size), -np.inf)
        self.tokens = np.zeros((images, beam_size, max_length), np.int64)
        self.length = np.zeros((images, beam_size), np.int64)  # tokens before <end>; 0: empty

    def add(self, image, slot, log_prob, tokens, length_penalty):
        """Merges new completions, at most one per (image, slot); held ones win ties."""
        images, beam_size = self.score.shape
        length = tokens.shape[1]
        new_score = np.full((images, beam_size), -np.inf)
        new_score[image, slot] = log_prob / _length_divisor(length + 1, length_penalty)
        new_log_prob = np.full((images, beam_size), -np.inf)
        new_log_prob[image, slot] = log_prob
        new_tokens = np.zeros_like(self.tokens)
        new_tokens[image, slot, :length] = tokens
        merged_score = np.concatenate([self.score, new_score], axis=1)
        keep = np.argsort(-merged_score, axis=1, kind="stable")[:, :beam_size]
        self.score = np.take_along_axis(merged_score, keep, 1)
        self.log_prob = np.take_along_axis(
            np.concatenate([self.log_prob, new_log_prob], axis=1), keep, 1
        )
        self.tokens = np.take_along_axis(
            np.concatenate([self.tokens, new_tokens], axis=1), keep[:, :, None], 1
        )
        new_length = np.zeros_like(self.length)
        new_length[image, slot] = length
        self.length = np.take_along_axis(np.concatenate([self.length, new_length], axis=1), keep, 1)

    def hypotheses(self, image: int) -> list[Hypothesis]:
        held = np.isfinite(self.score[image])
        return [
            Hypothesis(
                tuple(int(t) for t in self.tokens[image, j, : self.length[image, j]]),
                float(self.log_prob[image, j]),
                float(self.score[image, j]),
            )
            for j in np.flatnonzero(held)
        ]


# Over 60 lines: one loop over the time steps, whose arrays (tokens, scores, states, the
# completed set) every part of it updates; apart, they would travel as a dozen arguments.
def beam_search(
    stepper: Stepper,
    features,
    *,
    beam_size: int = BEAM_SIZE,
    max_length: int = MAX_LENGTH,
    length_penalty: float = 0.0,
    num_candidates: int | None = None,
) -> list[list[Hypothesis]]:
    """N-best captions per image, best first, one list per image: ``features``' first axis is
    the image's, the rest whatever the stepper's ``initial_state`` takes ([images, D] pooled,
    [images, H, W, D] a grid)."""
    num_candidates = beam_size if num_candidates is None else num_candidates
    if beam_size < 1 or max_length < 1:
        raise ValueError(f"need beam_size >= 1 and max_length >= 1, got {beam_size}, {max_length}")
    if not 1 <= num_candidates <= beam_size:
        raise ValueError(f"num_candidates must be in [1, beam_size={beam_size}]")
    features = np.asarray(features)
    if features.ndim < 2:
        raise ValueError(
            f"features must be [images, ...] (an image axis, then one image's features), "
            f"got shape {features.shape}"
        )
    images = len(features)
    if images == 0:
        return []

    # Live hypotheses, one row each, ordered by image and then by rank within the image.
    row_image = np.arange(images)
    row_rank = np.zeros(images, np.int64)
    row_log_prob = np.zeros(images)
    row_tokens = np.zeros((images, 0), np.int64)
    last_words = np.full(images, stepper.start_id, np.int64)
    state = tuple(np.asarray(part) for part in stepper.initial_state(features))
    completed = _Completed(images, beam_size, max_length)
    final_live: dict[int, list[Hypothesis]] = {}

    for length in range(1, max_length + 1):
        word_log_probs, words, state = expand(stepper, last_words, state, beam_size)
        width = words.shape[1]  # beam_size, or the vocabulary size if that is smaller
        candidate_log_prob = row_log_prob[:, None] + word_log_probs
        is_end = (words == stepper.end_id) & np.isfinite(candidate_log_prob)

        end_row, end_col = np.nonzero(is_end)
        completed.add(
            row_image[end_row],
            row_rank[end_row],
            candidate_log_prob[end_row, end_col],
            row_tokens[end_row],
            length_penalty,
        )

        # Live candidates per image, laid out as [image, parent_rank * width + choice].
        grid = np.full((images, beam_size * width), -np.inf)
        slots = row_rank[:, None] * width + np.arange(width)
        grid[row_image[:, None], slots] = np.where(is_end, -np.inf, candidate_log_prob)
        order = np.argsort(-grid, axis=1, kind="stable")[:, :beam_size]
        chosen_log_prob = np.take_along_axis(grid, order, 1)
        keep = np.isfinite(chosen_log_prob)

        # Early stop: full completed set that no live hypothesis can beat any more.
        best_live = np.where(keep, chosen_log_prob, -np.inf).max(axis=1)
        divisor = max(
            _length_divisor(length + 1, length_penalty),
            _length_divisor(max_length, length_penalty),
        )
        settled = np.isfinite(completed.score[:, -1]) & (
            completed.score[:, -1] >= best_live / divisor
        )
        keep &= ~settled[:, None]
        new_image, new_rank = np.nonzero(keep)
        parent_rank, choice = np.divmod(order[new_image, new_rank], width)
        row_of = np.full((images, beam_size), -1)
        row_of[row_image, row_rank] = np.arange(len(row_image))
        parent = row_of[new_image, parent_rank]

        row_image, row_rank = new_image, new_rank
        row_log_prob = chosen_log_prob[new_image, new_rank]
        last_words = words[parent, choice]
        row_tokens = np.concatenate([row_tokens[parent], last_words[:, None]], axis=1)
        if len(row_image) == 0:
            break
        if length == max_length:
            for row, image in enumerate(row_image):
                final_live.setdefault(int(image), []).append(
                    Hypothesis(
                        tuple(int(t) for t in row_tokens[row]),
                        float(row_log_prob[row]),
                        float(row_log_prob[row] / _length_divisor(length, length_penalty)),
                        complete=False,
                    )
                )
            break
        state = tuple(np.asarray(part)[parent] for part in state)

    return [
        (completed.hypotheses(image) or final_live.get(image, []))[:num_candidates]
        for image in range(images)
    ]
