"""Stable train / val / test splits by image id: the same on every run, runner and machine."""

from __future__ import annotations

import hashlib

SPLITS = ("train", "val", "test")


def split_for(image_id: str, *, val_fraction: float, test_fraction: float) -> str:
    """Stable split of an image id: the same on every run, runner and machine."""
    if not (val_fraction >= 0 and test_fraction >= 0 and val_fraction + test_fraction < 1):
        raise ValueError("need 0 <= val_fraction, test_fraction and their sum < 1")
    bucket = int.from_bytes(hashlib.sha256(image_id.encode("utf-8")).digest()[:8], "big")
    position = bucket / 2**64
    if position < test_fraction:
        return "test"
    if position < test_fraction + val_fraction:
        return "val"
    return "train"
