"""Shared fixtures. Tests run on Keras' TensorFlow backend unless a test starts a subprocess."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import atexit  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from models import storage  # noqa: E402

# The OpenVINO engines' compiled-model cache: the session's own, never the user's, made once
# (xdist's workers inherit it) and removed by the process that made it
if "BEAMCAP_CACHE_DIR" not in os.environ:
    os.environ["BEAMCAP_CACHE_DIR"] = tempfile.mkdtemp(prefix="beamcap-test-cache-")
    atexit.register(shutil.rmtree, os.environ["BEAMCAP_CACHE_DIR"], ignore_errors=True)

ROOT = Path(__file__).resolve().parents[1]
PRISM = ROOT / "build" / "bin" / "prism"  # built by `make prism` from Beam's Go module


def runner_flags(name: str) -> list[str]:
    """Beam flags that run a job on ``name``: the Python FnApiRunner, or Prism (what the
    DirectRunner picks first) from the binary `make prism` built, never a download."""
    if name != "PrismRunner":
        return ["--runner", name]
    if not PRISM.exists():
        pytest.fail(f"{PRISM} is missing: run `make prism`")
    return ["--runner", "PrismRunner", "--prism_location", str(PRISM)]


@pytest.fixture(params=["FnApiRunner", "PrismRunner"])
def runner(request) -> list[str]:
    """Runs the test once per local runner; yields that runner's flags."""
    return runner_flags(request.param)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def gcs_servers(tmp_path_factory):
    """fake-gcs-server behind Toxiproxy (tests/gcs_servers.py), started once for the session;
    yields the ``GcsServers``. A test that uses them asks for ``gcs``."""
    from tests.gcs_servers import GcsServers

    servers = GcsServers(tmp_path_factory.mktemp("gcs-servers")).start()
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture
def gcs(gcs_servers, monkeypatch):
    """The session's storage servers for this test: this process and every process it starts
    reach them through ``$STORAGE_EMULATOR_HOST``, the proxy's address, anonymously, with the
    harness's batch work-around. The environment and the storage setting are restored after
    the test, so that a test without ``gcs`` runs alike whatever ran before it."""
    from tests.gcs_compat.sitecustomize import add_content_ids

    for name, value in gcs_servers.env().items():
        monkeypatch.setenv(name, value)
    add_content_ids()  # Content-IDs on batch parts: harmless to any other client
    monkeypatch.setattr(storage, "_RETRIES", storage.retries())  # restored after the test
    monkeypatch.setattr(storage, "_GCS_CLIENT", None)
    storage.configure(storage.retries(), anonymous=True)
    return gcs_servers


@pytest.fixture
def new_bucket(gcs, request):
    """Makes a fresh bucket on the test server and returns its name: ``new_bucket("in")``."""
    import re

    made = []
    client = gcs.client()
    gcs.toxiproxy.reset()

    def make(role: str) -> str:
        name = re.sub(r"[^a-z0-9-]", "-", f"{role}-{request.node.name}".lower())[:50]
        name = f"{name}-{len(made)}".strip("-")
        client.create_bucket(name)
        made.append(name)
        return name

    yield make
    gcs.toxiproxy.reset()


TINY_IMAGES = 24
TINY_SIZE = 75  # the encoder input size used by pipeline tests
SEARCH = dict(beam_size=3, max_length=6, num_candidates=2)  # the bundle tests' beam search


@pytest.fixture(scope="module")
def parts():
    """A bundle's parts, untrained: a random 75 px encoder, a 16-unit decoder, 9 words."""
    import keras

    from models.captioner.decoder import DecoderConfig, ShowAndTell
    from models.captioner.encoder import EncoderSpec, ImageEncoder
    from models.captioner.vocabulary import Vocabulary

    vocabulary = Vocabulary.build(["a red circle", "a blue square above a green star"])
    keras.utils.set_random_seed(0)
    decoder = ShowAndTell(DecoderConfig(len(vocabulary), embedding_dim=16, lstm_units=16))
    encoder = ImageEncoder(EncoderSpec("random:7", TINY_SIZE))
    return dict(encoder=encoder, decoder=decoder, vocabulary=vocabulary)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """24 synthetic images (96x72) in the Flickr8k layout, plus trouble: a truncated JPEG and a
    text file posing as an image (both captioned), and captions for an image that is missing."""
    from models.datasets.splits import split_for
    from models.datasets.synthetic import SynthConfig, generate

    root = tmp_path_factory.mktemp("tiny-synth")
    generate(
        SynthConfig(images=TINY_IMAGES, seed=7, min_size=(96, 72), max_size=(96, 72)),
        str(root),
        processes=1,
    )
    images = root / "Images"
    good = (images / "synth_7_000000.jpg").read_bytes()
    (images / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (images / "not-an-image.jpg").write_text("this is not a JPEG")
    with open(root / "captions.txt", "a", encoding="utf-8") as captions:
        captions.write("truncated.jpg,a small red circle on the left\n")
        captions.write('not-an-image.jpg,"a large blue star, in the middle"\n')
        captions.write("missing.jpg,a caption whose image does not exist\n")
        captions.write("missing.jpg,another one\n")
        # Words seen in a single split, to check that the vocabulary comes from train alone.
        for index in range(TINY_IMAGES):
            name = f"synth_7_{index:06d}.jpg"
            split = split_for(name, val_fraction=0.2, test_fraction=0.2)
            captions.write(f"{name},a {split}only{index} word\n")
    return root


def features_flags(dataset, output) -> list[str]:
    """The features job's flags for the tiny dataset, the ones every runner's test uses."""
    return [
        "--images",
        str(dataset / "Images"),
        "--captions",
        str(dataset / "captions.txt"),
        "--output",
        str(output),
        "--image-size",
        str(TINY_SIZE),
        "--encoder-weights",
        "random:3",
        "--val-fraction",
        "0.2",
        "--test-fraction",
        "0.2",
    ]


def run_features(dataset, output, *extra, runner=("--runner", "FnApiRunner")):
    from pipeline.features import run

    return run([*features_flags(dataset, output), *runner, *extra])


@pytest.fixture(scope="session")
def tiny_features(tiny_dataset, tmp_path_factory):
    output = tmp_path_factory.mktemp("tiny-features")
    return output, run_features(tiny_dataset, output)


@pytest.fixture(scope="session")
def tiny_image_features(tiny_dataset, tmp_path_factory):
    """The tiny dataset's features written ``--with-images`` (what phase 2 trains on)."""
    output = tmp_path_factory.mktemp("tiny-image-features")
    return output, run_features(tiny_dataset, output, "--with-images")


def make_bundle(uri: str, *, nan_decoder: bool = False, seed: int = 0) -> str:
    """An untrained bundle (random decoder, drawn from ``seed``) over the synthetic grammar, at
    ``TINY_SIZE``; with ``nan_decoder`` every decoder weight is NaN (a model fault, whatever the
    image)."""
    import keras
    import numpy as np

    from models.captioner.bundle import save_bundle
    from models.captioner.decoder import DecoderConfig, ShowAndTell
    from models.captioner.encoder import EncoderSpec, ImageEncoder
    from models.captioner.vocabulary import Vocabulary
    from models.datasets.synthetic import SynthConfig, make_example

    captions = [c for i in range(20) for c in make_example(SynthConfig(seed=1), i)[1]]
    vocabulary = Vocabulary.build(captions)
    keras.utils.set_random_seed(seed)
    decoder = ShowAndTell(DecoderConfig(len(vocabulary), embedding_dim=32, lstm_units=32))
    if nan_decoder:
        model = decoder.training_model
        model.set_weights([np.full_like(w, np.nan) for w in model.get_weights()])
    save_bundle(
        uri,
        encoder=ImageEncoder(EncoderSpec("random:3", TINY_SIZE)),
        decoder=decoder,
        vocabulary=vocabulary,
    )
    return uri


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """Enough of a model to run jobs."""
    return make_bundle(str(tmp_path_factory.mktemp("tiny-bundle")))


QUANTIZE_OUTPUT = "quantize-output.txt"  # beside the int8 bundle: what the command printed


@pytest.fixture(scope="session")
def int8_bundle(tmp_path_factory):
    """A tiny bundle with its int8 engine, made as a user makes it: `beamcap quantize`,
    calibrated on 24 synthetic scenes (a text file among them) and checked on 8 more. What the
    command printed is kept beside the bundle, in ``QUANTIZE_OUTPUT``."""
    import contextlib
    import io

    from models.datasets.synthetic import SynthConfig, generate
    from pipeline import cli

    scenes = tmp_path_factory.mktemp("int8-calibration")
    config = SynthConfig(images=32, seed=5, min_size=(96, 72), max_size=(96, 72))
    generate(config, str(scenes), processes=1)
    (scenes / "Images" / "notes.txt").write_text("not an image: passed over")
    folder = tmp_path_factory.mktemp("int8")
    uri = make_bundle(str(folder / "bundle"))
    flags = ["--calibration", str(scenes / "Images"), "--calibration-images", "24"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = cli.main(["quantize", "--model", uri, *flags, "--check-images", "8"])
    assert status == 0
    (folder / QUANTIZE_OUTPUT).write_text(printed.getvalue())
    return uri


@pytest.fixture(scope="session")
def other_bundle(tmp_path_factory):
    """Another model (another model_id) of the same shape."""
    return make_bundle(str(tmp_path_factory.mktemp("other-bundle")), seed=1)


@pytest.fixture(scope="session")
def nan_bundle(tmp_path_factory):
    return make_bundle(str(tmp_path_factory.mktemp("nan-bundle")), nan_decoder=True)


def write_image_folder(root, *, good=6, seed=4):
    """Good synthetic JPEGs (one in a subfolder) and the usual suspects; returns file names
    that must fail, and their stage."""
    import io

    from PIL import Image

    from models.datasets.synthetic import SynthConfig, make_example

    (root / "nested").mkdir(parents=True)
    for index in range(good):
        folder = root / "nested" if index == 0 else root
        (folder / f"good{index}.jpg").write_bytes(make_example(SynthConfig(seed=seed), index)[2])
    jpeg = make_example(SynthConfig(seed=seed), good)[2]
    (root / "wrong-extension.txt").write_bytes(jpeg)  # decodable whatever its name
    (root / "empty.jpg").write_bytes(b"")
    (root / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (root / "not-an-image.jpg").write_text("hello")
    bomb = io.BytesIO()
    Image.new("L", (600, 600)).save(bomb, format="PNG")  # 360k px: over the tests' limit
    (root / "bomb.png").write_bytes(bomb.getvalue())
    return {
        "empty.jpg": "decode",
        "truncated.jpg": "decode",
        "not-an-image.jpg": "decode",
        "bomb.png": "decode",
    }


@pytest.fixture(scope="session")
def caption_run(tiny_bundle, tmp_path_factory):
    """A committed caption run over ``write_image_folder`` images, with a references file and
    scenes for the good ones. Returns (run_dir, references, scenes, must_fail)."""
    import csv

    from models.datasets.synthetic import SynthConfig, make_example
    from pipeline.caption import run

    root = tmp_path_factory.mktemp("caption-run")
    must_fail = write_image_folder(root / "images")
    with (
        open(root / "captions.txt", "w", newline="") as handle,
        open(root / "scenes.jsonl", "w") as scenes,
    ):
        writer = csv.writer(handle)
        writer.writerow(["image", "caption"])
        for index in range(6):
            scene, texts, _ = make_example(SynthConfig(seed=4), index)
            writer.writerows([f"good{index}.jpg", text] for text in texts)
            scenes.write(scene.to_json().replace(scene.image, f"good{index}.jpg") + "\n")
    summary = run(
        [
            "--input",
            str(root / "images"),
            "--model",
            tiny_bundle,
            "--output",
            str(root / "out"),
            "--max-pixels",
            "350000",
            "--max-length",
            "12",
            "--runner",
            "FnApiRunner",
        ]
    )
    run_dir = root / "out" / "runs" / summary["run_id"]
    return run_dir, root / "captions.txt", root / "scenes.jsonl", must_fail


@pytest.fixture(scope="session")
def im2txt_model(tmp_path_factory):
    """The im2txt reference model (tests/models/im2txt_reference.py): checkpoint, frozen graph,
    word_counts.txt and the open TF1 session that runs im2txt's inference."""
    from tests.models.im2txt_reference import build_reference

    reference = build_reference(tmp_path_factory.mktemp("im2txt"))
    yield reference
    reference.close()


@pytest.fixture(scope="session")
def im2txt_bundles(im2txt_model, tmp_path_factory):
    """``beamcap import-im2txt`` of the reference model: {"checkpoint": uri, "graph": uri}."""
    from pipeline.cli import main as beamcap

    bundles = {}
    for kind, path in (("checkpoint", im2txt_model.checkpoint), ("graph", im2txt_model.graph)):
        uri = str(tmp_path_factory.mktemp(f"im2txt-{kind}") / "bundle")
        flags = [f"--{kind}", path, "--vocab", im2txt_model.vocab, "--output", uri]
        assert beamcap(["import-im2txt", *flags]) == 0
        bundles[kind] = uri
    return bundles
