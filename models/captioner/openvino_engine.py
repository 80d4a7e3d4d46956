"""beamcap's CPU engines on OpenVINO: a bundle's encoder in int8 (quantized by NNCF) or at
OpenVINO's bf16 inference precision, its decoder's two steps in float32, with beam search
driving them as it drives Keras.

``beamcap quantize`` makes them once per bundle (``models.captioner.engine_build``). Workers
load one ready (:func:`load_engine`): only ``openvino`` is needed, no TensorFlow and no
calibration, and batches run at their own size (the shapes are dynamic), so a short batch
costs in proportion to its rows.

In the bundle, named by their content (``encoder.int8.<sha>.xml/.bin``, ``encoder.f32...``,
``decoder.start...``, ``decoder.step...``: an encoder; features -> state; (tokens, state) ->
log-probabilities and the next state, its top-k added at load), listed with their sha256 in
the manifest's ``files``; two engines share their decoder's files. The manifest's
``engines.<precision>`` holds the parts' files, runtime versions, the fingerprints of the Keras
weights it was built from (an engine that no longer matches them is not used), the calibration,
the fidelity and the speed measured.

The decoder, and the int8 encoder's layers that are not int8, run at OpenVINO's f32 inference
precision (its default on CPUs with bf16 units would be bf16); the bf16 engine's encoder runs
in bf16 (on a CPU without bf16 units OpenVINO would run it in f32, so it is built and checked
only on one with them). int8 kernels differ between CPUs (VNNI or not), so features may move
slightly from the CPU the fidelity was measured on.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable

import numpy as np

from models import storage
from models.captioner.arrays import checked_images, pad_rows, padded_to
from models.captioner.beam_search import ties_to_lower_id
from models.captioner.captioner import Captioner
from models.captioner.manifest import VOCAB, Manifest, read_checked
from models.captioner.openvino_cache import compile_model
from models.captioner.vocabulary import Vocabulary
from models.faults import ModelFault

START, STEP = "decoder.start", "decoder.step"
# Each engine's parts (an OpenVINO model each: xml, weights) and its encoder's inference precision
ENCODERS = {"int8": ("encoder.int8", "f32"), "bf16": ("encoder.f32", "bf16")}
LATENCY = {"PERFORMANCE_HINT": "LATENCY"}
ROW_MULTIPLE = 16  # decoder rows are padded to it: few distinct shapes as hypotheses finish


def parts_of(precision: str) -> tuple[str, str, str]:
    """The parts of the engine ``precision``: its encoder, the decoder's start and step."""
    return ENCODERS[precision][0], START, STEP


def _with_top_k(step, *, stable: bool):
    """The decoder's step with the top-k taken inside: (tokens, *state, k) -> (log-probs of
    the k best words, their ids, *state), best first; ``stable``: ties to the lower id, at
    four times the cost of OpenVINO's plain top-k (see :class:`OpenVinoStepper`)."""
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


def _top_k_step(make_step: Callable, *, stable: bool):
    """:func:`_with_top_k` of the step that ``make_step()`` gives."""
    return _with_top_k(make_step(), stable=stable)


class _Compiled:
    """A compiled OpenVINO model (``make()`` gives the model, called where it is compiled, not
    imported from the cache under ``key``); each call takes an idle inference request, or makes one
    (Beam may run several bundles at once in a worker, and a request serves one call at a
    time): as many requests as calls ever ran at once."""

    def __init__(self, core, make, inference_precision: str = "f32", key: str | None = None):
        config = {**LATENCY, "INFERENCE_PRECISION_HINT": inference_precision}
        self.compiled = compile_model(core, make, config, key)  # ``key``: for the cache
        self.idle, self.lock = [], threading.Lock()

    def __call__(self, *inputs) -> list[np.ndarray]:
        with self.lock:
            request = self.idle.pop() if self.idle else self.compiled.create_infer_request()
        try:
            return list(request.infer(list(inputs), share_inputs=True).to_tuple())  # copies
        finally:
            with self.lock:
                self.idle.append(request)


class OpenVinoEncoder:
    """uint8 [B, S, S, 3] -> float32 [B, D] on an engine's encoder, at the batch's own size."""

    def __init__(self, model: _Compiled, image_size: int):
        self.model, self.image_size = model, image_size

    def encode(self, images: np.ndarray) -> np.ndarray:
        (features,) = self.model(checked_images(images, self.image_size))
        if not np.isfinite(features).all():
            raise ModelFault("the OpenVINO encoder returned non-finite features")
        return features


class OpenVinoStepper:
    """Beam search's :class:`~models.captioner.beam_search.Stepper` on the engine's two
    decoder steps; rows padded to a multiple of
    :data:`ROW_MULTIPLE`.

    The top-k keeps beam search's rule, ties to the lower id, without paying for OpenVINO's
    stable top-k on every step: a plain top-(k+1) gives the k best unless the k-th and the
    (k+1)-th are equal (a tie across the cut, which only a degenerate model makes; that step
    is taken again with the stable top-k), and ties inside the k are ordered by id."""

    def __init__(
        self,
        core,
        start: Callable,
        step: Callable,
        *,
        vocabulary_size: int,
        start_id: int,
        end_id: int,
        keys=(None, None),
    ):
        start_key, self.step_key = keys  # the parts' names, for the compiled-model cache
        self.start = _Compiled(core, start, key=start_key)
        fast = functools.partial(_top_k_step, step, stable=False)
        self.fast = _Compiled(core, fast, key=self._key("top-k"))
        self.vocabulary_size = vocabulary_size
        self.core, self.make_step, self.exact = core, step, None
        self.exact_lock = threading.Lock()
        self.start_id, self.end_id = start_id, end_id

    @staticmethod
    def _run(model: _Compiled, inputs: list[np.ndarray], *extra) -> list[np.ndarray]:
        rows = len(inputs[0])
        padded = padded_to(rows, ROW_MULTIPLE)
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
        values, ids = ties_to_lower_id(values[:, :k], ids[:, :k])
        return values, ids, tuple(state)

    def _exact(self) -> _Compiled:
        """The step with OpenVINO's stable top-k, compiled the first time a tie needs it."""
        with self.exact_lock:
            if self.exact is None:
                stable = functools.partial(_top_k_step, self.make_step, stable=True)
                self.exact = _Compiled(self.core, stable, key=self._key("stable-top-k"))
            return self.exact

    def _key(self, variant: str) -> str | None:
        return f"{self.step_key}.{variant}" if self.step_key else None


def load_engine(uri: str, precision: str, *, manifest: Manifest | None = None) -> Captioner:
    """The bundle's OpenVINO engine ``precision``, compiled for this CPU; raises
    ``BundleError`` (a refusal) when the bundle has none, naming the command that makes one.
    ``manifest``: the bundle's, where the caller has read it already.

    A part whose compiled blob this machine has cached (``models.captioner.openvino_cache``,
    named by the part's content) is imported from it: its files are neither read nor hashed
    again (the im2txt-sized bf16 engine's 158 MB, about 0.25 s of every run's start)."""
    manifest = Manifest.read(uri) if manifest is None else manifest
    manifest.check_engine(uri, precision)
    text = read_checked(uri, VOCAB, manifest).decode("utf-8")
    vocabulary = Vocabulary.from_text(text, source=storage.join(uri, VOCAB))
    named = manifest.engines[precision].parts  # part -> [xml, weights], by content

    def read(part: str) -> tuple[bytes, bytes]:
        return tuple(read_checked(uri, name, manifest) for name in named[part])

    keys = {part: pair[0].removesuffix(".xml") for part, pair in named.items()}
    return openvino_captioner(read, vocabulary, manifest, precision, keys)


def openvino_captioner(
    read: Callable[[str], tuple[bytes, bytes]],
    vocabulary: Vocabulary,
    manifest: Manifest,
    precision: str,
    names: dict[str, str] | None = None,
) -> Captioner:
    """The engine ``precision`` compiled for this CPU, as a :class:`Captioner`; ``read``: a
    part's (xml, weights), called for the parts that are compiled here. With ``names`` (part
    -> its content-named file in the bundle) the compiled parts are kept in, and taken from,
    ``models.captioner.openvino_cache``, and a part found there is not read."""
    import openvino as ov

    names = names or {}
    core = ov.Core()

    def model(part: str):
        xml, weights = read(part)
        return core.read_model(xml.decode("utf-8"), ov.Tensor(np.frombuffer(weights, np.uint8)))

    encoder_part, inference_precision = ENCODERS[precision]
    encoder = OpenVinoEncoder(
        _Compiled(
            core,
            functools.partial(model, encoder_part),
            inference_precision,
            names.get(encoder_part),
        ),
        manifest.encoder.image_size,
    )
    stepper = OpenVinoStepper(
        core,
        functools.partial(model, START),
        functools.cache(functools.partial(model, STEP)),  # kept: the stable top-k's, if needed
        vocabulary_size=len(vocabulary),
        start_id=vocabulary.start_id,
        end_id=vocabulary.end_id,
        keys=(names.get(START), names.get(STEP)),
    )
    return Captioner(encoder, stepper, vocabulary, manifest, precision)
