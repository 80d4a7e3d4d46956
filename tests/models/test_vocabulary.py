import pytest

from models.captioner.vocabulary import SPECIAL_TOKENS, Vocabulary, tokenize

CAPTIONS = [
    "A red circle.",
    "a RED square, left of a blue circle",
    "The dog's ball is black-and-white",
    "a red circle",
]


def test_tokenize_normalises_case_punctuation_and_unicode():
    assert tokenize("  A Red-Circle, left of 'the' dog's ball!\n") == [
        "a",
        "red",
        "circle",
        "left",
        "of",
        "the",
        "dog's",
        "ball",
    ]
    assert tokenize("Ｆｕｌｌｗｉｄｔｈ café_bar") == ["fullwidth", "café", "bar"]
    assert tokenize("...") == []


def test_ids_special_tokens_first_then_by_count():
    vocab = Vocabulary.build(CAPTIONS)
    assert vocab.words[:4] == list(SPECIAL_TOKENS)
    assert (vocab.pad_id, vocab.start_id, vocab.end_id, vocab.unk_id) == (0, 1, 2, 3)
    assert vocab.words[4:7] == ["a", "circle", "red"]  # 4, 3, 3 occurrences; tie alphabetical
    assert vocab.counts[vocab.id("a")] == 4


def test_encode_decode_round_trip_and_unknown_words():
    vocab = Vocabulary.build(CAPTIONS)
    ids = vocab.encode("A red zebra")
    assert ids[0] == vocab.start_id and ids[-1] == vocab.end_id
    assert ids[3] == vocab.unk_id
    assert vocab.decode(ids) == "a red <unk>"
    assert vocab.decode(vocab.encode("a blue square left of a red circle")) == (
        "a blue square left of a red circle"
    )
    assert vocab.decode([vocab.id("red"), vocab.end_id, vocab.id("circle")]) == "red"


def test_min_count_and_max_size():
    vocab = Vocabulary.build(CAPTIONS, min_count=2)
    assert set(vocab.words[4:]) == {"a", "red", "circle"}
    assert vocab.counts[vocab.unk_id] == sum(len(tokenize(c)) for c in CAPTIONS) - 4 - 3 - 3
    assert len(Vocabulary.build(CAPTIONS, max_size=6)) == 6
    with pytest.raises(ValueError, match="min_count"):
        Vocabulary.build(CAPTIONS, min_count=0)


def test_save_load_round_trip(tmp_path):
    vocab = Vocabulary.build(CAPTIONS)
    vocab.save(str(tmp_path / "vocab.txt"))
    lines = (tmp_path / "vocab.txt").read_text().splitlines()
    assert lines[0] == "<pad> 0" and lines[4] == "a 4"
    assert Vocabulary.load(str(tmp_path / "vocab.txt")) == vocab


def test_malformed_file_names_the_line(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("<pad> 0\n<start> 4\n<end> 4\n<unk> 0\nred many\n")
    with pytest.raises(ValueError, match=r"vocab.txt:5"):
        Vocabulary.load(str(path))
