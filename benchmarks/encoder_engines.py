"""CPU inference engines for the image encoder, on the same images, in one process and one run.

The encoder is the project's: Keras InceptionV3 without its top, avg-pooled 2048-d features,
uint8 299x299x3 input with the scaling inside the model (``random:0`` weights, so no download).
Each engine runs it on the same synthetic scenes in batches (default 32):

  tf-fp32      ``ImageEncoder.encode``: the baseline, always measured;
  tf-bf16      the same class at ``precision="bf16"`` (only where the CPU has avx512_bf16 or AMX);
  openvino     the Keras model exported to OpenVINO IR: fp32 at the CPU plugin's default inference
               precision (bf16 on AMX / avx512_bf16 CPUs) and at an explicit f32, then NNCF int8
               (post-training, on calibration images) with the LATENCY and THROUGHPUT hints, one
               synchronous request each;
  litert       a SavedModel converted by ``tf.lite.TFLiteConverter`` with full-integer
               post-training quantization, run by ``ai_edge_litert`` (XNNPACK, 2 threads);
  onnxruntime  the Keras model exported to ONNX, quantized statically (QDQ, per channel) with int8
               activations (S8S8, the default) and with uint8 ones (U8S8), run on the CPU
               execution provider (2 intra-op threads).

Calibration images and measured images are different scenes. Each engine is warmed up with one
batch, then timed over all the measured images (a short last batch is padded to the batch size
and the padding counted as work). The table gives images/s, the ratio to TF fp32, the mean and
minimum cosine of each image's features against TF fp32's, and the seconds spent converting
(export, conversion, quantization), compiling (compile, session, tensor allocation) and on the
first batch. An engine that cannot be imported, converted or run prints one line saying why.

    python benchmarks/encoder_engines.py [--images 96] [--calibration-images 64]
        [--batch-size 32] [--engines tf-bf16 openvino litert onnxruntime]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, without PYTHONPATH

import models  # noqa: E402, F401 - before Keras: it quiets TensorFlow's C++ start-up logs

# isort: split
import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.cpu import bf16_units, machine  # noqa: E402
from models.captioner.arrays import pad_rows  # noqa: E402
from models.captioner.encoder import EncoderSpec, ImageEncoder  # noqa: E402
from models.captioner.engine_build import feature_cosines  # noqa: E402
from models.datasets.synthetic import SynthConfig, make_example  # noqa: E402
from transforms.decode import decode_image  # noqa: E402

SIZE = 299
THREADS = 2  # LiteRT and ONNX Runtime threads; TensorFlow and OpenVINO use their defaults
ENGINES = ("tf-fp32", "tf-bf16", "openvino", "litert", "onnxruntime")


@dataclasses.dataclass
class Bench:
    """What every engine gets: the baseline encoder, the images and a scratch folder."""

    encoder: ImageEncoder  # already run once: Keras' ONNX export refuses a never-called model
    images: np.ndarray  # uint8 [N, 299, 299, 3], measured
    calibration: np.ndarray  # uint8 [M, 299, 299, 3], other scenes
    batch_size: int
    work: Path


@dataclasses.dataclass
class Row:
    engine: str
    precision: str
    images_per_s: float
    features: np.ndarray
    convert_s: float | None
    compile_s: float | None
    first_batch_s: float
    note: str = ""


def synthetic_images(first: int, count: int) -> np.ndarray:
    """Scenes ``first`` .. ``first + count - 1`` of the synthetic dataset, decoded to uint8."""
    config = SynthConfig(seed=0, min_size=(SIZE, SIZE), max_size=(SIZE, SIZE))
    scenes = range(first, first + count)
    pixels = [decode_image(make_example(config, index)[2], SIZE)[0] for index in scenes]
    return np.stack(pixels) if pixels else np.zeros((0, SIZE, SIZE, 3), np.uint8)


def batches(images: np.ndarray, size: int) -> Iterator[tuple[np.ndarray, int]]:
    """(batch padded to ``size``, rows that are real images)."""
    for start in range(0, len(images), size):
        batch = images[start : start + size]
        yield pad_rows(batch, size), len(batch)


def elapsed(start: float) -> float:
    return time.perf_counter() - start


def measure(
    engine: str,
    precision: str,
    run: Callable[[np.ndarray], np.ndarray],
    bench: Bench,
    convert_s: float | None,
    compile_s: float | None,
    note: str = "",
) -> Row:
    """Warms ``run`` up on one batch, then times it over every measured image."""
    work = list(batches(bench.images, bench.batch_size))
    start = time.perf_counter()
    run(work[0][0])
    first_batch_s = elapsed(start)
    outputs = []
    start = time.perf_counter()
    for batch, count in work:
        outputs.append(np.asarray(run(batch), np.float32).reshape(len(batch), -1)[:count])
    seconds = elapsed(start)
    features = np.concatenate(outputs)
    rate = len(features) / seconds
    return Row(engine, precision, rate, features, convert_s, compile_s, first_batch_s, note)


# --- the engines: each returns its rows -----------------------------------------------------------


def tf_fp32(bench: Bench, build_s: float) -> list[Row]:
    return [measure("TF", "fp32", bench.encoder.encode, bench, build_s, None)]


def tf_bf16(bench: Bench) -> list[Row]:
    start = time.perf_counter()
    encoder = ImageEncoder(bench.encoder.spec, batch_size=bench.batch_size, precision="bf16")
    return [measure("TF", "bf16 (mixed)", encoder.encode, bench, elapsed(start), None)]


def openvino_rows(bench: Bench) -> list[Row]:
    import nncf
    import openvino as ov

    core, xml = ov.Core(), bench.work / "encoder.xml"
    start = time.perf_counter()
    bench.encoder.model.export(str(xml), format="openvino", verbose=False)
    fp32_model = core.read_model(xml)
    export_s = elapsed(start)
    start = time.perf_counter()
    calibration = nncf.Dataset([image[None] for image in bench.calibration])
    int8_model = nncf.quantize(fp32_model, calibration, subset_size=len(bench.calibration))
    quantize_s = elapsed(start)
    latency, throughput = {"PERFORMANCE_HINT": "LATENCY"}, {"PERFORMANCE_HINT": "THROUGHPUT"}
    variants = (  # {} in the label: the precision the plugin runs at, read back once compiled
        ("fp32 IR, runs {} (default)", fp32_model, export_s, latency),
        (
            "fp32 IR, runs {} (hint)",
            fp32_model,
            export_s,
            {**latency, "INFERENCE_PRECISION_HINT": "f32"},
        ),
        ("int8 + {}, LATENCY", int8_model, export_s + quantize_s, latency),
        ("int8 + {}, THROUGHPUT", int8_model, export_s + quantize_s, throughput),
    )
    rows = []
    for label, model, convert_s, config in variants:
        start = time.perf_counter()
        compiled = core.compile_model(model, "CPU", config)
        compile_s = elapsed(start)
        request = compiled.create_infer_request()

        def run(batch, request=request):
            request.infer({0: batch})
            return request.get_output_tensor(0).data.copy()  # the request reuses its buffer

        runs_at = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        note = ", ".join(
            f"{name} {compiled.get_property(name)}"
            for name in ("PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS")
        )
        precision = label.format(runs_at)
        rows.append(measure("OpenVINO", precision, run, bench, convert_s, compile_s, note))
    return rows


def litert_rows(bench: Bench) -> list[Row]:
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    start = time.perf_counter()
    saved_model = bench.work / "saved_model"
    bench.encoder.model.export(str(saved_model), format="tf_saved_model", verbose=False)

    def representative_dataset():
        for image in bench.calibration:
            yield [image[None]]

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8  # the model's own input type
    converter.inference_output_type = tf.float32
    path = bench.work / "encoder_int8.tflite"
    path.write_bytes(converter.convert())
    convert_s = elapsed(start)

    start = time.perf_counter()
    interpreter = Interpreter(model_path=str(path), num_threads=THREADS)
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(source["index"], [bench.batch_size, SIZE, SIZE, 3])
    interpreter.allocate_tensors()
    compile_s = elapsed(start)

    def run(batch):
        interpreter.set_tensor(source["index"], batch)
        interpreter.invoke()
        return interpreter.get_tensor(target["index"])

    note = f"input {np.dtype(source['dtype']).name}, {litert_op_types(interpreter)}"
    precision = "int8 (full-integer PTQ)"
    return [measure("LiteRT XNNPACK", precision, run, bench, convert_s, compile_s, note)]


def litert_op_types(interpreter) -> str:
    """XNNPACK's partitions, and the model's ops by kind, those with a float input marked."""
    tensors = {detail["index"]: detail for detail in interpreter.get_tensor_details()}
    counts = Counter()
    for op in interpreter._get_ops_details():  # the only per-op listing it has
        inputs = [tensors[index] for index in op["inputs"] if index in tensors]
        floating = any(np.dtype(tensor["dtype"]).kind == "f" for tensor in inputs)
        counts[op["op_name"] + (" (float in)" if floating else "")] += 1
    partitions = counts.pop("DELEGATE", 0) + counts.pop("DELEGATE (float in)", 0)
    ops = ", ".join(f"{name} {count}" for name, count in counts.most_common())
    return f"{partitions} XNNPACK partitions; ops: {ops}"


class CalibrationReader:
    """onnxruntime's CalibrationDataReader protocol: one calibration image per call."""

    def __init__(self, name: str, images: np.ndarray):
        self.name, self.images = name, iter(images)

    def get_next(self) -> dict[str, np.ndarray] | None:
        image = next(self.images, None)
        return None if image is None else {self.name: image[None]}


def onnxruntime_rows(bench: Bench) -> list[Row]:
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    start = time.perf_counter()
    fp32, prepared = bench.work / "encoder_fp32.onnx", bench.work / "encoder_pre.onnx"
    bench.encoder.model.export(str(fp32), format="onnx", verbose=False)
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)  # no sympy needed
    name = onnx.load(str(prepared)).graph.input[0].name
    export_s = elapsed(start)
    rows = []
    # S8S8 is quantize_static's default; U8S8 (uint8 activations) is what x86 kernels prefer.
    for label, activations in (("S8S8", QuantType.QInt8), ("U8S8", QuantType.QUInt8)):
        start = time.perf_counter()
        int8 = bench.work / f"encoder_{label}.onnx"
        quantize_static(
            str(prepared),
            str(int8),
            CalibrationReader(name, bench.calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=activations,
            weight_type=QuantType.QInt8,
        )
        convert_s = export_s + elapsed(start)

        start = time.perf_counter()
        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        optimized = bench.work / f"encoder_{label}_optimized.onnx"
        options.optimized_model_filepath = str(optimized)  # to count what the kernels run
        session = ort.InferenceSession(str(int8), options, providers=["CPUExecutionProvider"])
        compile_s = elapsed(start)

        def run(batch, session=session):
            return session.run(None, {name: batch})[0]

        ops = Counter(node.op_type for node in onnx.load(str(optimized)).graph.node)
        note = "optimized graph: " + ", ".join(
            f"{op} {ops[op]}" for op in ("QLinearConv", "Conv", "DequantizeLinear", "Transpose")
        )
        precision = f"int8 (QDQ, {label})"
        rows.append(measure("ONNX Runtime", precision, run, bench, convert_s, compile_s, note))
    return rows


# --- the table ------------------------------------------------------------------------------------


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def print_table(rows: list[Row], baseline: Row) -> None:
    header = (
        f"{'engine':<15} {'precision':<28} {'img/s':>7} {'x TF fp32':>9} {'cos mean':>9} "
        f"{'cos min':>8} {'convert s':>9} {'compile s':>9} {'1st batch s':>11}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        similarity = feature_cosines(row.features, baseline.features)
        print(
            f"{row.engine:<15} {row.precision:<28} {row.images_per_s:7.2f} "
            f"{row.images_per_s / baseline.images_per_s:9.2f} {similarity.mean():9.5f} "
            f"{similarity.min():8.5f} {seconds(row.convert_s):>9} {seconds(row.compile_s):>9} "
            f"{row.first_batch_s:11.1f}"
        )
    for row in rows:
        if row.note:
            print(f"  {row.engine} {row.precision}: {row.note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images", type=int, default=96, help="measured synthetic images (default: %(default)s)"
    )
    parser.add_argument(
        "--calibration-images",
        type=int,
        default=64,
        help="other synthetic images for int8 calibration (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=32, help="images per batch (default: %(default)s)"
    )
    parser.add_argument(
        "--engines",
        nargs="+",
        choices=ENGINES,
        default=list(ENGINES),
        metavar="ENGINE",
        help=f"engines to run, of {', '.join(ENGINES)} (default: all); tf-fp32 always runs: it "
        "is the baseline",
    )
    args = parser.parse_args()
    if args.images < 1 or args.calibration_images < 1 or args.batch_size < 1:
        parser.error("--images, --calibration-images and --batch-size must be positive")

    print(
        f"{args.images} measured and {args.calibration_images} calibration images, "
        f"batch {args.batch_size}, keras {keras.__version__} on {keras.backend.backend()}; "
        f"{machine()}"
    )
    calibration = synthetic_images(0, args.calibration_images)
    images = synthetic_images(args.calibration_images, args.images)
    start = time.perf_counter()
    encoder = ImageEncoder(EncoderSpec("random:0", SIZE), batch_size=args.batch_size)
    build_s = elapsed(start)
    with tempfile.TemporaryDirectory(prefix="beamcap-engines-") as tmp:
        bench = Bench(encoder, images, calibration, args.batch_size, Path(tmp))
        baseline = tf_fp32(bench, build_s)[0]
        rows = [baseline]
        engines = {
            "tf-bf16": tf_bf16,
            "openvino": openvino_rows,
            "litert": litert_rows,
            "onnxruntime": onnxruntime_rows,
        }
        for name, engine in engines.items():
            if name not in args.engines:
                continue
            if name == "tf-bf16" and not bf16_units():
                print(f"{name}: skipped: no bf16 units in use on this CPU")
                continue
            try:
                rows.extend(engine(bench))
            except Exception as error:  # noqa: BLE001 - one engine's failure must not end the run
                first_line = (str(error).strip().splitlines() or [""])[0]
                print(f"{name}: failed: {type(error).__name__}: {first_line}")
    print()
    print_table(rows, baseline)


if __name__ == "__main__":
    main()
