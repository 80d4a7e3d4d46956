"""Scoring captions: BLEU, ROUGE-L and CIDEr-D against references, attribute accuracy against
a synthetic scene."""
