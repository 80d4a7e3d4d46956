import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from models.captioner.bundle import BundleError, load_bundle, save_bundle
from models.captioner.captioner import Caption
from models.captioner.decoder import ShowAndTell
from models.captioner.encoder import EncoderSpec, ImageEncoder
from models.captioner.vocabulary import Vocabulary
from tests.conftest import SEARCH, TINY_SIZE


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (3, TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8)


@pytest.fixture()
def saved(tmp_path, parts):
    uri = str(tmp_path / "bundle")
    save_bundle(uri, **parts, training={"epochs": 1})
    return uri


def expected_captions(parts, images):
    """Encoder, then beam search, then the vocabulary, by hand."""
    from models.captioner.beam_search import beam_search
    from models.captioner.decoder import DecoderStepper

    stepper = DecoderStepper(parts["decoder"], start_id=1, end_id=2)
    hypotheses = beam_search(stepper, parts["encoder"].encode(images), **SEARCH)
    decode = parts["vocabulary"].decode
    return [
        [Caption(decode(h.tokens), h.tokens, h.log_prob, h.score) for h in image]
        for image in hypotheses
    ]


def edit_manifest(bundle_dir, edit):
    path = Path(bundle_dir, "manifest.json")
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def test_round_trip_gives_identical_captions(saved, parts, images):
    bundle = load_bundle(saved)
    assert bundle.vocabulary == parts["vocabulary"]
    assert bundle.manifest.training == {"epochs": 1}
    assert bundle.manifest.encoder.weights == "random:7"
    assert bundle.model_id.startswith("showtell-")
    assert bundle.caption(images, **SEARCH) == expected_captions(parts, images)


def test_batches_reuse_one_compiled_step(saved, images):
    bundle = load_bundle(saved)
    first = bundle.caption(images, **SEARCH)
    step_model = bundle.stepper._top_k_models[SEARCH["beam_size"]]
    assert bundle.caption(images[::-1], **SEARCH) == first[::-1]
    assert bundle.stepper._top_k_models == {SEARCH["beam_size"]: step_model}


def test_round_trip_through_gcs(gcs, new_bucket, parts, images):
    bucket = new_bucket("models")
    uri = f"gs://{bucket}/models/v1"
    manifest = save_bundle(uri, **parts)
    assert {blob.name for blob in gcs.client().list_blobs(bucket, prefix="models/")} == {
        f"models/v1/{name}" for name in [*manifest.files, "manifest.json"]
    }
    assert load_bundle(uri).caption(images, **SEARCH) == expected_captions(parts, images)


def test_changed_file_is_refused_naming_it(saved):
    with open(f"{saved}/vocab.txt", "a") as handle:
        handle.write("zebra 1\n")
    with pytest.raises(BundleError, match=r"vocab.txt does not match"):
        load_bundle(saved)


def test_mismatched_weights_fingerprint_is_refused(saved, tmp_path):
    """Weights swapped with the manifest's checksums made to match: the fingerprint catches it."""
    other = ImageEncoder(EncoderSpec("random:8", TINY_SIZE))
    other.save_weights(f"{saved}/encoder.weights.h5")
    data = Path(saved, "encoder.weights.h5").read_bytes()
    edit_manifest(saved, lambda m: m["files"].update({"encoder.weights.h5": sha256(data)}))
    with pytest.raises(BundleError, match=r"encoder.weights.h5 holds weights with fingerprint"):
        load_bundle(saved)


def test_missing_part_and_newer_format_are_refused(saved, tmp_path):
    os.remove(f"{saved}/decoder.weights.h5")
    with pytest.raises(BundleError, match=r"has no decoder.weights.h5"):
        load_bundle(saved)
    edit_manifest(saved, lambda m: m.update(format_version=99))
    with pytest.raises(BundleError, match="upgrade beamcap"):
        load_bundle(saved)
    with pytest.raises(BundleError, match="has no manifest.json"):
        load_bundle(str(tmp_path / "nothing-here"))


def test_vocabulary_must_fit_the_decoder(parts, tmp_path):
    small = Vocabulary.build(["a"])
    with pytest.raises(BundleError, match="vocab_size"):
        save_bundle(str(tmp_path / "b"), **{**parts, "vocabulary": small})


def test_the_manifest_names_the_decoder_kind_and_the_id_its_prefix(saved):
    manifest = json.loads(Path(saved, "manifest.json").read_text())
    assert manifest["format_version"] == 4
    assert manifest["decoder"]["kind"] == "show_and_tell"
    assert manifest["model_id"].startswith("showtell-")


def test_a_manifest_without_decoder_kind_loads_as_show_and_tell(saved, parts, images):
    """Bundles written before decoder kinds (format 2 and 3) have no decoder.kind."""
    edit_manifest(saved, lambda m: m["decoder"].pop("kind"))
    edit_manifest(saved, lambda m: m.update(format_version=3))
    bundle = load_bundle(saved)
    assert type(bundle.decoder) is ShowAndTell
    assert bundle.caption(images, **SEARCH) == expected_captions(parts, images)


def test_an_unknown_decoder_kind_is_refused_by_name(saved):
    edit_manifest(saved, lambda m: m["decoder"].update(kind="show_attend_and_tell"))
    with pytest.raises(
        BundleError,
        match=r"names decoder kind 'show_attend_and_tell', which this beamcap does not know "
        r"\(it knows show_and_tell\): upgrade beamcap",
    ):
        load_bundle(saved)


@pytest.mark.parametrize("version", [1, 2])
def test_bundles_of_older_formats_load_through_the_one_upgrade(saved, parts, images, version):
    """Format 1: no encoder phase, no decoder kind; format 2: a phase, no kind."""

    def as_written_then(manifest):
        manifest["format_version"] = version
        manifest["decoder"].pop("kind")
        if version == 1:
            manifest["encoder"].pop("phase")

    edit_manifest(saved, as_written_then)
    bundle = load_bundle(saved)
    assert (bundle.manifest.encoder.phase, bundle.manifest.decoder.kind) == (1, "show_and_tell")
    assert bundle.manifest.format_version == version
    assert bundle.caption(images, **SEARCH) == expected_captions(parts, images)


def test_todays_manifest_reads_into_its_dataclasses_and_back_unchanged(saved):
    from models.captioner.manifest import Manifest

    written = json.loads(Path(saved, "manifest.json").read_text())
    manifest = Manifest.read(saved)
    assert manifest.to_json() == written
    assert manifest.encoder.spec == {
        "weights": "random:7", "image_size": TINY_SIZE, "architecture": "InceptionV3",
        "pooling": "avg",
    }  # fmt: skip
    with pytest.raises(dataclasses.FrozenInstanceError):
        manifest.model_id = "another"
    edit_manifest(saved, lambda m: m["encoder"].update(later_key={"kept": True}))
    assert Manifest.read(saved).to_json()["encoder"]["later_key"] == {"kept": True}
    edit_manifest(saved, lambda m: m.pop("vocabulary"))
    with pytest.raises(BundleError, match=r"manifest.json lacks a part of a bundle manifest"):
        Manifest.read(saved)
