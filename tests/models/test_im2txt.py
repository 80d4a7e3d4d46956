"""The im2txt importer against im2txt's own inference on the reference model (tf-slim's
InceptionV3, TensorFlow's BasicLSTMCell, random weights): same initial state, same
log-probabilities at every step, same N-best as im2txt's CaptionGenerator."""

import dataclasses
import functools

import numpy as np
import pytest

from models.captioner.im2txt import (
    LSTM_NAMES,
    Im2txtError,
    Source,
    build_decoder,
    build_encoder,
    check_variables,
    read_checkpoint,
    read_word_counts,
)
from models.datasets.synthetic import SynthConfig, make_example
from tests.models.im2txt_reference import caption_generator
from transforms.decode import decode_image

# on one test worker with test_import_im2txt: the reference model is built once
pytestmark = pytest.mark.xdist_group("im2txt")

TOLERANCE = 1e-4
PREPROCESSING = {"method": "im2txt", "resize": 346}


@functools.cache
def images(count=3) -> np.ndarray:
    """Synthetic photos through the caption job's im2txt decode: uint8 [count, 299, 299, 3]."""
    return np.stack(
        [
            decode_image(make_example(SynthConfig(seed=5), i)[2], 299, preprocessing=PREPROCESSING)[
                0
            ]
            for i in range(count)
        ]
    )


@functools.cache
def loaded(uri):
    from models.captioner.bundle import load_bundle

    return load_bundle(uri)


def im2txt_ids(vocabulary, reference) -> list:
    """For each beamcap id, the im2txt id of the same word (None for <pad>)."""
    named = {"<start>": "<S>", "<end>": "</S>", "<unk>": "<UNK>"}
    ids = []
    for word in vocabulary.words:
        if word == "<pad>":
            ids.append(None)
        elif word.startswith("<unused-"):
            ids.append(int(word.removeprefix("<unused-").rstrip(">")))
        else:
            ids.append(reference.words.index(named.get(word, word)))
    return ids


def initial_state(bundle, pixels):
    """beamcap's (h, c) as im2txt's concatenated state [c, h]."""
    h, c = bundle.stepper.initial_state(bundle.encoder.encode(pixels))
    return np.concatenate([c, h], axis=1)


@pytest.mark.parametrize("kind", ["checkpoint", "graph"])
def test_initial_state_and_every_step_equal_im2txt(kind, im2txt_model, im2txt_bundles):
    bundle = loaded(im2txt_bundles[kind])
    pixels = images()
    expected_state = im2txt_model.feed_image(pixels)
    state = initial_state(bundle, pixels)
    assert np.abs(state - expected_state).max() < TOLERANCE
    assert np.abs(expected_state[0] - expected_state[1]).max() > 100 * TOLERANCE  # images differ

    ids = im2txt_ids(bundle.vocabulary, im2txt_model)
    assert ids[0] is None and len(ids) == im2txt_model.vocab_size + 1
    units = bundle.decoder.config.lstm_units
    beamcap_state = (state[:, units:], state[:, :units])
    reference_state = expected_state
    for word in ["<start>", "dog", "on", "the", "grass"]:
        token = bundle.vocabulary.id(word)
        tokens = np.full(len(pixels), token)
        log_probs, beamcap_state = bundle.stepper.step(tokens, beamcap_state)
        softmax, reference_state = im2txt_model.inference_step(
            np.full(len(pixels), ids[token]), reference_state
        )
        assert np.all(log_probs[:, 0] == -np.inf)  # <pad>: never predicted
        np.testing.assert_allclose(log_probs[:, 1:], np.log(softmax[:, ids[1:]]), atol=TOLERANCE)
        h, c = beamcap_state
        np.testing.assert_allclose(np.concatenate([c, h], 1), reference_state, atol=TOLERANCE)


def test_beam_search_equals_caption_generator(im2txt_model, im2txt_bundles):
    bundle = loaded(im2txt_bundles["checkpoint"])
    vocabulary = bundle.vocabulary
    start, end = (im2txt_model.words.index(w) for w in ("<S>", "</S>"))
    unused = range(len(im2txt_model.words), im2txt_model.vocab_size)
    words = [*im2txt_model.words, *(f"<unused-{i}>" for i in unused)]
    pixels = images()
    # im2txt's max_caption_length counts <S>; beamcap's max_length counts generated tokens.
    found = bundle.caption(pixels, beam_size=3, max_length=19)
    texts = []
    for image, captions in zip(pixels, found, strict=True):
        expected = caption_generator(
            im2txt_model, image, start_id=start, end_id=end, beam_size=3, max_caption_length=20
        )
        assert all(len(sentence) < 18 for sentence, _, _ in expected)  # completed captions
        texts.append([c.text for c in captions])
        assert [c.text for c in captions] == [" ".join(words[w] for w in s) for s, _, _ in expected]
        np.testing.assert_allclose(
            [c.log_prob for c in captions], [lp for _, lp, _ in expected], atol=TOLERANCE
        )
    assert texts[0] != texts[-1]  # the image matters
    assert any("<unused-" in text for image in texts for text in image)  # beyond the vocabulary
    assert vocabulary.words[:4] == ["<pad>", "<start>", "<end>", "<unk>"]


def test_two_swapped_branches_break_the_equivalence(im2txt_model, im2txt_bundles):
    """Mixed_6b's Branch_0 and Branch_3 are both 1x1 768->192 convolutions: a mapping that swaps
    them loads without complaint, and only the reference comparison catches it."""
    bundle = loaded(im2txt_bundles["checkpoint"])
    swapped = (
        "InceptionV3/Mixed_6b/Branch_0/Conv2d_0a_1x1",
        "InceptionV3/Mixed_6b/Branch_3/Conv2d_0b_1x1",
    )

    def swap(units):
        rename = dict([swapped, swapped[::-1]])
        return [dataclasses.replace(u, slim=rename.get(u.slim, u.slim)) for u in units]

    encoder = build_encoder(read_checkpoint(im2txt_model.checkpoint), mapping=swap)
    pixels = images()
    h, c = bundle.stepper.initial_state(encoder.encode(pixels))
    difference = np.abs(np.concatenate([c, h], 1) - im2txt_model.feed_image(pixels)).max()
    assert difference > 100 * TOLERANCE


def head_source(model, renames=None, drop=()) -> Source:
    """The checkpoint's head variables only, LSTM names changed by ``renames``."""
    checkpoint = read_checkpoint(model.checkpoint)
    renames = renames or {}
    names = {renames.get(n, n): n for n in checkpoint.shapes if not n.startswith("InceptionV3/")}
    names["InceptionV3/Conv2d_1a_3x3/weights"] = "InceptionV3/Conv2d_1a_3x3/weights"
    for name in drop:
        names.pop(name)
    return Source(
        "checkpoint",
        "model.ckpt-1234",
        {new: checkpoint.shapes[old] for new, old in names.items()},
        lambda name: checkpoint.read(names[name]),
        {},
        None,
    )


@pytest.mark.parametrize("generation", [1, 2])
def test_every_generation_of_lstm_names(im2txt_model, generation):
    current = head_source(im2txt_model)
    renamed = head_source(
        im2txt_model, dict(zip(LSTM_NAMES[0], LSTM_NAMES[generation], strict=True))
    )
    assert check_variables(renamed) == LSTM_NAMES[generation]
    rows = [None, *range(im2txt_model.vocab_size)]
    expected = build_decoder(current, check_variables(current), rows).training_model.get_weights()
    got = build_decoder(renamed, check_variables(renamed), rows).training_model.get_weights()
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_missing_variables_are_named(im2txt_model):
    source = head_source(im2txt_model, drop=["logits/biases", *LSTM_NAMES[0]])
    with pytest.raises(Im2txtError) as error:
        check_variables(source)
    assert str(error.value) == (
        "model.ckpt-1234 lacks im2txt's variables: logits/biases, lstm/basic_lstm_cell/kernel "
        "(or lstm/basic_lstm_cell/weights, lstm/BasicLSTMCell/Linear/Matrix)"
    )


def test_a_missing_batchnorm_statistic_is_named(im2txt_model):
    checkpoint = read_checkpoint(im2txt_model.checkpoint)
    gone = "InceptionV3/Mixed_6b/Branch_3/Conv2d_0b_1x1/BatchNorm/moving_variance"
    del checkpoint.shapes[gone]
    with pytest.raises(Im2txtError, match=f"lacks InceptionV3 variables: {gone}$"):
        build_encoder(checkpoint)


def test_word_counts_plain_and_python3_bytes_forms():
    plain = "<S> 10\n</S> 10\na 9\n's 3\n"
    python3 = "b'<S>' 10\nb'</S>' 10\nb'a' 9\nb\"'s\" 3\n"
    expected = (["<S>", "</S>", "a", "'s", "<UNK>"], [10, 10, 9, 3, 0])
    assert read_word_counts(plain) == expected == read_word_counts(python3)
    assert read_word_counts(plain + "<UNK> 2\n") == (
        ["<S>", "</S>", "a", "'s", "<UNK>"],
        [10, 10, 9, 3, 2],
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<S> 1\n</S> 1\na\n", "word_counts.txt:3: expected 'word count', got 'a'"),
        (
            "<S> 1\n</S> 1\n<pad> 4\n",
            "word_counts.txt:3: '<pad>' is reserved in beamcap's vocabulary",
        ),
        ("<S> 1\n</S> 1\na 2\na 1\n", "word_counts.txt: words listed twice: a"),
        ("a 1\n</S> 1\n", "word_counts.txt has no <S> line: not an im2txt vocabulary"),
    ],
)
def test_word_counts_refusals(text, message):
    with pytest.raises(Im2txtError) as error:
        read_word_counts(text)
    assert str(error.value) == message
