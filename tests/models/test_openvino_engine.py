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
    Int8Stepper,
    feature_cosines,
    file_names,
    load_int8,
)
from models.datasets.synthetic import SynthConfig, make_example
from tests.conftest import ROOT, SEARCH, TINY_SIZE


def scenes(count: int, seed: int) -> np.ndarray:
    from transforms.decode import decode_image

    config = SynthConfig(seed=seed, min_size=(96, 72), max_size=(96, 72))
    return np.stack([decode_image(make_example(config, i)[2], TINY_SIZE)[0] for i in range(count)])


@pytest.fixture(scope="module")
def keras_bundle(int8_bundle):
    return load_bundle(int8_bundle)


@pytest.fixture(scope="module")
def engine(int8_bundle):
    return load_int8(int8_bundle)


def same_searches(ours, theirs) -> None:
    assert [[h.tokens for h in image] for image in ours] == [
        [h.tokens for h in image] for image in theirs
    ]
    ours_scores = [h.log_prob for image in ours for h in image]
    theirs_scores = [h.log_prob for image in theirs for h in image]
    np.testing.assert_allclose(ours_scores, theirs_scores, rtol=1e-4, atol=1e-4)


def test_the_engine_decoder_searches_as_the_keras_decoder_does(keras_bundle, engine):
    """Same features in, same N-best out: the decoder's steps are exported, not re-derived."""
    features = keras_bundle.encoder.encode(scenes(5, seed=8))
    same_searches(
        beam_search(engine.stepper, features, **SEARCH),
        beam_search(keras_bundle.stepper, features, **SEARCH),
    )


def test_ties_go_to_the_lower_id_as_with_keras(keras_bundle, int8_bundle, tmp_path):
    """A decoder whose every word is equally likely: each step's top-k is all ties, across the
    cut too, where the engine takes the step again with the stable top-k."""
    import openvino as ov

    from models.captioner.openvino_engine import _export

    decoder = keras_bundle.decoder
    saved = decoder.logits.get_weights()
    decoder.logits.set_weights([np.zeros_like(w) for w in saved])
    try:
        core = ov.Core()
        start = _export(keras_bundle.stepper.initial_state_model, tmp_path, "start")
        step = _export(keras_bundle.stepper.step_model, tmp_path, "step")
        vocabulary = keras_bundle.vocabulary
        flat = Int8Stepper(
            core, start, step, start_id=vocabulary.start_id, end_id=vocabulary.end_id
        )
        features = keras_bundle.encoder.encode(scenes(3, seed=12))
        same_searches(
            beam_search(flat, features, **SEARCH),
            beam_search(keras_bundle.stepper, features, **SEARCH),
        )
        assert flat.exact is not None  # the stable top-k was needed
    finally:
        decoder.logits.set_weights(saved)


def test_the_int8_encoder_is_close_to_fp32_and_takes_any_batch_size(keras_bundle, engine):
    images = scenes(7, seed=9)
    features = engine.encoder.encode(images)
    reference = keras_bundle.encoder.encode(images)
    assert feature_cosines(features, reference).min() > 0.95
    one_by_one = np.concatenate([engine.encoder.encode(image[None]) for image in images])
    np.testing.assert_allclose(one_by_one, features, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="uint8 images of shape"):
        engine.encoder.encode(images.astype(np.float32))


def test_the_manifest_records_the_engine_and_its_fidelity(int8_bundle, keras_bundle, engine):
    manifest = json.loads(Path(int8_bundle, "manifest.json").read_text())
    section = manifest["engines"][INT8]
    assert section["runtime"] == "openvino" and set(section["versions"]) == {"openvino", "nncf"}
    fidelity = section["fidelity"]
    assert fidelity["images"] == 8 and 0.9 < fidelity["feature_cosine_mean"] <= 1.0
    assert fidelity["feature_cosine_min"] <= fidelity["feature_cosine_mean"]
    same = fidelity["same_best_caption"] * fidelity["images"]
    assert same == round(same) and 0 <= same <= 8  # a share of the 8 images
    assert fidelity["passed"] == (
        fidelity["feature_cosine_mean"] >= 0.99 and fidelity["same_best_caption"] >= 0.9
    )
    assert set(section["parts"]) == set(PARTS)
    for part, names in section["parts"].items():
        contents = [Path(int8_bundle, name).read_bytes() for name in names]
        assert tuple(names) == file_names(part, *contents)  # named by their content
        assert set(names) <= set(manifest["files"]) and set(names) <= set(section["files"])
    assert engine.model_id == keras_bundle.model_id


def test_auto_takes_the_engine_only_where_it_passed_and_no_gpu_shows(monkeypatch):
    weights = {"encoder": {"fingerprint": "e"}, "decoder": {"fingerprint": "d"}}
    engine = {"built_from": {"encoder": "e", "decoder": "d"}}
    passed = {**weights, "engines": {INT8: {**engine, "fidelity": {"passed": True}}}}
    failed = {**weights, "engines": {INT8: {**engine, "fidelity": {"passed": False}}}}
    monkeypatch.setattr("models.captioner.captioner.gpu_visible", lambda: False)
    assert resolve_precision("auto", passed) == INT8
    assert resolve_precision("auto", failed) == "fp32"
    assert resolve_precision("auto", weights) == "fp32"
    assert resolve_precision("bf16", passed) == "bf16"
    monkeypatch.setattr("models.captioner.captioner.gpu_visible", lambda: True)
    assert resolve_precision("auto", passed) == "fp32"


def test_a_bundle_without_the_engine_or_with_a_changed_file_is_refused(
    int8_bundle, tiny_bundle, tmp_path
):
    with pytest.raises(BundleError, match=r"has no int8 engine: make one with `beamcap quantize"):
        load_int8(tiny_bundle)
    changed = tmp_path / "changed"
    shutil.copytree(int8_bundle, changed)
    weights = json.loads((changed / "manifest.json").read_text())["engines"][INT8]["parts"]
    (changed / weights["encoder.int8"][1]).write_bytes(b"not the weights")
    with pytest.raises(BundleError, match=r"encoder.int8.\w+.bin does not match the manifest"):
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


def test_load_captioner_gives_the_keras_models_at_fp32(int8_bundle, keras_bundle):
    images = scenes(3, seed=10)
    captioner = load_captioner(int8_bundle, precision="fp32")
    assert captioner.precision == "fp32"
    assert captioner.caption(images, **SEARCH) == keras_bundle.caption(images, **SEARCH)


def test_quantizing_again_replaces_the_engine_files_after_the_manifest(int8_bundle, tmp_path):
    """Content-named files: the new engine's are written, then the manifest, then the old
    engine's removed, so a crash between leaves a whole engine."""
    from models.captioner.openvino_engine import store_int8_engine

    bundle = tmp_path / "bundle"
    shutil.copytree(int8_bundle, bundle)
    section = json.loads((bundle / "manifest.json").read_text())["engines"][INT8]
    old = {part: tuple((bundle / name).read_bytes() for name in names)
           for part, names in section["parts"].items()}  # fmt: skip
    new = {part: (xml, weights + b"\0") for part, (xml, weights) in old.items()}
    kept = {key: value for key, value in section.items() if key not in ("parts", "files")}
    manifest = store_int8_engine(str(bundle), new, kept)
    listed = manifest["engines"][INT8]["files"]
    assert set(listed).isdisjoint(section["files"]) and len(listed) == 2 * len(PARTS)
    assert all((bundle / name).is_file() for name in listed)
    assert not any((bundle / name).exists() for name in section["files"])
    keras_parts = {"encoder.weights.h5", "decoder.weights.h5", "vocab.txt"}
    assert set(manifest["files"]) == {*listed, *keras_parts}


def test_an_engine_built_from_other_weights_is_not_used(int8_bundle, tmp_path, monkeypatch):
    from models.captioner.captioner import int8_problem

    bundle = tmp_path / "bundle"
    shutil.copytree(int8_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["engines"][INT8]["fidelity"]["passed"] = True
    manifest["encoder"]["fingerprint"] = "0" * 64  # as if retrained after quantize
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert int8_problem(manifest) == "has an int8 engine built from other weights than its own"
    monkeypatch.setattr("models.captioner.captioner.gpu_visible", lambda: False)
    assert resolve_precision("auto", manifest) == "fp32"
    with pytest.raises(BundleError, match="built from other weights than its own: make one"):
        load_int8(str(bundle))


def test_auto_keeps_fp32_for_a_job_that_asks_its_runner_for_gpus(int8_bundle, monkeypatch):
    from pipeline.caption import CaptionSettings, with_engine

    manifest = json.loads(Path(int8_bundle, "manifest.json").read_text())
    manifest["engines"][INT8]["fidelity"]["passed"] = True
    monkeypatch.setattr("models.captioner.captioner.gpu_visible", lambda: False)
    monkeypatch.setattr("pipeline.caption.gpu_visible", lambda: False)
    settings = CaptionSettings(input="photos/", model=int8_bundle, output="out/")
    assert with_engine(settings, manifest, []).precision == INT8
    gpus = ["--dataflow_service_options=worker_accelerator=type:nvidia-l4;count:1"]
    assert with_engine(settings, manifest, gpus).precision == "fp32"
    hinted = ["--resource_hints", "accelerator=type:nvidia-l4;count:1"]
    assert with_engine(settings, manifest, hinted).precision == "fp32"
