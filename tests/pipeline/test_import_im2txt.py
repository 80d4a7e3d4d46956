"""``beamcap import-im2txt``'s refusals, and the caption job and ``beamcap show`` on an imported
im2txt bundle (the reference model of tests/models/im2txt_reference.py)."""

import math
from pathlib import Path

import numpy as np
import pytest

from models.datasets.synthetic import SynthConfig, make_example
from pipeline import cli
from pipeline.caption import run
from pipeline.output_root import OutputRoot
from tests.models.im2txt_reference import caption_generator
from transforms.decode import decode_image

# on one test worker with test_im2txt: the reference model is built once
pytestmark = pytest.mark.xdist_group("im2txt")

PREFIX = "beamcap import-im2txt: error: "
PREPROCESSING = {"method": "im2txt", "resize": 346}


def refusal(capsys, *flags) -> str:
    assert cli.main(["import-im2txt", *map(str, flags)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(PREFIX), err
    return err[len(PREFIX) :].strip()


def head_only_checkpoint(path) -> str:
    """A TF1 checkpoint holding only ``seq_embedding/map``."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.get_variable("seq_embedding/map", [4, 2])
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            return tf.compat.v1.train.Saver().save(session, str(path), write_meta_graph=False)


def test_refusals(tmp_path, capsys, im2txt_model):
    out = tmp_path / "bundle"
    vocab = im2txt_model.vocab
    junk = tmp_path / "junk"
    junk.with_suffix(".index").write_bytes(b"\x00" * 64)
    assert refusal(capsys, "--checkpoint", junk, "--vocab", vocab, "--output", out).startswith(
        f"{junk} is not a TensorFlow checkpoint ("
    )
    assert refusal(
        capsys, "--checkpoint", tmp_path / "none", "--vocab", vocab, "--output", out
    ) == (
        f"--checkpoint: no {tmp_path}/none.index; give a TF1 checkpoint's prefix "
        "(e.g. model.ckpt-2000000)"
    )
    assert refusal(capsys, "--graph", vocab, "--vocab", vocab, "--output", out) == (
        f"{vocab} is not a TensorFlow GraphDef (Error parsing message with type "
        "'tensorflow.GraphDef')"
    )
    empty = tmp_path / "empty.pb"
    empty.write_bytes(b"")
    assert refusal(capsys, "--graph", empty, "--vocab", vocab, "--output", out) == (
        f"{empty} lacks im2txt's nodes: image_embedding/weights, seq_embedding/map, "
        "logits/weights, logits/biases, lstm/basic_lstm_cell/kernel (or "
        "lstm/basic_lstm_cell/weights, lstm/BasicLSTMCell/Linear/Matrix), InceptionV3/* (the "
        "image model) (a frozen graph holds each variable as a Const node)"
    )
    partial = head_only_checkpoint(tmp_path / "head.ckpt")
    assert refusal(capsys, "--checkpoint", partial, "--vocab", vocab, "--output", out) == (
        f"{partial} lacks im2txt's variables: image_embedding/weights, logits/weights, "
        "logits/biases, lstm/basic_lstm_cell/kernel (or lstm/basic_lstm_cell/weights, "
        "lstm/BasicLSTMCell/Linear/Matrix), InceptionV3/* (the image model)"
    )
    longer = tmp_path / "word_counts.txt"
    extra = "".join(f"word{i} 1\n" for i in range(10))
    longer.write_text(Path(vocab).read_text() + extra)
    words = len(im2txt_model.words) + 10
    logits = im2txt_model.vocab_size
    assert refusal(capsys, "--graph", im2txt_model.graph, "--vocab", longer, "--output", out) == (
        f"the vocabulary has {words} words (with <UNK>), more than the model's {logits} "
        "logits: this word_counts.txt belongs to another model"
    )
    assert not out.exists()


def test_caption_job_and_show_on_an_imported_bundle(tmp_path, capsys, im2txt_model, im2txt_bundles):
    images = tmp_path / "images"
    images.mkdir()
    for index in range(3):
        (images / f"photo{index}.jpg").write_bytes(make_example(SynthConfig(seed=8), index)[2])
    (images / "broken.jpg").write_text("not a photo")
    output = tmp_path / "out"
    flags = ["--input", images, "--model", im2txt_bundles["checkpoint"], "--output", output]
    summary = run([*map(str, flags), "--max-length", "19", "--runner", "FnApiRunner"])
    assert summary["counts"]["captioned"] == 3 and summary["counts"]["failed"]["decode"] == 1
    assert summary["encoder"]["preprocessing"] == PREPROCESSING

    rows = {row["image_uri"]: row for row in OutputRoot(str(output)).read_captions().to_pylist()}
    start, end = (im2txt_model.words.index(w) for w in ("<S>", "</S>"))
    unused = range(len(im2txt_model.words), im2txt_model.vocab_size)
    words = [*im2txt_model.words, *(f"<unused-{i}>" for i in unused)]
    expected_lines = []
    for index in range(3):
        uri = str(images / f"photo{index}.jpg")
        pixels = decode_image(
            (images / f"photo{index}.jpg").read_bytes(), 299, preprocessing=PREPROCESSING
        )[0]
        expected = caption_generator(im2txt_model, pixels, start_id=start, end_id=end)
        candidates = rows[uri]["candidates"]
        assert [c["caption"] for c in candidates] == [
            " ".join(words[w] for w in sentence) for sentence, _, _ in expected
        ]
        np.testing.assert_allclose(
            [c["log_prob"] for c in candidates], [lp for _, lp, _ in expected], atol=1e-4
        )
        expected_lines.append(f"Captions for image {uri}:")
        expected_lines += [
            f"  {rank}) {c['caption']} (p={math.exp(c['log_prob']):f})"
            for rank, c in enumerate(candidates)
        ]

    assert cli.main(["show", str(output)]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[0] == f"run {summary['run_id']}:"
    assert shown[1:-1] == expected_lines
    assert shown[-1].startswith(f"Failed image {images / 'broken.jpg'} at decode: ")


def test_features_with_the_im2txt_architecture_see_what_the_imported_model_sees(
    tmp_path, im2txt_bundles
):
    """``features --encoder im2txt-InceptionV3`` decodes with the architecture's preprocessing
    (the records' pixels are the caption job's) and records the architecture (so a bundle
    trained from them records the preprocessing too)."""
    import json

    from models.captioner.manifest import Manifest
    from models.datasets.feature_records import decode_png
    from pipeline.features import run as run_features
    from tests.jobs import records

    images = tmp_path / "images"
    images.mkdir()
    lines = ["image,caption"]
    for index in range(2):
        (images / f"photo{index}.jpg").write_bytes(make_example(SynthConfig(seed=4), index)[2])
        lines.append(f"photo{index}.jpg,a photo number {index}")
    (tmp_path / "captions.txt").write_text("\n".join(lines) + "\n")
    bundle = im2txt_bundles["checkpoint"]
    output = tmp_path / "features"
    flags = ["--images", images, "--captions", tmp_path / "captions.txt", "--output", output]
    flags += ["--encoder", "im2txt-InceptionV3", "--image-size", "299", "--with-images"]
    flags += ["--encoder-weights", f"{bundle}/encoder.weights.h5", "--val-fraction", "0"]
    run_features([*map(str, flags), "--test-fraction", "0", "--runner", "FnApiRunner"])

    written = records(output)["train"]
    assert sorted(written) == ["photo0.jpg", "photo1.jpg"]
    fingerprint = Manifest.read(bundle).encoder.fingerprint
    for name, record in written.items():
        expected = decode_image((images / name).read_bytes(), 299, preprocessing=PREPROCESSING)
        np.testing.assert_array_equal(decode_png(record.image_data), expected[0])
        assert record.fingerprint == fingerprint
    encoder = json.loads((output / "dataset.json").read_text())["encoder"]
    assert (encoder["architecture"], encoder["image_size"]) == ("im2txt-InceptionV3", 299)


def test_make_test_keeps_this_group_on_one_worker(request):
    """make test's --dist loadgroup suffixes a grouped test's id with its group; pytest 9.2
    silently drops the suffix (pytest-xdist #1386), and the reference model is built twice."""
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not run by pytest-xdist with --dist loadgroup")
    assert request.node.nodeid.endswith("@im2txt")


def test_show_refuses_an_output_without_runs(tmp_path, capsys):
    assert cli.main(["show", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"beamcap show: error: {tmp_path} holds no committed caption run\n"
    )


def test_the_manifest_records_the_source_and_inspect_shows_it(capsys, im2txt_model, im2txt_bundles):
    import hashlib

    from models.captioner.manifest import verify_bundle

    manifest = verify_bundle(im2txt_bundles["checkpoint"])
    assert manifest.format_version == 4
    assert manifest.encoder.architecture == "im2txt-InceptionV3"
    assert manifest.encoder.preprocessing == PREPROCESSING
    assert manifest.encoder.weights == "im2txt:model.ckpt-1234"
    decoder = manifest.decoder.config
    assert (decoder["embedding_dim"], decoder["lstm_units"]) == (16, 16)
    source = manifest.source
    folder = Path(im2txt_model.checkpoint).parent
    assert source.files == {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.glob("model.ckpt-1234.*"))
    }
    assert (source.kind, source.global_step) == ("checkpoint", 1234)
    assert source.vocabulary == {
        "file": "word_counts.txt",
        "sha256": hashlib.sha256(Path(im2txt_model.vocab).read_bytes()).hexdigest(),
        "words": len(im2txt_model.words),
        "unk_appended": True,
        "unused_ids": im2txt_model.vocab_size - len(im2txt_model.words),
    }
    graph = verify_bundle(im2txt_bundles["graph"]).source
    assert (graph.kind, graph.global_step, list(graph.files)) == (
        "graph",
        None,
        ["show-and-tell.pb"],
    )
    assert cli.main(["inspect", im2txt_bundles["checkpoint"]]) == 0
    out = capsys.readouterr().out
    assert 'preprocess  {"method": "im2txt", "resize": 346}\n' in out
    assert "source      im2txt checkpoint: model.ckpt-1234.data-00000-of-00001 (" in out
    assert "source      global step 1234\n" in out
