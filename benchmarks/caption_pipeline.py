"""The caption job against its limits, on the same synthetic JPEGs, in one process.

(a) the whole caption job on the DirectRunner (in-process FnApiRunner, as DirectRunner runs it),
    from submission to committed run: pipeline start, model load and compile, then the images;
(b) the encoder alone: the same images pre-decoded, encoded in batches (the CPU bound);
(c) a naive loop, as the seed tutorials do it: decode one image, ``model.predict`` it, beam
    search it alone.
Prints images/s and the ratios (a)/(b) (target >= 0.8) and (a)/(c) (target >= 3). The job also
runs on the first half of the images (after a short warm-up run): the two runs give its
marginal rate (what each further image costs) and its fixed cost per run, which is what
separates (a) from (b) on a few hundred images. Then the job's peak RSS for two input sizes,
each in a fresh process, to show memory does not grow with the input (at a small image size so
that the larger run stays short).

``--im2txt`` runs all of it on an imported im2txt model at im2txt's sizes (InceptionV3 at 299
px, embedding and LSTM 512, 12,000 logits for 11,518 words; random weights from the test
suite's tf-slim reference model, so the test extra must be installed) and adds (d): beam search
alone on the encoder's features, and its share of (b) + (d). ``--im2txt-end-bias`` sets how soon
that random model ends its captions (-20: never, so every search runs --max-length steps).

    python benchmarks/caption_pipeline.py [--images 300] [--precision bf16] [--im2txt]
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import models  # noqa: F401 - before Keras: it quiets TensorFlow's C++ start-up logs

# isort: split
import keras  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from models.captioner.beam_search import beam_search  # noqa: E402
from models.captioner.bundle import load_bundle, save_bundle  # noqa: E402
from models.captioner.decoder import DecoderConfig, ShowAndTell  # noqa: E402
from models.captioner.encoder import EncoderSpec, ImageEncoder  # noqa: E402
from models.captioner.vocabulary import Vocabulary  # noqa: E402
from models.datasets.synthetic import SynthConfig, make_example  # noqa: E402
from transforms.decode import decode_image  # noqa: E402

SEARCH = dict(beam_size=3, max_length=20)


def make_images(folder: Path, count: int, size: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths, config = [], SynthConfig(seed=0, min_size=(size, size), max_size=(size, size))
    for index in range(count):
        path = folder / f"img{index:05d}.jpg"
        path.write_bytes(make_example(config, index)[2])
        paths.append(path)
    return paths


def make_bundle(folder: Path, image_size: int) -> str:
    captions = [c for i in range(200) for c in make_example(SynthConfig(seed=1), i)[1]]
    vocabulary = Vocabulary.build(captions)
    keras.utils.set_random_seed(0)
    decoder = ShowAndTell(DecoderConfig(len(vocabulary), embedding_dim=512, lstm_units=512))
    save_bundle(
        str(folder),
        encoder=ImageEncoder(EncoderSpec("random:0", image_size)),
        decoder=decoder,
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


def beam_search_alone(paths, bundle, batch_size: int) -> tuple[float, float]:
    """Seconds of beam search over the images' features, batched; mean caption length."""
    size = bundle.encoder.spec.image_size
    pixels = np.stack([decode_image(p.read_bytes(), size)[0] for p in paths])
    features = np.concatenate(
        [
            bundle.encoder.encode(pixels[i : i + batch_size])
            for i in range(0, len(pixels), batch_size)
        ]
    )
    beam_search(bundle.stepper, features[:batch_size], **SEARCH)  # compile
    started, lengths = time.perf_counter(), []
    for start in range(0, len(features), batch_size):
        found = beam_search(bundle.stepper, features[start : start + batch_size], **SEARCH)
        lengths += [len(image[0].tokens) for image in found]
    return time.perf_counter() - started, float(np.mean(lengths))


def run_job(images: Path, bundle: str, output: Path, batch_size: int, precision="fp32") -> float:
    """Seconds of one whole caption run over ``images`` (a folder or a text file of paths)."""
    from pipeline.caption import run

    started = time.perf_counter()
    summary = run(
        [
            "--input-list" if images.is_file() else "--input",
            str(images),
            "--model",
            bundle,
            "--output",
            str(output),
            "--batch-size",
            str(batch_size),
            "--min-batch-size",
            str(batch_size),
            "--runner",
            "DirectRunner",
            "--direct_running_mode",
            "in_memory",
            "--max-length",
            str(SEARCH["max_length"]),
            "--precision",
            precision,
        ]
    )
    assert summary["counts"]["captioned"] == summary["counts"]["matched"]
    return time.perf_counter() - started


def encoder_alone(paths, bundle, batch_size: int) -> float:
    size = bundle.encoder.spec.image_size
    pixels = np.stack([decode_image(p.read_bytes(), size)[0] for p in paths])
    bundle.encoder.encode(pixels[:batch_size])  # compile
    started = time.perf_counter()
    for start in range(0, len(pixels), batch_size):
        bundle.encoder.encode(pixels[start : start + batch_size])
    return time.perf_counter() - started


def naive_loop(paths, bundle) -> float:
    size = bundle.encoder.spec.image_size
    stepper = bundle.stepper
    started = time.perf_counter()
    for path in paths:
        image = Image.open(io.BytesIO(path.read_bytes())).convert("RGB").resize((size, size))
        features = bundle.encoder.model.predict(np.asarray(image)[None], verbose=0)
        beam_search(stepper, features, **SEARCH)
    return time.perf_counter() - started


def peak_rss_mb(images: int, workdir: Path) -> float:
    """Peak RSS of a fresh process running the whole job over ``images`` 75px images."""
    code = (
        "import sys, resource; from pathlib import Path; sys.path.insert(0, '.');"
        "from benchmarks.caption_pipeline import make_images, make_bundle, run_job;"
        f"w = Path({str(workdir)!r}); make_images(w / 'in', {images}, 96);"
        "b = make_bundle(w / 'model', 75); run_job(w / 'in', b, w / 'out', 64);"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    return float(result.stdout.strip().splitlines()[-1])


# Over 60 lines: the benchmark's script, each measurement and its printed row in turn.
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images", type=int, default=300, help="synthetic JPEGs (default: %(default)s)"
    )
    parser.add_argument(
        "--image-size", type=int, default=299, help="their side and the encoder's input size"
    )
    parser.add_argument(
        "--batch-size", type=int, default=32, help="batch of (a) and (b) (default: %(default)s)"
    )
    parser.add_argument(
        "--rss-images",
        type=int,
        nargs=2,
        default=(1000, 5000),
        help="the two input sizes of the peak-RSS runs (default: 1000 5000)",
    )
    parser.add_argument("--skip-rss", action="store_true", help="skip the peak-RSS runs")
    parser.add_argument(
        "--im2txt", action="store_true", help="an imported im2txt model at im2txt's sizes, and (d)"
    )
    parser.add_argument(
        "--im2txt-end-bias",
        type=float,
        default=0.0,
        help="added to the random im2txt model's </S> logit (default: %(default)s)",
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "bf16"),
        help="encoder compute type of (a) and (b); (c) stays fp32, as the tutorials run it",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="beamcap-bench-") as tmp:
        work = Path(tmp)
        paths = make_images(work / "images", args.images, args.image_size)
        if args.im2txt:
            bundle_dir = make_im2txt_bundle(work / "model", args.im2txt_end_bias)
        else:
            bundle_dir = make_bundle(work / "model", args.image_size)

        def listing(name: str, count: int) -> Path:
            path = work / f"{name}.txt"
            path.write_text("".join(f"{image}\n" for image in paths[:count]))
            return path

        def job_seconds(name: str, images: Path) -> float:
            return run_job(images, bundle_dir, work / name, args.batch_size, args.precision)

        # A short first run pays the process's one-off costs (TensorFlow op registration, file
        # cache), which a worker pays once, not per run.
        job_seconds("warmup", listing("warmup", args.batch_size))
        half_job = job_seconds("half", listing("half", args.images // 2))
        job = job_seconds("out", work / "images")
        marginal = (args.images - args.images // 2) / (job - half_job)
        fixed = job - args.images / marginal
        encoder = encoder_alone(
            paths, load_bundle(bundle_dir, precision=args.precision), args.batch_size
        )
        naive = naive_loop(paths, load_bundle(bundle_dir))
        rates = {
            name: args.images / seconds
            for name, seconds in (("job", job), ("encoder", encoder), ("naive", naive))
        }
        print(
            f"{args.images} synthetic JPEGs at {args.image_size}x{args.image_size}, "
            f"encoder {args.precision} in (a) and (b), "
            f"{os.cpu_count()} cores, keras {keras.__version__} on {keras.backend.backend()}"
        )
        print(f"(a) caption job, DirectRunner   {rates['job']:8.2f} images/s")
        print(
            f"    of which: fixed cost per run {fixed:.1f} s, then {marginal:.2f} images/s "
            f"(half run: {args.images // 2} images in {half_job:.1f} s)"
        )
        print(f"(b) encoder alone, batched      {rates['encoder']:8.2f} images/s")
        print(f"(c) naive per-image loop        {rates['naive']:8.2f} images/s")
        print(f"(a)/(b) = {rates['job'] / rates['encoder']:.2f}  (target >= 0.8)")
        print(f"(a)/(c) = {rates['job'] / rates['naive']:.2f}  (target >= 3)")
        print(
            f"marginal (a)/(b) = {marginal / rates['encoder']:.2f}, "
            f"marginal (a)/(c) = {marginal / rates['naive']:.2f}"
        )
        if args.im2txt:
            beam, length = beam_search_alone(paths, load_bundle(bundle_dir), args.batch_size)
            print(
                f"(d) beam search alone, V=12,001  {args.images / beam:8.2f} images/s "
                f"(beam {SEARCH['beam_size']}, best captions {length:.1f} words on average)"
            )
            print(f"beam search's share of (b) + (d) = {beam / (beam + encoder):.2f}")
        if not args.skip_rss:
            for count in args.rss_images:
                rss = peak_rss_mb(count, work / f"rss{count}")
                print(f"peak RSS, whole job over {count} images (75px): {rss:.0f} MiB")


if __name__ == "__main__":
    main()
