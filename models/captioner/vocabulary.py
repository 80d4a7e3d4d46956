"""Caption vocabulary: normalisation, tokenisation, ids, and the ``word count`` file format.

Normalisation (applied to every caption before counting or encoding):
  1. Unicode NFKC, then lower case;
  2. every character that is not a letter, digit or apostrophe becomes a space
     (so ``"dog's"`` stays one token, ``"black-and-white"`` becomes three);
  3. apostrophes at the edges of a token are stripped; tokens are split on whitespace.

Ids: ``<pad>`` = 0, ``<start>`` = 1, ``<end>`` = 2, ``<unk>`` = 3, then words by descending count,
ties in alphabetical order. The file has one ``word count`` line per id in id order, the layout of
im2txt's ``word_counts.txt`` with the special tokens first, so the line number is the id.
"""

from __future__ import annotations

import collections
import re
import unicodedata
from collections.abc import Iterable, Sequence

from models import storage

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIAL_TOKENS = (PAD, START, END, UNK)
_NOT_WORD = re.compile(r"[^\w']|_")


def tokenize(caption: str) -> list[str]:
    """Normalises a caption and splits it into words (see the module docstring)."""
    text = unicodedata.normalize("NFKC", caption).lower()
    tokens = (token.strip("'") for token in _NOT_WORD.sub(" ", text).split())
    return [token for token in tokens if token]


class Vocabulary:
    """A fixed word <-> id mapping with counts."""

    def __init__(self, words: Sequence[str], counts: Sequence[int]):
        if tuple(words[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"a vocabulary must start with {SPECIAL_TOKENS}, got {words[:4]}")
        if len(set(words)) != len(words):
            raise ValueError("a vocabulary has duplicate words")
        self.words = list(words)
        self.counts = [int(count) for count in counts]
        self._ids = {word: index for index, word in enumerate(self.words)}

    pad_id, start_id, end_id, unk_id = range(4)

    def __len__(self) -> int:
        return len(self.words)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Vocabulary)
            and self.words == other.words
            and self.counts == other.counts
        )

    @classmethod
    def build(
        cls, captions: Iterable[str], *, min_count: int = 1, max_size: int | None = None
    ) -> Vocabulary:
        """Counts the words of ``captions``; keeps those seen ``min_count`` times or more.

        ``max_size`` caps the whole vocabulary, special tokens included.
        """
        word_counts: collections.Counter[str] = collections.Counter()
        num_captions = 0
        for caption in captions:
            word_counts.update(tokenize(caption))
            num_captions += 1
        return cls.from_counts(
            word_counts, num_captions=num_captions, min_count=min_count, max_size=max_size
        )

    @classmethod
    def from_counts(
        cls,
        word_counts: dict[str, int],
        *,
        num_captions: int,
        min_count: int = 1,
        max_size: int | None = None,
    ) -> Vocabulary:
        """Builds from precomputed counts (what a distributed count produces)."""
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        if max_size is not None and max_size <= len(SPECIAL_TOKENS):
            raise ValueError(f"max_size must exceed {len(SPECIAL_TOKENS)}, got {max_size}")
        ranked = sorted(
            (item for item in word_counts.items() if item[0] not in SPECIAL_TOKENS),
            key=lambda item: (-item[1], item[0]),
        )
        kept = [item for item in ranked if item[1] >= min_count]
        if max_size is not None:
            kept = kept[: max_size - len(SPECIAL_TOKENS)]
        unknown = sum(word_counts.values()) - sum(count for _, count in kept)
        words = [*SPECIAL_TOKENS, *(word for word, _ in kept)]
        counts = [0, num_captions, num_captions, unknown, *(count for _, count in kept)]
        return cls(words, counts)

    def id(self, word: str) -> int:
        return self._ids.get(word, self.unk_id)

    def encode(self, caption: str, *, add_start_end: bool = True) -> list[int]:
        """Caption text -> ids; unknown words map to ``<unk>``."""
        ids = [self.id(word) for word in tokenize(caption)]
        return [self.start_id, *ids, self.end_id] if add_start_end else ids

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text; stops at ``<end>``, drops ``<start>`` and ``<pad>``."""
        words = []
        for index in ids:
            index = int(index)
            if index == self.end_id:
                break
            if index not in (self.pad_id, self.start_id):
                words.append(self.words[index])
        return " ".join(words)

    def to_text(self) -> str:
        lines = zip(self.words, self.counts, strict=True)
        return "".join(f"{word} {count}\n" for word, count in lines)

    @classmethod
    def from_text(cls, text: str, *, source: str = "<text>") -> Vocabulary:
        words, counts = [], []
        for number, line in enumerate(text.splitlines(), start=1):
            word, _, count = line.rpartition(" ")
            if not word or not count.isdigit():
                raise ValueError(f"{source}:{number}: expected 'word count', got {line!r}")
            words.append(word)
            counts.append(int(count))
        return cls(words, counts)

    def save(self, uri: str) -> None:
        storage.write_text(uri, self.to_text())

    @classmethod
    def load(cls, uri: str) -> Vocabulary:
        return cls.from_text(storage.read_text(uri), source=uri)
