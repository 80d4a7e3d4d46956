"""Caption metrics with the COCO-caption definitions (``pycocoevalcap``), in plain Python.

Captions are tokenised with :func:`models.vocabulary.tokenize` (lower case, punctuation
dropped), close to what COCO's PTB tokenizer does for plain English captions.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence

from models.vocabulary import tokenize

_TINY, _SMALL = 1e-9, 1e-15  # coco-caption's smoothing constants


def _ngrams(words: Sequence[str], n: int) -> collections.Counter:
    return collections.Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def corpus_bleu(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]], max_n: int = 4
) -> list[float]:
    """BLEU-1..``max_n`` over a corpus, as coco-caption's ``Bleu`` (option "closest").

    Clipped n-gram matches and lengths are summed over the corpus; the brevity penalty uses, per
    hypothesis, the reference length closest to it (ties to the shorter).
    """
    if len(hypotheses) != len(references):
        raise ValueError("one list of references per hypothesis")
    correct, total = [0] * max_n, [0] * max_n
    hyp_length = ref_length = 0
    for hypothesis, refs in zip(hypotheses, references, strict=True):
        words = tokenize(hypothesis)
        ref_words = [tokenize(ref) for ref in refs]
        hyp_length += len(words)
        ref_length += min((abs(len(r) - len(words)), len(r)) for r in ref_words)[1]
        for n in range(1, max_n + 1):
            counts = _ngrams(words, n)
            max_ref = collections.Counter()
            for ref in ref_words:
                max_ref |= _ngrams(ref, n)
            correct[n - 1] += sum(min(c, max_ref[g]) for g, c in counts.items())
            total[n - 1] += max(len(words) - n + 1, 0)
    scores, product = [], 1.0
    brevity = 1.0 if hyp_length >= ref_length else math.exp(1 - ref_length / (hyp_length + _TINY))
    for n in range(max_n):
        product *= (correct[n] + _TINY) / (total[n] + _SMALL)
        scores.append(brevity * product ** (1.0 / (n + 1)))
    return scores
