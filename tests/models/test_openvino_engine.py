"""The int8 engine: built from a bundle's Keras models, stored in the bundle, loaded without
TensorFlow; its decoder is the Keras decoder's arithmetic, its encoder close to fp32's."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.captioner.beam_search import beam_search
from models.captioner.bundle import BundleError, load_bundle
from models.captioner.captioner import INT8, load_captioner, resolve_precision
from models.captioner.openvino_engine import (
    PARTS,
    file_names,
    load_int8,
)
from models.datasets.synthetic import SynthConfig, make_example
from tests.conftest import ROOT, SEARCH, TINY_SIZE, make_bundle


def scenes(count: int, seed: int) -> np.ndarray:
    from transforms.decode import decode_image

    config = SynthConfig(seed=seed, min_size=(96, 72), max_size=(96, 72))
    return np.stack([decode_image(make_example(config, i)[2], TINY_SIZE)[0] for i in range(count)])


def test_the_engine_decoder_searches_as_the_keras_decoder_does(int8_bundle):
    """Same features in, same N-best out: the decoder's steps are exported, not re-derived."""
    keras_bundle, engine = load_bundle(int8_bundle), load_int8(int8_bundle)
    features = keras_bundle.encoder.encode(scenes(5, seed=8))
    ours = beam_search(engine.stepper, features, **SEARCH)
    theirs = beam_search(keras_bundle.stepper, features, **SEARCH)
    assert [[h.tokens for h in image] for image in ours] == [
        [h.tokens for h in image] for image in theirs
    ]
    ours_scores = [h.log_prob for image in ours for h in image]
    theirs_scores = [h.log_prob for image in theirs for h in image]
    np.testing.assert_allclose(ours_scores, theirs_scores, rtol=1e-4, atol=1e-4)


def test_the_int8_encoder_is_close_to_fp32_and_takes_any_batch_size(int8_bundle):
    keras_bundle, engine = load_bundle(int8_bundle), load_int8(int8_bundle)
    images = scenes(7, seed=9)
    features = engine.encoder.encode(images)
    reference = keras_bundle.encoder.encode(images)
    cosine = (features * reference).sum(1) / np.linalg.norm(features, axis=1)
    assert (cosine / np.linalg.norm(reference, axis=1)).min() > 0.95
    one_by_one = np.concatenate([engine.encoder.encode(image[None]) for image in images])
    np.testing.assert_allclose(one_by_one, features, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="uint8 images of shape"):
        engine.encoder.encode(images.astype(np.float32))


def test_the_manifest_records_the_engine_and_its_fidelity(int8_bundle):
    manifest = json.loads(Path(int8_bundle, "manifest.json").read_text())
    section = manifest["engines"][INT8]
    assert section["runtime"] == "openvino" and set(section["versions"]) == {"openvino", "nncf"}
    fidelity = section["fidelity"]
    assert fidelity["images"] == 8 and 0.9 < fidelity["feature_cosine_mean"] <= 1.0
    assert section["calibration"]["images"] == 24
    assert fidelity["feature_cosine_min"] <= fidelity["feature_cosine_mean"]
    assert 0.0 <= fidelity["same_best_caption"] <= 1.0
    for part in PARTS:
        for name in file_names(part):
            assert name in manifest["files"] and Path(int8_bundle, name).is_file()
    assert load_int8(int8_bundle).model_id == load_bundle(int8_bundle).model_id


def test_auto_takes_the_engine_only_where_it_passed_and_no_gpu_shows(monkeypatch):
    passed = {"engines": {INT8: {"fidelity": {"passed": True}}}}
    failed = {"engines": {INT8: {"fidelity": {"passed": False}}}}
    monkeypatch.setattr("models.captioner.captioner.gpu_visible", lambda: False)
    assert resolve_precision("auto", passed) == INT8
    assert resolve_precision("auto", failed) == "fp32"
    assert resolve_precision("auto", {}) == "fp32"
    assert resolve_precision("bf16", passed) == "bf16"
    monkeypatch.setattr("models.captioner.captioner.gpu_visible", lambda: True)
    assert resolve_precision("auto", passed) == "fp32"


def test_a_bundle_without_the_engine_or_with_a_changed_file_is_refused(int8_bundle, tmp_path):
    plain = make_bundle(str(tmp_path / "plain"))
    with pytest.raises(BundleError, match=r"has no int8 engine: make one with `beamcap quantize"):
        load_int8(plain)
    changed = tmp_path / "changed"
    shutil.copytree(int8_bundle, changed)
    (changed / "encoder.int8.bin").write_bytes(b"not the weights")
    with pytest.raises(BundleError, match=r"encoder.int8.bin does not match the manifest"):
        load_int8(str(changed))


def test_the_engine_loads_and_captions_without_tensorflow(int8_bundle):
    code = (
        "import sys, numpy as np\n"
        "from models.captioner.captioner import load_captioner\n"
        f"c = load_captioner({int8_bundle!r}, precision='int8')\n"
        f"images = np.zeros((2, {TINY_SIZE}, {TINY_SIZE}, 3), np.uint8)\n"
        "assert len(c.caption(images, beam_size=2, max_length=5)) == 2\n"
        "loaded = {'tensorflow', 'keras', 'nncf'} & {m.split('.')[0] for m in sys.modules}\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]


def test_load_captioner_gives_the_same_captions_as_the_bundle_at_fp32(int8_bundle):
    images = scenes(3, seed=10)
    captioner = load_captioner(int8_bundle, precision="fp32")
    assert captioner.precision == "fp32"
    assert captioner.caption(images, **SEARCH) == load_bundle(int8_bundle).caption(images, **SEARCH)
