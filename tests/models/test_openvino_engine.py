"""The OpenVINO engines: built from a bundle's Keras models, stored in the bundle, loaded
without TensorFlow; their decoder is the Keras decoder's arithmetic, their encoder close to
fp32's; and the rule that picks an engine (``models.captioner.engines``)."""

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models import hardware
from models.captioner import openvino_cache
from models.captioner.beam_search import beam_search
from models.captioner.bundle import BundleError, load_bundle
from models.captioner.engine_build import feature_cosines, file_names, store_engine
from models.captioner.engines import choose, load_captioner
from models.captioner.manifest import (
    DecoderSection,
    EncoderSection,
    EngineSection,
    Fidelity,
    Manifest,
    Speed,
    VocabularySection,
)
from models.captioner.openvino_engine import OpenVinoStepper, load_engine, parts_of
from models.datasets.synthetic import SynthConfig, make_example
from tests.conftest import ROOT, SEARCH, TINY_SIZE

INT8 = "int8"


def scenes(count: int, seed: int) -> np.ndarray:
    from transforms.decode import decode_image

    config = SynthConfig(seed=seed, min_size=(96, 72), max_size=(96, 72))
    return np.stack([decode_image(make_example(config, i)[2], TINY_SIZE)[0] for i in range(count)])


@pytest.fixture(scope="module")
def keras_bundle(int8_bundle):
    return load_bundle(int8_bundle)


@pytest.fixture(scope="module")
def engine(int8_bundle):
    return load_engine(int8_bundle, INT8)


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

    from models.captioner.engine_build import export

    decoder = keras_bundle.decoder
    saved = decoder.logits.get_weights()
    decoder.logits.set_weights([np.zeros_like(w) for w in saved])
    try:
        core = ov.Core()
        start = export(keras_bundle.stepper.initial_state_model, tmp_path, "start")
        step = export(keras_bundle.stepper.step_model, tmp_path, "step")
        vocabulary = keras_bundle.vocabulary
        flat = OpenVinoStepper(
            core,
            lambda: start,
            lambda: step,
            vocabulary_size=len(vocabulary),
            start_id=vocabulary.start_id,
            end_id=vocabulary.end_id,
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
    assert set(section["parts"]) == set(parts_of(INT8))
    speed = section["speed"]  # measured on the check images, with this CPU's flags
    assert speed["images_per_second"] > 0 and speed["fp32_images_per_second"] > 0
    assert speed["images"] == 8 and speed["cpu_flags"] == hardware.simd_flags()
    for part, names in section["parts"].items():
        contents = [Path(int8_bundle, name).read_bytes() for name in names]
        assert tuple(names) == file_names(part, *contents)  # named by their content
        assert set(names) <= set(manifest["files"]) and set(names) <= set(section["files"])
    assert engine.model_id == keras_bundle.model_id


WEIGHTS = Manifest(
    model_id="showtell-0",
    created_at="",
    encoder=EncoderSection("random:0", 75, "InceptionV3", fingerprint="e"),
    decoder=DecoderSection("show_and_tell", {}, fingerprint="d"),
    vocabulary=VocabularySection(4, {}),
    files={},
)


def engines(**engines) -> Manifest:
    """A manifest whose OpenVINO engines ``name=(passed, images/s or None)`` were built from
    its weights."""

    def engine(passed: bool, speed: float | None) -> EngineSection:
        fidelity = Fidelity(8, 1.0, 1.0, 1.0 if passed else 0.5, passed, {})
        measured = Speed(speed, 10.0, 8, 32, "a CPU", []) if speed else None
        built = WEIGHTS.built_from
        return EngineSection("openvino", {}, "", "", built, "", fidelity, {}, [], measured)

    sections = {name: engine(*figures) for name, figures in engines.items()}
    return dataclasses.replace(WEIGHTS, engines=sections)


def on_cpu(monkeypatch, *flags) -> None:
    monkeypatch.setattr(hardware, "simd_flags", lambda: list(flags))


def test_auto_runs_the_fastest_engine_that_passed_and_suits_the_cpu(monkeypatch):
    both = engines(int8=(True, 72.0), bf16=(True, 38.0))
    on_cpu(monkeypatch, "avx2", "avx512f", "avx512_vnni", "avx512_bf16")
    assert choose("auto", both, gpu=False).precision == "int8"
    assert choose("auto", engines(int8=(True, 30.0), bf16=(True, 38.0)), gpu=False).precision == (
        "bf16"
    )
    bf16_only = engines(int8=(False, 72.0), bf16=(True, 38.0))  # int8 failed its check
    chosen = choose("auto", bf16_only, gpu=False)
    assert (chosen.precision, chosen.runtime) == ("bf16", "openvino")
    on_cpu(monkeypatch, "avx2")  # no bf16 units: bf16 is not run, int8 still is (AVX2)
    assert choose("auto", bf16_only, gpu=False).precision == "fp32"
    assert choose("auto", both, gpu=False).precision == "int8"
    on_cpu(monkeypatch)  # neither AVX2 nor VNNI: int8 unmeasured there
    assert choose("auto", both, gpu=False).precision == "fp32"


def test_auto_on_a_gpu_or_without_passed_engines_is_fp32_on_keras(monkeypatch):
    on_cpu(monkeypatch, "avx2", "avx512_vnni", "avx512_bf16")
    both = engines(int8=(True, 72.0), bf16=(True, 38.0))
    assert (choose("auto", both, gpu=True).precision, choose("auto", both, gpu=True).runtime) == (
        "fp32",
        "keras",
    )
    assert choose("auto", WEIGHTS, gpu=False).precision == "fp32"
    assert choose("auto", engines(int8=(False, 9.0), bf16=(False, 9.0)), gpu=False).precision == (
        "fp32"
    )
    monkeypatch.setattr(hardware, "gpu_visible", lambda: True)  # the worker's own GPU
    assert choose("auto", both).precision == "fp32"


def test_named_engines_and_bundles_from_before_speeds(monkeypatch):
    on_cpu(monkeypatch, "avx2", "avx512_vnni", "avx512_bf16")
    both = engines(int8=(False, 72.0), bf16=(False, 38.0))  # a name runs even below the gate
    assert choose("int8", both, gpu=True).runtime == "openvino"
    assert choose("bf16", both, gpu=False).runtime == "openvino"
    assert choose("bf16", both, gpu=True).runtime == "keras"  # on GPUs: Keras in bf16
    assert choose("bf16", WEIGHTS, gpu=False).runtime == "keras"  # no bf16 engine
    assert choose("fp16", both, gpu=False).runtime == "keras"
    unmeasured = engines(int8=(True, None), bf16=(True, None))  # quantized before speeds
    assert choose("auto", unmeasured, gpu=False).precision == "int8"


def test_a_bundle_without_the_engine_or_with_a_changed_file_is_refused(
    int8_bundle, tiny_bundle, tmp_path, monkeypatch
):
    from pipeline.caption import run

    with pytest.raises(
        BundleError, match=r"int8: \S+ has no int8 engine; make one with `beamcap quantize"
    ):
        load_engine(tiny_bundle, INT8)
    load_engine(int8_bundle, INT8)  # its compiled parts cached, by the files' content
    changed = tmp_path / "changed"
    shutil.copytree(int8_bundle, changed)
    weights = json.loads((changed / "manifest.json").read_text())["engines"][INT8]["parts"]
    (changed / weights["encoder.int8"][1]).write_bytes(b"not the weights")
    refused = r"encoder.int8.\w+.bin does not match the manifest"
    images = tmp_path / "images"
    images.mkdir()
    flags = ["--input", str(images), "--model", str(changed), "--output", str(tmp_path / "out")]
    with pytest.raises(BundleError, match=refused):  # the launch reads it, cache or not
        run([*flags, "--precision", INT8])
    assert not (tmp_path / "out").exists()
    monkeypatch.setenv(openvino_cache.CACHE_ENV, str(tmp_path / "no-blobs"))
    with pytest.raises(BundleError, match=refused):  # a worker that compiles it reads it
        load_engine(str(changed), INT8)


def test_the_engine_loads_and_captions_without_tensorflow(int8_bundle):
    code = (
        "import sys, numpy as np\n"
        "from models.captioner.engines import load_captioner\n"
        f"c = load_captioner({int8_bundle!r}, 'int8')\n"
        f"images = np.zeros((2, {TINY_SIZE}, {TINY_SIZE}, 3), np.uint8)\n"
        "assert len(c.caption(images, beam_size=2, max_length=5)) == 2\n"
        "loaded = {'tensorflow', 'keras', 'nncf'} & {m.split('.')[0] for m in sys.modules}\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]


def test_load_captioner_gives_the_keras_models_at_fp32(int8_bundle, keras_bundle):
    images = scenes(3, seed=10)
    captioner = load_captioner(int8_bundle, "fp32")
    assert captioner.precision == "fp32"
    assert captioner.caption(images, **SEARCH) == keras_bundle.caption(images, **SEARCH)


def test_quantizing_again_replaces_the_engine_files_after_the_manifest(int8_bundle, tmp_path):
    """Content-named files: the new engine's are written, then the manifest, then the old
    engine's that no other engine shares removed, so a crash between leaves a whole engine."""
    bundle = tmp_path / "bundle"
    shutil.copytree(int8_bundle, bundle)
    before = json.loads((bundle / "manifest.json").read_text())["engines"]
    section = before[INT8]
    old = {part: tuple((bundle / name).read_bytes() for name in names)
           for part, names in section["parts"].items()}  # fmt: skip
    new = {part: (xml, weights + b"\0") for part, (xml, weights) in old.items()}
    stored = Manifest.read(str(bundle)).engines[INT8]
    kept = {f.name: getattr(stored, f.name) for f in dataclasses.fields(stored)}
    kept = {key: value for key, value in kept.items() if key not in ("parts", "files")}
    manifest = store_engine(str(bundle), INT8, new, kept)
    listed = manifest.engines[INT8].files
    assert set(listed).isdisjoint(section["files"]) and len(listed) == 2 * len(parts_of(INT8))
    assert all((bundle / name).is_file() for name in listed)
    shared = {name for other, engine in before.items() if other != INT8 for name in engine["files"]}
    still_there = {name for name in section["files"] if (bundle / name).exists()}
    assert still_there == set(section["files"]) & shared
    assert len(still_there) == (4 if len(before) == 2 else 0)  # bf16 shares the decoder's 4
    keras_parts = {"encoder.weights.h5", "decoder.weights.h5", "vocab.txt"}
    assert set(manifest.files) == {*listed, *shared, *keras_parts}
    assert Manifest.read(str(bundle)) == manifest  # what it wrote


def test_an_engine_built_from_other_weights_is_not_used(int8_bundle, tmp_path, monkeypatch):
    bundle = tmp_path / "bundle"
    shutil.copytree(int8_bundle, bundle)
    data = json.loads((bundle / "manifest.json").read_text())
    for engine in data["engines"].values():
        engine["fidelity"]["passed"] = True
    assert choose("auto", Manifest.from_json(data), gpu=False).runtime == "openvino"
    data["encoder"]["fingerprint"] = "0" * 64  # as if retrained after quantize
    (bundle / "manifest.json").write_text(json.dumps(data))
    manifest = Manifest.read(str(bundle))
    problem = manifest.engine_problem(INT8)
    assert problem == "has an int8 engine built from other weights than its own"
    assert choose("auto", manifest, gpu=False).precision == "fp32"
    with pytest.raises(BundleError, match="built from other weights than its own; make one"):
        load_engine(str(bundle), INT8)


def test_the_bf16_engine_is_made_where_the_cpu_can_check_it(int8_bundle, keras_bundle):
    """Where this CPU has bf16 units the bf16 engine is made, checked and close to fp32; where
    it has none, it is not made (OpenVINO would run it in f32: the check would measure that)."""
    manifest = json.loads(Path(int8_bundle, "manifest.json").read_text())
    if not hardware.bf16_units():
        assert set(manifest["engines"]) == {INT8}
        return
    section = manifest["engines"]["bf16"]
    assert section["encoder"] == "bf16" and section["fidelity"]["images"] == 8
    assert "calibration" not in section and set(section["versions"]) == {"openvino"}
    shared = set(section["files"]) & set(manifest["engines"][INT8]["files"])
    assert len(shared) == 4  # the decoder's two parts, xml and weights: written once
    images = scenes(5, seed=9)
    bf16 = load_captioner(int8_bundle, choose("bf16", Manifest.read(int8_bundle), gpu=False))
    assert bf16.precision == "bf16" and type(bf16.stepper) is OpenVinoStepper
    features = bf16.encoder.encode(images)
    assert feature_cosines(features, keras_bundle.encoder.encode(images)).min() > 0.99


def test_an_engine_made_before_speeds_and_bf16_still_loads(int8_bundle, tmp_path, monkeypatch):
    """A bundle quantized before the bf16 engine: int8 alone, no speed, its check passed."""
    bundle = tmp_path / "bundle"
    shutil.copytree(int8_bundle, bundle)
    data = json.loads((bundle / "manifest.json").read_text())
    data["engines"] = {INT8: data["engines"][INT8]}
    del data["engines"][INT8]["speed"]
    data["engines"][INT8]["fidelity"]["passed"] = True
    (bundle / "manifest.json").write_text(json.dumps(data))
    on_cpu(monkeypatch, "avx2", "avx512_vnni", "avx512_bf16")
    manifest = Manifest.read(str(bundle))
    assert manifest.engines[INT8].speed is None
    chosen = choose("auto", manifest, gpu=False)
    assert (chosen.precision, chosen.runtime) == (INT8, "openvino")
    engine = load_captioner(str(bundle), chosen)
    assert engine.precision == INT8 and len(engine.caption(scenes(2, seed=3), **SEARCH)) == 2
