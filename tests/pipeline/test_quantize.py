"""``beamcap quantize`` and the caption job on its engines, as a user runs them."""

import json
import re
import shutil
from pathlib import Path

from models import hardware
from pipeline import cli
from pipeline.output_root import RunDir
from tests.conftest import QUANTIZE_OUTPUT, write_image_folder
from tests.jobs import FNAPI, assert_not_fp32, job_flags
from tests.pipeline.test_caption import assert_accounts_for_everything


def beamcap(capsys, *argv) -> tuple[int, str, str]:
    status = cli.main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_quantize_adds_the_engines_and_says_how_faithful_and_fast_they_are(int8_bundle, capsys):
    """The fixture ran `beamcap quantize` on a fresh bundle: what it printed and wrote."""
    out = (Path(int8_bundle).parent / QUANTIZE_OUTPUT).read_text().splitlines()
    made = ["int8", "bf16"] if hardware.bf16_units() else ["int8"]
    assert out[0] == f"wrote {' and '.join(made)} into {int8_bundle}"
    for line, precision in zip(out[1:], made, strict=True):
        assert re.match(rf"{precision} engine: feature cosine (0\.9|1\.0)\d+ \(min ", line)
        assert "same best caption" in line and "of 8 images" in line
        assert "images/s = " in line and f"x fp32 on {hardware.cpu_name()} (" in line
    manifest = json.loads(Path(int8_bundle, "manifest.json").read_text())
    engine = manifest["engines"]["int8"]
    calibration = str(Path(int8_bundle).parents[1] / "int8-calibration0" / "Images")
    assert engine["calibration"] == {"images": 24, "sources": [calibration]}
    assert engine["fidelity"]["images"] == 8
    assert engine["fidelity"]["search"] == {"beam_size": 3, "max_length": 20}
    assert set(engine["files"]) <= set(manifest["files"])
    status, out, err = beamcap(capsys, "inspect", int8_bundle)
    assert status == 0, err
    assert "engine      int8 (openvino 2026.4.1, nncf 3.4.0), calibrated on 24 images" in out
    assert "engine      int8 engine: feature cosine 0.9" in out


def test_the_int8_encoder_reads_exact_pixels_and_spans_its_calibration(int8_bundle):
    """Its first convolution stays float (its pixels and weights unquantized), and the first
    quantizer, on that convolution's float output, spans the largest value the calibration
    images gave there (min-max ranges; NNCF's default, a mean of per-image extremes, cuts it)."""
    import openvino as ov

    from models.captioner.manifest import Manifest
    from models.captioner.openvino_engine import ENCODERS
    from pipeline.quantize import decode_sample, list_images

    manifest = Manifest.read(int8_bundle)
    xml = manifest.engines["int8"].parts[ENCODERS["int8"][0]][0]  # part -> [xml, weights]
    model = ov.Core().read_model(str(Path(int8_bundle, xml)))
    ops = model.get_ordered_ops()
    conv = next(op for op in ops if op.get_type_name() == "Convolution")
    assert conv.input_value(0).get_node().get_type_name() != "FakeQuantize"
    weights = conv.input_value(1).get_node()
    while weights.get_type_name() != "Constant":
        weights = weights.input_value(0).get_node()
    assert weights.get_element_type() == ov.Type.f32, "the first convolution's weights are int8"

    quantizer = next(op for op in ops if op.get_type_name() == "FakeQuantize")
    model.add_outputs([quantizer.input_value(0)])  # float: only the first convolution is above
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    calibration = Path(int8_bundle).parents[1] / "int8-calibration0" / "Images"
    pixels = decode_sample(list_images([str(calibration)]), 24, manifest)
    largest = compiled(pixels)[compiled.outputs[-1]].max()
    high = quantizer.input_value(2).get_node().get_data().max()
    assert high >= largest * (1 - 1e-5), f"the range ends at {high:.4f}, below {largest:.4f}"


def test_quantize_refuses_bad_input_in_one_line(tmp_path, tiny_bundle, capsys):
    status, _, err = beamcap(
        capsys, "quantize", "--model", tiny_bundle, "--calibration", tmp_path / "nowhere"
    )
    assert (status, err) == (2, f"beamcap quantize: error: --calibration: {tmp_path / 'nowhere'} "
                                "holds no file\n")  # fmt: skip
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("words")
    status, _, err = beamcap(
        capsys, "quantize", "--model", tiny_bundle, "--calibration", tmp_path / "text"
    )
    assert (status, err) == (
        2,
        "beamcap quantize: error: --calibration: 0 of 1 files decode as images; at least 2 "
        "are needed\n",
    )
    status, _, err = beamcap(
        capsys, "quantize", "--model", tmp_path / "text", "--calibration", tmp_path / "text"
    )
    assert status == 2 and "is not a model bundle: it has no manifest.json" in err


def test_the_caption_job_runs_on_the_int8_engine(tmp_path, int8_bundle, caption_run, capsys):
    """The same model and images as ``caption_run`` (fp32), with other scores: int8 ran."""
    images = tmp_path / "images"
    must_fail = write_image_folder(images)
    output = tmp_path / "out"
    status, out, err = beamcap(
        capsys, "caption", *job_flags(images, int8_bundle, output, "--precision", "int8", *FNAPI)
    )
    assert status == 0, err
    summary = json.loads(out)
    assert summary["precision"] == "int8"
    [engine] = summary["engines"]  # chosen where the model loaded, with that CPU's flags
    assert engine["precision"] == "int8" and engine["runtime"] == "openvino"
    assert engine["images"] == summary["counts"]["captioned"]
    assert engine["cpu_flags"] == hardware.simd_flags() and engine["reason"] == "asked for"
    captions, _ = assert_accounts_for_everything(images, output, summary, must_fail)
    fp32_captions, _, _ = RunDir(str(caption_run[0])).read()
    assert_not_fp32(captions.to_pylist(), fp32_captions.to_pylist())


def test_int8_without_an_engine_is_refused_and_auto_falls_back(tmp_path, tiny_bundle, capsys):
    bundle = tiny_bundle
    images = tmp_path / "images"
    write_image_folder(images)
    output = tmp_path / "out"
    flags = job_flags(images, bundle, output, *FNAPI)
    status, _, err = beamcap(capsys, "caption", *flags, "--precision", "int8")
    assert status == 2 and not output.exists()
    assert err == (
        f"beamcap caption: error: --precision int8: {bundle} has no int8 engine; make one with "
        f"`beamcap quantize --model {bundle} --calibration IMAGES`\n"
    )
    status, out, err = beamcap(capsys, "caption", *flags)  # --precision auto
    assert status == 0, err
    assert json.loads(out)["precision"] == "fp32"


def test_auto_keeps_fp32_where_the_engines_failed_their_check(tmp_path, int8_bundle, capsys):
    bundle = tmp_path / "bundle"
    shutil.copytree(int8_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    for engine in manifest["engines"].values():
        engine["fidelity"]["passed"] = False
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    images = tmp_path / "images"
    write_image_folder(images)
    status, out, err = beamcap(
        capsys, "caption", *job_flags(images, bundle, tmp_path / "o", *FNAPI)
    )
    assert status == 0, err
    assert json.loads(out)["precision"] == "fp32"
