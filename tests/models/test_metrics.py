import math

import pytest

from models.metrics import corpus_bleu


def test_identical_captions_score_one():
    assert corpus_bleu(["a red circle on the left"], [["A red circle on the left."]]) == (
        pytest.approx([1.0, 1.0, 1.0, 1.0])
    )


def test_bleu_by_hand():
    # hypothesis: 6 words; reference 1 shares "a red circle" and "on the"; lengths 6 vs 7 and 4.
    hyp = ["a red circle at the left"]
    refs = [["a red circle on the left side", "big blue star"]]
    b1, b2, b3, b4 = corpus_bleu(hyp, refs)
    # unigrams: a red circle the left = 5/6; bigrams: a-red red-circle the-left = 3/5;
    # trigrams: a-red-circle = 1/4; 4-grams: 0/3. Closest reference length: 7 (|7-6| < |3-6|).
    brevity = math.exp(1 - 7 / 6)
    assert b1 == pytest.approx(brevity * 5 / 6)
    assert b2 == pytest.approx(brevity * math.sqrt(5 / 6 * 3 / 5))
    assert b3 == pytest.approx(brevity * (5 / 6 * 3 / 5 * 1 / 4) ** (1 / 3))
    assert b4 == pytest.approx(brevity * (5 / 6 * 3 / 5 * 1 / 4 * 1e-9 / 3) ** (1 / 4), rel=1e-3)


def test_clipping_and_corpus_sums():
    # "the the the" against "the cat": unigram matches clipped to 1 of 3.
    b1, *_ = corpus_bleu(["the the the", "a cat"], [["the cat"], ["a cat"]])
    assert b1 == pytest.approx((1 + 2) / (3 + 2))
    with pytest.raises(ValueError):
        corpus_bleu(["x"], [])
