"""The caption job on a CPU against its limits, every engine in one run, each ratio against a
baseline measured in the same run (machines are noisy; run it on a quiet one).

Models, random weights (no download): an im2txt-sized one (InceptionV3 at 299 px with im2txt's
preprocessing, embedding and LSTM 512, 12,000 logits; the test suite's tf-slim reference model,
so the test extra must be installed, with ``--end-bias`` on ``</S>``: -20 never ends a caption,
so every search takes all 20 steps), and one with the demo's decoder at 299 px. Each gets its
CPU engines here (``beamcap quantize``'s function: int8, and bf16 where the CPU has bf16 units,
checked on other images than the ones measured). A trained demo bundle is checked too
(``--demo-bundle``, copied and quantized again here; else ``beamcap demo`` runs first, about 11
minutes).

Rows: (0) which engine ``--precision auto`` chooses on this CPU for the im2txt-sized bundle, and
why; (1) every engine's encoder alone, TF fp32 and bf16, OpenVINO f32, bf16 and int8: speed and
fidelity to TF fp32 (quantize's check for the engines it made; 64 images for the others), and
whether it passed the gate; (2) beam search alone at V=12,001, beam 3, 20 steps, on Keras' and
the engines' decoder; (3) the engines' fidelity on the trained demo bundle; (4) the job in this
process on the engine auto chose: its marginal rate (from a half and a full run, each the
better of two) against the bound 1/(1/encoder + 1/search) of rows 1-2 and against the same job
on TF fp32, the whole job, its fixed cost and the parts of it; (5) a whole ``beamcap caption``
over 10 images, start to exit; (6) the command's marginal rate from 100 to 400 images against
plain Keras InceptionV3 fp32; (7) the job against a naive per-image loop; (8) a short batch's
cost; (9) peak memory.

    python benchmarks/caption_pipeline.py [--images 300] [--demo-bundle data/demo/model]

On an AVX-512 CPU, the kernels of an AVX2-only one (the EPYC that #27 names) run with
``ONEDNN_MAX_CPU_ISA=AVX2 OPENBLAS_CORETYPE=Haswell NPY_DISABLE_CPU_FEATURES="X86_V4
AVX512_ICL AVX512_SPR"``; the first line printed names the caps in effect.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repo root, without PYTHONPATH

import models  # noqa: E402, F401 - before Keras: it quiets TensorFlow's C++ start-up logs

# isort: split
import keras  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.cpu import bf16_units, machine  # noqa: E402
from models.captioner.beam_search import beam_search  # noqa: E402
from models.captioner.bundle import load_bundle, save_bundle  # noqa: E402
from models.captioner.decoder import DecoderConfig, ShowAndTell  # noqa: E402
from models.captioner.encoder import EncoderSpec, ImageEncoder  # noqa: E402
from models.captioner.engine_build import MIN_COSINE, MIN_SAME_CAPTION, measure  # noqa: E402
from models.captioner.engines import Choice, choose, load_captioner  # noqa: E402
from models.captioner.openvino_engine import load_engine  # noqa: E402
from models.captioner.vocabulary import Vocabulary  # noqa: E402
from models.datasets.synthetic import SynthConfig, make_example  # noqa: E402
from pipeline.quantize import add_engines, decode_sample  # noqa: E402

SEARCH = dict(beam_size=3, max_length=20)  # im2txt's
DEMO_DECODER = dict(embedding_dim=256, lstm_units=256)  # configs/demo.yaml


def make_images(folder: Path, count: int, size: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths, config = [], SynthConfig(seed=seed, min_size=(size, size), max_size=(size, size))
    for index in range(count):
        path = folder / f"img{index:05d}.jpg"
        path.write_bytes(make_example(config, index)[2])
        paths.append(path)
    return paths


def make_bundle(folder: Path, image_size: int) -> str:
    """The demo's decoder (random) over the synthetic grammar, a random InceptionV3."""
    captions = [c for i in range(200) for c in make_example(SynthConfig(seed=1), i)[1]]
    vocabulary = Vocabulary.build(captions)
    keras.utils.set_random_seed(0)
    save_bundle(
        str(folder),
        encoder=ImageEncoder(EncoderSpec("random:0", image_size)),
        decoder=ShowAndTell(DecoderConfig(len(vocabulary), **DEMO_DECODER)),
        vocabulary=vocabulary,
    )
    return str(folder)


def make_im2txt_bundle(folder: Path, end_bias: float) -> str:
    """An imported im2txt model at im2txt's sizes (random weights)."""
    from models.captioner.im2txt import import_im2txt, read_checkpoint
    from tests.models.im2txt_reference import build_reference

    folder.mkdir(parents=True)
    words = ("<S>", "</S>", *(f"word{i}" for i in range(11_516)))
    reference = build_reference(
        folder,
        embedding_size=512,
        num_lstm_units=512,
        unused=12_000 - len(words) - 1,
        vocabulary=words,
        end_bias=end_bias,
    )
    reference.close()
    bundle = str(folder / "bundle")
    import_im2txt(read_checkpoint(reference.checkpoint), reference.vocab, bundle)
    return bundle


def quantized(bundle: str, calibration: Path, **search) -> dict:
    """Adds the CPU engines (300 calibration images, 200 to check: on these random models the
    share of same captions is a noisy figure); their manifest sections."""
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        return add_engines(
            bundle, [str(calibration)], calibration_images=300, check_images=200, search=search
        )


def decoded(paths: list[Path], manifest: dict) -> np.ndarray:
    """The images as the caption job decodes them for the bundle of ``manifest``."""
    return decode_sample([str(path) for path in paths], len(paths), manifest)


def rate(function, items: np.ndarray, batch: int) -> float:
    """Items/s of ``function`` over ``items`` in batches, after one warm-up batch."""
    function(items[:batch])
    started = time.perf_counter()
    for start in range(0, len(items), batch):
        function(items[start : start + batch])
    return len(items) / (time.perf_counter() - started)


def features_of(encoder, pixels: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate(
        [encoder.encode(pixels[i : i + batch]) for i in range(0, len(pixels), batch)]
    )


def run_job(images: Path, bundle: str, output: Path, batch_size: int, precision: str) -> float:
    """Seconds of one whole caption run in this process over ``images`` (a text file of
    paths), on the DirectRunner (the in-process FnApiRunner offline)."""
    from pipeline.caption import run

    flags = ["--input-list", str(images), "--model", bundle, "--output", str(output)]
    flags += ["--batch-size", str(batch_size), "--precision", precision, "--quiet"]
    flags += ["--max-length", str(SEARCH["max_length"]), "--runner", "DirectRunner"]
    started = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        summary = run(flags)
    assert summary["counts"]["captioned"] == summary["counts"]["matched"]
    return time.perf_counter() - started


def cli_seconds(images: Path, bundle: str, output: Path, *flags: str) -> float:
    """Seconds of ``beamcap caption --input IMAGES --model B --output O FLAGS``, start to exit."""
    command = [sys.executable, "-m", "pipeline.cli", "caption", "--input", str(images)]
    command += ["--model", bundle, "--output", str(output), "--quiet", *flags]
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, capture_output=True, check=True)
    return time.perf_counter() - started


def fixed_cost_parts(bundle: str, choice: Choice, pixels: np.ndarray) -> dict[str, float]:
    """What a run pays before its first image, each part alone: the launch's bundle check,
    loading the engine, the first batch."""
    from models.captioner.engines import parts_read
    from models.captioner.manifest import Manifest, verify_bundle

    parts = {}
    started = time.perf_counter()
    manifest = Manifest.read(bundle)
    verify_bundle(bundle, manifest, parts_read(choice, manifest))
    parts["bundle check"] = time.perf_counter() - started
    started = time.perf_counter()
    engine = load_captioner(bundle, choice)
    parts["engine load"] = time.perf_counter() - started
    started = time.perf_counter()
    engine.caption(pixels[:1], **SEARCH)
    parts["first image"] = time.perf_counter() - started
    return parts


def openvino_f32(bundle: str):
    """The bf16 engine's encoder run at OpenVINO's f32 precision: for the table only."""
    import openvino as ov

    from models.captioner.openvino_engine import OpenVinoEncoder, _Compiled

    captioner = load_engine(bundle, "bf16")
    names = captioner.manifest.engines["bf16"].parts["encoder.f32"]
    xml, weights = (Path(bundle, name).read_bytes() for name in names)
    core = ov.Core()
    model = core.read_model(xml.decode(), ov.Tensor(np.frombuffer(weights, np.uint8)))
    size = captioner.manifest.encoder.image_size
    captioner.encoder = OpenVinoEncoder(_Compiled(core, lambda: model, "f32"), size)
    return captioner


def naive_loop(paths: list[Path], bundle: str) -> float:
    """Images/s the seed tutorials' way, in fp32: decode one image, ``model.predict`` it,
    search it (after one image that traces the model)."""
    keras_bundle = load_bundle(bundle)
    size = keras_bundle.encoder.spec.image_size

    def caption(path: Path) -> None:
        image = Image.open(io.BytesIO(path.read_bytes())).convert("RGB").resize((size, size))
        features = keras_bundle.encoder.model.predict(np.asarray(image)[None], verbose=0)
        beam_search(keras_bundle.stepper, features, **SEARCH)

    caption(paths[0])
    started = time.perf_counter()
    for path in paths:
        caption(path)
    return len(paths) / (time.perf_counter() - started)


def keras_inception_rate(pixels: np.ndarray) -> float:
    """Plain Keras InceptionV3 (no top, avg-pooled), fp32, batches of 32: the baseline."""
    model = keras.applications.InceptionV3(
        include_top=False, weights=None, pooling="avg", input_shape=pixels.shape[1:]
    )
    scaled = pixels.astype(np.float32) / 127.5 - 1.0
    return rate(model.predict_on_batch, scaled, 32)


def short_batch(encoder, pixels: np.ndarray) -> tuple[float, float]:
    """(time of a batch of 8 / a batch of 32; the first batch of 8 / the next), after 32s."""

    def seconds(batch):
        started = time.perf_counter()
        encoder.encode(batch)
        return time.perf_counter() - started

    encoder.encode(pixels[:32])
    full = min(seconds(pixels[:32]) for _ in range(3))
    first = seconds(pixels[32:40])
    short = min(seconds(pixels[40:48]) for _ in range(3))
    return short / full, first / short


def demo_bundle(path: str | None, work: Path) -> str:
    """A trained demo bundle with its int8 engine: ``path``, or ``beamcap demo``'s."""
    if path:
        return path
    workdir = work / "demo"
    command = [sys.executable, "-m", "pipeline.cli", "demo", "--workdir", str(workdir)]
    subprocess.run(command, cwd=ROOT, capture_output=True, check=True)
    return str(workdir / "model")


def peak_rss_kib() -> int:
    """This process's peak RSS since its start (``VmHWM``: getrusage's ru_maxrss would keep
    the parent's, here a benchmark of GiBs, across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_rss_mb(images: int, workdir: Path) -> float:
    """Peak RSS of a fresh process running the whole job over ``images`` 96px images."""
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, '.');"
        "from benchmarks.caption_pipeline import make_images, make_bundle, peak_rss_kib, run_job;"
        f"w = Path({str(workdir)!r}); make_images(w / 'in', {images}, 96);"
        "(w / 'in.txt').write_text(''.join(f'{p}\\n' for p in sorted((w / 'in').iterdir())));"
        "b = make_bundle(w / 'model', 75); run_job(w / 'in.txt', b, w / 'out', 64, 'fp32');"
        "print(peak_rss_kib() / 1024)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return float(done.stdout.strip().splitlines()[-1])


def listing(work: Path, name: str, paths: list[Path]) -> Path:
    path = work / f"{name}.txt"
    path.write_text("".join(f"{p}\n" for p in paths))
    return path


def verdict(value: float, goal: float, *, at_most: bool = False) -> str:
    met = value <= goal if at_most else value >= goal
    return f"(goal {'<=' if at_most else '>='} {goal:g}: {'met' if met else 'NOT met'})"


def print_fidelity(name: str, fidelity) -> None:
    print(
        f"   {name:<28} cosine mean {fidelity.feature_cosine_mean:.5f}, min "
        f"{fidelity.feature_cosine_min:.5f}; same best caption "
        f"{fidelity.same_best_caption:.0%} of {fidelity.images} "
        f"(gate: {MIN_COSINE} and {MIN_SAME_CAPTION:.0%}: "
        f"{'passed' if fidelity.passed else 'NOT passed'})"
    )


def engines_of(bundle: str) -> dict:
    """Every engine the table measures for ``bundle``: TF fp32 first, the baseline."""
    engines = {"TF fp32": load_bundle(bundle)}
    if bf16_units():
        engines["TF bf16"] = load_bundle(bundle, precision="bf16")
        engines["OpenVINO f32"] = openvino_f32(bundle)
        engines["OpenVINO bf16"] = load_engine(bundle, "bf16")
    engines["OpenVINO int8"] = load_engine(bundle, "int8")
    return engines


def print_engine_rows(bundle: str, sections: dict, pixels: np.ndarray) -> dict[str, float]:
    """Row 1: each engine's encoder alone, its speed against TF fp32's and its fidelity;
    returns the encoders' images/s by engine."""
    engines = engines_of(bundle)
    baseline = engines["TF fp32"]
    others = {name: e for name, e in engines.items() if name in ("TF bf16", "OpenVINO f32")}
    checked = measure(baseline, others, pixels[:64], **SEARCH) if others else {}
    checked |= {f"OpenVINO {p}": {"fidelity": e.fidelity} for p, e in sections.items()}
    print("1. each engine's encoder alone, 299 px, batches of 32; fidelity to TF fp32")
    rates = {name: rate(e.encoder.encode, pixels, 32) for name, e in engines.items()}
    for name, speed in rates.items():
        ratio = f"= {speed / rates['TF fp32']:.2f}x TF fp32" if name != "TF fp32" else ""
        print(f"   {name:<14} {speed:7.1f} images/s {ratio}")
        if name in checked:
            print_fidelity(f"  {name}", checked[name]["fidelity"])
    if not bf16_units():
        print("   TF bf16, OpenVINO f32 and bf16: skipped, no bf16 units in use on this CPU")
    return rates


def print_demo_fidelity(trained: str, calibration: Path, work: Path) -> None:
    """Row 3: the engines on a trained demo bundle (a copy, quantized again here), checked on
    100 synthetic scenes it did not calibrate on."""
    bundle = work / "trained"
    shutil.copytree(trained, bundle)
    scenes = make_images(work / "scenes", 400, 96, seed=99)
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        sections = add_engines(
            str(bundle), [str(work / "scenes")], calibration_images=300, check_images=100,
            search={"beam_size": 3, "max_length": 30},
        )  # fmt: skip
    print(f"3. the engines on the trained demo bundle ({len(scenes) - 300} scenes checked)")
    for precision, section in sections.items():
        print_fidelity(f"OpenVINO {precision}", section.fidelity)


def job_engine(choice: Choice, sections: dict) -> Choice:
    """The engine row 4 runs the job on: auto's choice; where auto kept fp32 (no engine passed
    its check on these random weights), the bf16 engine, what auto runs where it passes."""
    if choice.runtime != "keras" or "bf16" not in sections:
        return choice
    return Choice("bf16", "openvino", "asked for: auto's choice where its check passes")


def print_job_rows(
    im2txt: str, choice: Choice, paths: list[Path], pixels: np.ndarray, bound: float, work: Path
) -> None:
    """Row 4: the in-process job over ``paths`` and half of them (each the better of two runs)
    on the engine ``choice`` against ``bound`` and against TF fp32; its fixed cost, in parts."""
    run_job(listing(work, "warm", paths[:32]), im2txt, work / "o-warm", 32, choice.precision)
    images, half = len(paths), len(paths) // 2

    def marginal_of(precision: str) -> tuple[float, float]:
        def best_of_two(count: int) -> float:
            inputs = listing(work, f"first{count}", paths[:count])
            runs = (run_job(inputs, im2txt, work / f"o{precision}{count}-{i}", 32, precision)
                    for i in (1, 2))  # fmt: skip
            return min(runs)

        half_seconds, whole = best_of_two(half), best_of_two(images)
        return (images - half) / (whole - half_seconds), whole

    marginal, whole = marginal_of(choice.precision)
    fp32_marginal, _ = marginal_of("fp32")
    fixed = whole - images / marginal
    print(f"4. the job, im2txt-sized, {choice.precision} on {choice.runtime} ({choice.reason}), "
          f"in this process; bound 1/(1/encoder + 1/search) = {bound:.1f} images/s")  # fmt: skip
    print(f"   marginal   {marginal:7.1f} images/s = {marginal / bound:.2f} of the bound "
          f"{verdict(marginal / bound, 0.92)}")  # fmt: skip
    speedup = marginal / fp32_marginal
    print(f"   against the same job on TF fp32 ({fp32_marginal:.1f} images/s): {speedup:.2f}x "
          f"{verdict(speedup, 2)}")  # fmt: skip
    whole_rate = images / whole
    share = whole_rate / bound
    print(f"   whole job  {whole_rate:7.1f} images/s = {share:.2f} of the bound "
          f"({images} images in {whole:.1f} s) {verdict(share, 0.8)}")  # fmt: skip
    parts = fixed_cost_parts(im2txt, choice, pixels)
    rest = fixed - sum(parts.values())
    listed = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in parts.items())
    print(f"   fixed cost {fixed:.2f} s per run: {listed} (each timed alone), the rest by "
          f"difference {rest:.2f} s (Beam's pipeline, writes, commit)")  # fmt: skip


def copied(paths: list[Path], folder: Path) -> Path:
    folder.mkdir()
    for path in paths:
        shutil.copy(path, folder)
    return folder


def print_command_rows(
    im2txt: str, demo_sized: str, paths: list[Path], choice: Choice, work: Path
) -> None:
    """Rows 5-7: whole ``beamcap caption`` commands: 10 images start to exit, the marginal
    rate from 100 to 400 images against plain Keras, the whole command against a naive loop."""
    ten = copied(paths[:10], work / "ten")
    print("5. beamcap caption over 10 images, start to exit (im2txt-sized), the first run on "
          "this machine (OpenVINO compiles) / the next (its compiled parts cached)")  # fmt: skip
    for flags, note in (
        ((), f"runs {choice.precision} on {choice.runtime}"),
        (("--precision", "bf16"), "the bf16 engine"),
        (("--precision", "int8"), "the int8 engine"),
        (("--precision", "fp32"), "TensorFlow"),
    ):
        name = " ".join(flags) or "--precision auto"
        first, second = (cli_seconds(ten, im2txt, work / f"c{name}{i}", *flags) for i in (1, 2))
        goal = verdict(second, 4, at_most=True) if flags[1:] != ("fp32",) else ""
        print(f"   {name:<18} {first:5.1f} s / {second:5.1f} s ({note}) {goal}")

    seconds = {
        n: cli_seconds(copied(paths[:n], work / f"cli{n}"), demo_sized, work / f"d{n}",
                       "--precision", "int8")
        for n in (100, 400)
    }  # fmt: skip
    cli_marginal = 300 / (seconds[400] - seconds[100])
    keras_rate = keras_inception_rate(decoded(paths[:96], load_bundle(demo_sized).manifest))
    ratio = cli_marginal / keras_rate
    print("6. beamcap caption, demo-sized decoder, 299 px, int8: 100 -> 400 images")
    print(f"   marginal {cli_marginal:6.1f} images/s; plain Keras InceptionV3 fp32 batch 32 "
          f"{keras_rate:.1f}: {ratio:.2f}x {verdict(ratio, 2.2)}")  # fmt: skip

    naive = naive_loop(paths[:40], demo_sized)
    job_rate = 400 / seconds[400]
    print("7. the job (400 images, whole command, int8) against a naive per-image loop (fp32)")
    print(f"   {job_rate:.1f} vs {naive:.1f} images/s: {job_rate / naive:.2f}x "
          f"{verdict(job_rate / naive, 5)}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="images per run (default: 300)")
    parser.add_argument(
        "--end-bias", type=float, default=-20.0, help="on </S> of the im2txt-sized model"
    )
    parser.add_argument("--demo-bundle", help="a trained demo bundle (default: run beamcap demo)")
    parser.add_argument("--skip-rss", action="store_true", help="skip the peak-memory runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="beamcap-bench-") as tmp:
        work = Path(tmp)
        os.environ["BEAMCAP_CACHE_DIR"] = str(work / "openvino-cache")  # cold, and left here
        paths = make_images(work / "images", max(args.images, 400), 299)
        calibration = work / "calibration"
        make_images(calibration, 500, 299, seed=2)
        im2txt = make_im2txt_bundle(work / "im2txt", args.end_bias)
        sections = quantized(im2txt, calibration, **SEARCH)
        demo_sized = make_bundle(work / "demo-sized", 299)
        quantized(demo_sized, calibration, **SEARCH)
        trained = demo_bundle(args.demo_bundle, work)
        print(f"beamcap caption benchmark, {datetime.date.today()}: {machine()}")
        print(f"keras {keras.__version__} on {keras.backend.backend()}; {args.images} images")

        fp32 = load_bundle(im2txt)
        choice = choose("auto", fp32.manifest, gpu=False)
        print(f"0. --precision auto on this CPU, im2txt-sized bundle: {choice.precision} on "
              f"{choice.runtime} ({choice.reason})")  # fmt: skip
        pixels = decoded(paths[: args.images], fp32.manifest)
        rates = print_engine_rows(im2txt, sections, pixels)

        features = features_of(fp32.encoder, pixels, 32)
        search_tf, search_engine = (
            rate(lambda f, s=e.stepper: beam_search(s, f, **SEARCH), features, 32)
            for e in (fp32, load_engine(im2txt, "int8"))
        )
        print("2. beam search alone, V=12,001, beam 3, 20 steps")
        print(f"   TF fp32 decoder                   {search_tf:7.1f} images/s")
        print(f"   the engines' decoder (OpenVINO f32) {search_engine:7.1f} images/s "
              f"{verdict(search_engine, 120)}")  # fmt: skip

        print_demo_fidelity(trained, calibration, work)
        job = job_engine(choice, sections)
        engine_name = "TF fp32" if job.runtime == "keras" else f"OpenVINO {job.precision}"
        search = search_tf if job.runtime == "keras" else search_engine
        bound = 1 / (1 / rates[engine_name] + 1 / search)
        print_job_rows(im2txt, job, paths[: args.images], pixels, bound, work)
        print_command_rows(im2txt, demo_sized, paths, choice, work)

        keras_encoder = load_bundle(im2txt, batch_size=32).encoder
        print("8. a short batch: time of 8 images / of 32 (ideal 0.25); its first call / next")
        for name, encoder in (
            (f"{job.precision} engine", load_captioner(im2txt, job).encoder),
            ("TF fp32", keras_encoder),
        ):
            share, first = short_batch(encoder, pixels)
            print(f"   {name:<12} {share:.2f}; first call {first:.2f}x the next")

        if not args.skip_rss:
            for count in (1000, 5000):
                rss = peak_rss_mb(count, work / f"rss{count}")
                print(f"9. peak RSS, whole job over {count} images (96 px, fp32): {rss:.0f} MiB")
        peak = peak_rss_kib() // 1024
        print(f"(this process: peak RSS {peak} MiB)")


if __name__ == "__main__":
    main()
