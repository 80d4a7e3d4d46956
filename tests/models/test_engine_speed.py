"""``beamcap quantize``'s speed check ranks engines by their steady speed: a batch shape's first
compile and a disturbed pass do not decide which engine ``auto`` runs."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np

from models.captioner.engine_build import measure


class _Engine:
    """A stand-in engine: ``per_image`` seconds an image; ``compile_s`` more the first time it
    sees a batch size (as OpenVINO and tf.function do); ``stall_s`` more on its ``stall_on``-th
    encode call (a pass the machine disturbed)."""

    def __init__(self, per_image: float, compile_s: float, stall_s: float = 0.0, stall_on=-1):
        self.per_image, self.compile_s, self.stall_s, self.stall_on = (
            per_image, compile_s, stall_s, stall_on,
        )  # fmt: skip
        self.seen, self.calls = set(), 0
        self.encoder = SimpleNamespace(encode=self.encode)

    def encode(self, images: np.ndarray) -> np.ndarray:
        seconds = self.per_image * len(images)
        if len(images) not in self.seen:
            self.seen.add(len(images))
            seconds += self.compile_s
        if self.calls == self.stall_on:
            seconds += self.stall_s
        self.calls += 1
        time.sleep(seconds)
        return images.reshape(len(images), -1)[:, :4].astype(np.float32) + 1.0

    def caption_features(self, features: np.ndarray, **search) -> list:
        return [[SimpleNamespace(tokens=[1, 2])] for _ in features]


def test_engines_rank_by_their_steady_speed_not_a_first_compile_or_a_stall():
    images = np.zeros((100, 2, 2, 3), np.uint8)  # batches of 32, 32, 32 and 4
    fast = _Engine(per_image=0.001, compile_s=0.3, stall_s=0.5, stall_on=6)  # a timed pass
    slow = _Engine(per_image=0.002, compile_s=0.02)
    reference = _Engine(per_image=0.004, compile_s=0.02)

    measured = measure(reference, {"int8": fast, "bf16": slow}, images, batch_size=32)

    int8, bf16 = (measured[name]["speed"] for name in ("int8", "bf16"))
    assert int8.images_per_second > 1.5 * bf16.images_per_second, (int8, bf16)
    assert 2.5 < int8.images_per_second / int8.fp32_images_per_second < 4.5, int8
    assert measured["int8"]["fidelity"].same_best_caption == 1.0
    assert measured["int8"]["fidelity"].passed
