"""A hand-made language model for beam-search tests, and two plain-Python searches to compare with.

``ToyStepper`` draws each next-word distribution from a seeded random table, indexed by the image
and a hash of the whole prefix, so every prefix has its own distribution (as in a real decoder).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from models.captioner.beam_search import Hypothesis, TopKOfStep


class ToyStepper(TopKOfStep):
    start_id, end_id = 0, 1
    _PRIME = 1_000_003

    def __init__(self, vocab_size: int, *, seed: int = 0, rows: int = 4096, sharpness=1.5):
        rng = np.random.default_rng(seed)
        logits = rng.normal(0.0, sharpness, (rows, vocab_size))
        self.table = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        self.calls: list[int] = []  # rows per step call, to check batching

    def initial_state(self, features):
        image = np.asarray(features)[:, 0].astype(np.int64)
        return image, np.zeros_like(image)

    def step(self, tokens, state):
        image, prefix = state
        prefix = (prefix * 31 + np.asarray(tokens) + 7) % self._PRIME
        self.calls.append(len(image))
        rows = (image * 7919 + prefix) % len(self.table)
        return self.table[rows].astype(np.float32), (image, prefix)

    def log_probs(self, image: int, tokens) -> list[np.ndarray]:
        """The distributions seen along ``<start>, *tokens`` for one image, without batching."""
        state = (np.array([image]), np.array([0]))
        out = []
        for token in [self.start_id, *tokens]:
            log_probs, state = self.step(np.array([token]), state)
            out.append(log_probs[0])
        return out


def divisor(length: int, penalty: float) -> float:
    return length**penalty if penalty else 1.0


def reference_beam_search(stepper, image, *, beam_size, max_length, length_penalty=0.0):
    """The beam-search semantics of docs/architecture.md written plainly, one image and one
    hypothesis at a time."""
    live = [((), 0.0, None)]  # tokens, log_prob, state
    completed: list[Hypothesis] = []
    state0 = stepper.initial_state(np.array([[image]]))
    for _ in range(max_length):
        candidates = []
        for tokens, log_prob, state in live:
            last = tokens[-1] if tokens else stepper.start_id
            log_probs, new_state = stepper.step(np.array([last]), state or state0)
            ranked = sorted(range(len(log_probs[0])), key=lambda w: (-log_probs[0][w], w))
            for word in ranked[:beam_size]:
                total = log_prob + float(log_probs[0][word])
                if math.isfinite(total):
                    candidates.append((tokens, word, total, new_state))
        new_live = []
        for tokens, word, total, state in candidates:
            if word == stepper.end_id:
                score = total / divisor(len(tokens) + 1, length_penalty)
                completed.append(Hypothesis(tokens, total, score))
            else:
                new_live.append((tokens + (word,), total, state))
        # Python's sort is stable: held completions come first, so they win ties.
        completed = sorted(completed, key=lambda h: -h.score)[:beam_size]
        live = sorted(new_live, key=lambda item: -item[1])[:beam_size]
        if not live:
            break
    if completed:
        return completed
    return [
        Hypothesis(tokens, lp, lp / divisor(max_length, length_penalty), complete=False)
        for tokens, lp, _ in live
    ]


def exhaustive_search(stepper, image, *, vocab_size, max_length, length_penalty=0.0):
    """Every caption of up to ``max_length`` tokens (counting ``<end>``), best score first."""
    found = []
    for length in range(1, max_length + 1):
        for words in itertools.product(
            [w for w in range(vocab_size) if w != stepper.end_id], repeat=length - 1
        ):
            steps = stepper.log_probs(image, words)
            log_prob = sum(float(steps[i][w]) for i, w in enumerate(words))
            log_prob += float(steps[-1][stepper.end_id])
            found.append(Hypothesis(words, log_prob, log_prob / divisor(length, length_penalty)))
    return sorted(found, key=lambda h: -h.score)
