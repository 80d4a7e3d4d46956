"""beamcap's int8 CPU engine: a bundle's encoder quantized to int8, its decoder's two steps in
float32, both compiled by OpenVINO, with beam search driving them as it drives Keras.

Made once per bundle by ``beamcap quantize``: :func:`build_int8_engine` exports the bundle's
Keras models to OpenVINO and quantizes the encoder with NNCF's post-training quantization,
calibrated on real images; the caller measures its fidelity against the Keras fp32 models
(:func:`measure_fidelity`) and stores both in the bundle (:func:`store_int8_engine`). Workers
load it ready (:func:`load_int8`): only ``openvino`` is needed, no TensorFlow and no
calibration, and batches run at their own size (the shapes are dynamic), so a short batch
costs in proportion to its rows.

In the bundle, named by their content (``encoder.int8.<sha>.xml/.bin``, ``decoder.start...``,
``decoder.step...``: the encoder; features -> state; (tokens, state) -> log-probabilities and
the next state, its top-k added at load), listed with their sha256 in the manifest's ``files``,
and the manifest's ``engines.int8``: the parts' files, runtime versions, the fingerprints of
the Keras weights it was built from (an engine that no longer matches them is not used), the
calibration and the fidelity measured. The manifest is written last, and the previous
engine's files removed after it, so a crash mid-way leaves the old engine whole.

What is not int8 runs at OpenVINO's f32 inference precision (its default on CPUs with bf16
units would be bf16). int8 kernels still differ between CPUs (VNNI or not), so features may
move slightly from the CPU the fidelity was measured on.
"""

from __future__ import annotations

import datetime
import json
import tempfile
import threading
from pathlib import Path

import numpy as np

from models import storage
from models.captioner.captioner import (
    INT8,
    Captioner,
    built_from,
    checked_images,
    int8_problem,
    pad_rows,
    parts_read,
)
from models.captioner.manifest import (
    MANIFEST,
    VOCAB,
    BundleError,
    read_checked,
    read_manifest,
    sha256,
)
from models.captioner.vocabulary import Vocabulary
from models.faults import ModelFault

ENCODER, START, STEP = "encoder.int8", "decoder.start", "decoder.step"
PARTS = (ENCODER, START, STEP)  # each an OpenVINO model: (xml, weights) bytes
# The fidelity an engine must show against the Keras fp32 models to be the default (``auto``)
MIN_COSINE, MIN_SAME_CAPTION = 0.99, 0.90
_COMPILE = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
ROW_MULTIPLE = 16  # decoder rows are padded to it: few distinct shapes as hypotheses finish


def file_names(part: str, xml: bytes, weights: bytes) -> tuple[str, str]:
    """A part's two file names, by its content: a new engine never overwrites the old one's."""
    digest = sha256(xml + weights)[:12]
    return f"{part}.{digest}.xml", f"{part}.{digest}.bin"


def _export(model, folder: Path, name: str):
    """A Keras model -> an OpenVINO model, through Keras' own export."""
    import openvino as ov

    path = str(folder / f"{name}.xml")
    model.export(path, format="openvino", verbose=False)
    return ov.Core().read_model(path)


def _with_top_k(step, *, stable: bool):
    """The decoder's step with the top-k taken inside: (tokens, *state, k) -> (log-probs of
    the k best words, their ids, *state), best first; ``stable``: ties to the lower id, at
    four times the cost of OpenVINO's plain top-k (see :class:`Int8Stepper`)."""
    import openvino as ov
    import openvino.opset13 as ops

    k = ops.parameter([], ov.Type.i64, name="k")
    log_probs, *state = (result.input_value(0) for result in step.get_results())
    if not stable and log_probs.get_node().get_type_name() == "LogSoftmax":
        # The k best of the logits, less their log-sum-exp: the log-softmax's values (to a
        # float32 rounding; its order, ties apart) without writing every row's out: 8 % of a
        # step at im2txt's 12,000 words. The stable top-k takes the log-probabilities as Keras.
        logits, axis = log_probs.get_node().input_value(0), ops.constant(np.int64(-1))
        best = ops.topk(logits, k, -1, "max", "value", ov.Type.i32, stable=stable)
        top = ops.reduce_max(logits, axis, True)
        spread = ops.reduce_sum(ops.exp(ops.subtract(logits, top)), axis, True)
        values = ops.subtract(best.output(0), ops.add(top, ops.log(spread)))
    else:
        best = ops.topk(log_probs, k, -1, "max", "value", ov.Type.i32, stable=stable)
        values = best.output(0)
    results = [ops.result(values), ops.result(best.output(1))]
    results += [ops.result(part) for part in state]
    return ov.Model(results, [*step.get_parameters(), k], "decoder_step_top_k")


def build_int8_engine(bundle, calibration: np.ndarray) -> dict[str, tuple[bytes, bytes]]:
    """A Keras :class:`~models.captioner.bundle.Bundle` -> the engine: part -> (xml, weights).
    ``calibration``: uint8 images [N, S, S, 3] as the caption job decodes them, N >= 1."""
    import nncf
    import openvino as ov

    with tempfile.TemporaryDirectory(prefix="beamcap-int8-") as tmp:
        folder = Path(tmp)
        encoder = _export(bundle.encoder.model, folder, "encoder")
        samples = nncf.Dataset([image[None] for image in calibration])
        models = {
            ENCODER: nncf.quantize(encoder, samples, subset_size=len(calibration)),
            START: _export(bundle.stepper.initial_state_model, folder, "start"),
            STEP: _export(bundle.stepper.step_model, folder, "step"),
        }
        parts = {}
        for part, model in models.items():
            ov.save_model(model, str(folder / f"{part}.xml"), compress_to_fp16=False)
            parts[part] = tuple((folder / f"{part}.{end}").read_bytes() for end in ("xml", "bin"))
    return parts


def engine_section(manifest: dict, calibration: dict, fidelity: dict) -> dict:
    """The manifest's ``engines.int8`` but its files: what made the engine, from which
    weights, on what, and how faithful it is (``fidelity["passed"]``: it met
    :data:`MIN_COSINE` and :data:`MIN_SAME_CAPTION`)."""
    import nncf
    import openvino as ov

    return {
        "runtime": "openvino",
        "versions": {"openvino": ov.get_version(), "nncf": nncf.__version__},
        "encoder": "int8 (NNCF post-training quantization)",
        "decoder": "float32",
        "built_from": built_from(manifest),
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "calibration": calibration,
        "fidelity": fidelity,
    }


class _Compiled:
    """A compiled OpenVINO model; each call takes an idle inference request, or makes one
    (Beam may run several bundles at once in a worker, and a request serves one call at a
    time): as many requests as calls ever ran at once."""

    def __init__(self, core, model):
        self.compiled = core.compile_model(model, "CPU", _COMPILE)
        self.idle, self.lock = [], threading.Lock()

    def __call__(self, *inputs) -> list[np.ndarray]:
        with self.lock:
            request = self.idle.pop() if self.idle else self.compiled.create_infer_request()
        try:
            return list(request.infer(list(inputs), share_inputs=True).to_tuple())  # copies
        finally:
            with self.lock:
                self.idle.append(request)


class Int8Encoder:
    """uint8 [B, S, S, 3] -> float32 [B, D] on the quantized encoder, at the batch's own size."""

    def __init__(self, model: _Compiled, image_size: int):
        self.model, self.image_size = model, image_size

    def encode(self, images: np.ndarray) -> np.ndarray:
        (features,) = self.model(checked_images(images, self.image_size))
        if not np.isfinite(features).all():
            raise ModelFault("the int8 encoder returned non-finite features")
        return features


class Int8Stepper:
    """Beam search's stepper (``models.captioner.beam_search``: ``initial_state`` and
    ``step_top_k``) on the engine's two decoder steps; rows padded to a multiple of
    :data:`ROW_MULTIPLE`.

    The top-k keeps beam search's rule, ties to the lower id, without paying for OpenVINO's
    stable top-k on every step: a plain top-(k+1) gives the k best unless the k-th and the
    (k+1)-th are equal (a tie across the cut, which only a degenerate model makes; that step
    is taken again with the stable top-k), and ties inside the k are ordered by id."""

    def __init__(self, core, start, step, *, start_id: int, end_id: int):
        self.start = _Compiled(core, start)
        self.fast = _Compiled(core, _with_top_k(step, stable=False))
        self.vocabulary_size = step.get_results()[0].get_output_partial_shape(0)[1].get_length()
        self.core, self.step, self.exact = core, step, None
        self.exact_lock = threading.Lock()
        self.start_id, self.end_id = start_id, end_id

    @staticmethod
    def _run(model: _Compiled, inputs: list[np.ndarray], *extra) -> list[np.ndarray]:
        rows = len(inputs[0])
        padded = -(-rows // ROW_MULTIPLE) * ROW_MULTIPLE
        outputs = model(*(pad_rows(np.asarray(x), padded) for x in inputs), *extra)
        return [output[:rows] for output in outputs]

    def initial_state(self, features) -> tuple[np.ndarray, ...]:
        return tuple(self._run(self.start, [np.asarray(features, np.float32)]))

    def step_top_k(self, tokens, state, k: int):
        inputs = [np.asarray(tokens, np.int32), *state]
        k = min(k, self.vocabulary_size)
        wanted = min(k + 1, self.vocabulary_size)
        values, ids, *state = self._run(self.fast, inputs, np.int64(wanted))
        if wanted > k and (values[:, k - 1] == values[:, k]).any():
            values, ids, *state = self._run(self._exact(), inputs, np.int64(k))
        values, ids = values[:, :k], ids[:, :k]
        order = np.lexsort((ids, -values), axis=-1)  # equal values: the lower id first
        return np.take_along_axis(values, order, 1), np.take_along_axis(ids, order, 1), tuple(state)

    def _exact(self) -> _Compiled:
        """The step with OpenVINO's stable top-k, compiled the first time a tie needs it."""
        with self.exact_lock:
            if self.exact is None:
                self.exact = _Compiled(self.core, _with_top_k(self.step, stable=True))
            return self.exact


def store_int8_engine(uri: str, engine: dict[str, tuple[bytes, bytes]], section: dict) -> dict:
    """Writes the engine's files into the bundle at ``uri``, then its manifest (the files'
    sha256, ``engines.int8``: ``section`` with the parts' names), then removes an earlier
    engine's files; returns the manifest. A bundle whose weights changed since the engine was
    built from them is refused."""
    manifest = read_manifest(uri)
    if section["built_from"] != built_from(manifest):
        raise BundleError(f"{uri} changed while its engine was being made: quantize it again")
    earlier = manifest.get("engines", {}).get(INT8, {}).get("files", [])
    names = {part: file_names(part, *files) for part, files in engine.items()}
    for part, files in engine.items():
        for name, data in zip(names[part], files, strict=True):
            storage.write_bytes(storage.join(uri, name), data)
            manifest["files"][name] = sha256(data)
    listed = [name for part in PARTS for name in names[part]]
    stale = set(earlier) - set(listed)
    for name in stale:
        manifest["files"].pop(name, None)
    manifest.setdefault("engines", {})[INT8] = {**section, "parts": names, "files": listed}
    storage.write_text(storage.join(uri, MANIFEST), json.dumps(manifest, indent=2) + "\n")
    for name in stale:
        storage.remove(storage.join(uri, name))
    return manifest


def load_int8(uri: str) -> Captioner:
    """The bundle's int8 engine, compiled for this CPU; raises ``BundleError`` (a refusal)
    when the bundle has none, naming the command that makes one."""
    manifest = read_manifest(uri)
    problem = int8_problem(manifest)
    if problem:
        raise BundleError(
            f"{uri} {problem}: make one with `beamcap quantize --model {uri} "
            "--calibration IMAGES`, or caption with --precision fp32"
        )
    files = {name: read_checked(uri, name, manifest) for name in parts_read(INT8, manifest)}
    vocabulary = Vocabulary.from_text(files[VOCAB].decode("utf-8"), source=storage.join(uri, VOCAB))
    parts = {
        part: tuple(files[name] for name in names)
        for part, names in manifest["engines"][INT8]["parts"].items()
    }
    return int8_captioner(parts, vocabulary, manifest)


def int8_captioner(
    engine: dict[str, tuple[bytes, bytes]], vocabulary: Vocabulary, manifest: dict
) -> Captioner:
    """The engine (part -> xml, weights) compiled for this CPU, as a :class:`Captioner`."""
    import openvino as ov

    core = ov.Core()
    models = {
        part: core.read_model(xml.decode("utf-8"), ov.Tensor(np.frombuffer(weights, np.uint8)))
        for part, (xml, weights) in engine.items()
    }
    encoder = Int8Encoder(_Compiled(core, models[ENCODER]), manifest["encoder"]["image_size"])
    stepper = Int8Stepper(
        core,
        models[START],
        models[STEP],
        start_id=vocabulary.start_id,
        end_id=vocabulary.end_id,
    )
    return Captioner(encoder, stepper, vocabulary, manifest, INT8)


def feature_cosines(features: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each image's cosine between two engines' features [B, D]."""
    norms = np.linalg.norm(features, axis=1) * np.linalg.norm(reference, axis=1)
    return (features * reference).sum(axis=1) / np.maximum(norms, 1e-12)


def measure_fidelity(
    reference: Captioner, engine: Captioner, images: np.ndarray, *, batch_size: int = 32, **search
) -> dict:
    """How close ``engine`` comes to ``reference`` (the Keras fp32 models) on ``images``: the
    cosine of their features (mean, minimum) and the share of images whose best caption is the
    same (``search``: beam search's settings); ``passed`` when both meet the gate."""
    cosines, same = [], 0
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        ours, theirs = engine.encoder.encode(batch), reference.encoder.encode(batch)
        cosines += list(feature_cosines(ours, theirs))
        pairs = zip(
            engine.caption_features(ours, **search),
            reference.caption_features(theirs, **search),
            strict=True,
        )
        same += sum(a[0].tokens == b[0].tokens for a, b in pairs)
    mean, least, share = float(np.mean(cosines)), float(np.min(cosines)), same / len(images)
    return {
        "images": len(images),
        "feature_cosine_mean": round(mean, 6),
        "feature_cosine_min": round(least, 6),
        "same_best_caption": round(share, 4),
        "passed": mean >= MIN_COSINE and share >= MIN_SAME_CAPTION,
    }
