import math

import pytest

from models.evaluation.metrics import caption_scores


def test_identical_captions_score_perfectly():
    scores = caption_scores(
        ["a red circle on the left", "two small green stars"],
        [["A red circle on the left."], ["Two small green stars!"]],
    )
    for n in (1, 2, 3, 4):
        assert scores[f"bleu{n}"] == pytest.approx(1.0)
    assert scores["rouge_l"] == pytest.approx(1.0)
    # coco-caption scales CIDEr-D by 10; captions need 4+ words for the 4-gram term
    assert scores["cider_d"] == pytest.approx(10.0)


def test_bleu_by_hand():
    # hypothesis: 6 words; reference 1 shares "a red circle" and "the left"; lengths 7 and 3.
    scores = caption_scores(
        ["a red circle at the left"], [["a red circle on the left side", "big blue star"]]
    )
    # unigrams 5/6; bigrams a-red red-circle the-left 3/5; trigrams 1/4; 4-grams 0/3.
    # Closest reference length is 7, so the brevity penalty is exp(1 - 7/6).
    brevity = math.exp(1 - 7 / 6)
    assert scores["bleu1"] == pytest.approx(brevity * 5 / 6, rel=1e-6)
    assert scores["bleu2"] == pytest.approx(brevity * math.sqrt(5 / 6 * 3 / 5), rel=1e-6)
    assert scores["bleu3"] == pytest.approx(brevity * (5 / 6 * 3 / 5 / 4) ** (1 / 3), rel=1e-6)


def test_rouge_l_by_hand():
    # LCS with the first reference: "a red circle the left" = 5 words; P = 5/6, R = 5/7.
    scores = caption_scores(
        ["a red circle at the left"], [["a red circle on the left side", "big blue star"]]
    )
    precision, recall, beta = 5 / 6, 5 / 7, 1.2
    expected = (1 + beta**2) * precision * recall / (recall + beta**2 * precision)
    assert scores["rouge_l"] == pytest.approx(expected)


def test_cider_d_rewards_consensus_and_punishes_wrong_words():
    references = [["a red circle on the left"] * 3, ["a blue star on the right"] * 3]
    right = caption_scores(["a red circle on the left", "a blue star on the right"], references)
    wrong = caption_scores(["a red circle on the right", "a blue star on the left"], references)
    assert right["cider_d"] > wrong["cider_d"] > 0


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="one list of references"):
        caption_scores(["x"], [])
    with pytest.raises(ValueError, match="at least one reference"):
        caption_scores(["x"], [[]])
    assert caption_scores([], []) == {}
