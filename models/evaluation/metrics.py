"""Caption metrics: BLEU-1..4, ROUGE-L and CIDEr-D, computed by ``pycocoevalcap``'s scorers.

Captions are first tokenised with :func:`models.captioner.vocabulary.tokenize` (lower case,
punctuation dropped): COCO's own PTB tokenizer needs Java, and for plain English captions the
two agree.
"""

from __future__ import annotations

from collections.abc import Sequence

from models.captioner.vocabulary import tokenize


def caption_scores(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]]
) -> dict[str, float]:
    """Corpus scores of one hypothesis per image against that image's references."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if len(hypotheses) != len(references):
        raise ValueError("one list of references per hypothesis")
    if not hypotheses:
        return {}
    if any(not refs for refs in references):
        raise ValueError("every image needs at least one reference caption")
    res = {i: [" ".join(tokenize(h))] for i, h in enumerate(hypotheses)}
    gts = {i: [" ".join(tokenize(r)) for r in refs] for i, refs in enumerate(references)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    return {
        **{f"bleu{n}": float(score) for n, score in enumerate(bleu, start=1)},
        "rouge_l": float(rouge),
        "cider_d": float(cider),
    }
