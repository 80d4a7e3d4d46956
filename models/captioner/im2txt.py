"""A published im2txt (Show and Tell) model as a beamcap bundle: a TF1 name-based checkpoint or
a frozen inference GraphDef (each variable a Const node of the variable's name), with its
``word_counts.txt``.

* InceptionV3: ``models.captioner.slim_inception`` maps slim's variables onto Keras' by structure.
* ``image_embedding/weights`` (no bias) -> the image projection (zero bias).
* ``seq_embedding/map`` -> the word embedding; ``logits/{weights,biases}`` -> the logits.
* The BasicLSTMCell, under any of its three names (:data:`LSTM_NAMES`): kernel
  ``[embedding + units, 4 units]`` with gates i, j, f, o and a forget bias of 1.0 added at run
  time -> Keras' LSTM kernel, recurrent kernel and bias with gates i, f, c (= j), o.
* Vocabulary: im2txt's id is the line number, ``<S>`` and ``</S>`` among the words, ``<UNK>``
  appended when missing; lines ``word count`` or Python 3's ``b'word' count``. In beamcap's
  layout ``<start>``, ``<end>`` and ``<unk>`` are those three, the other words follow in im2txt's
  order, and ``<pad>``, which im2txt never predicts, gets no probability (logit -inf). Logit rows
  beyond the file (im2txt's 12,000 rows for the ~11,500 MSCOCO words; im2txt prints them as
  ``<UNK>``) stay as ``<unused-ID>`` words, so every probability is im2txt's.
* Encoder: the ``im2txt-InceptionV3`` entry of ``models.captioner.architectures``, whose
  preprocessing the manifest records: the caption job resizes to 346x346 (bilinear, as TF1's
  ``resize_images``) and crops the central 299x299; the encoder scales to [-1, 1] as for every
  bundle.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from models import storage
from models.captioner.architectures import ARCHITECTURES
from models.captioner.manifest import sha256
from models.captioner.vocabulary import SPECIAL_TOKENS, Vocabulary
from models.configs import SettingsError

LSTM_NAMES = (
    ("lstm/basic_lstm_cell/kernel", "lstm/basic_lstm_cell/bias"),
    ("lstm/basic_lstm_cell/weights", "lstm/basic_lstm_cell/biases"),
    ("lstm/BasicLSTMCell/Linear/Matrix", "lstm/BasicLSTMCell/Linear/Bias"),
)
HEAD_NAMES = ("image_embedding/weights", "seq_embedding/map", "logits/weights", "logits/biases")
START, END, UNK = "<S>", "</S>", "<UNK>"
FORGET_BIAS = 1.0
IMAGE_SIZE = 299
ARCHITECTURE = ARCHITECTURES["im2txt-InceptionV3"]  # InceptionV3 with im2txt's resize and crop
_BYTES_WORD = re.compile(r"""b(['"]).*\1""")


class Im2txtError(SettingsError):
    """The files are not an im2txt model this importer reads; one line naming the problem."""


@dataclasses.dataclass
class Source:
    """Variables by name (``shapes``; ``read`` returns one as float32) and where they came from."""

    kind: str  # "checkpoint" or "graph"
    path: str
    shapes: dict[str, tuple]
    read: object  # name -> np.ndarray
    files: dict[str, str]  # file name -> sha256
    global_step: int | None


def _file_hashes(paths) -> dict[str, str]:
    return {os.path.basename(p): sha256(storage.read_bytes(p)) for p in sorted(paths)}


def read_checkpoint(prefix: str) -> Source:
    """A TF1 name-based checkpoint, ``PREFIX.index`` + ``PREFIX.data-*``."""
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(prefix)
        shapes = {name: tuple(shape) for name, shape in reader.get_variable_to_shape_map().items()}
    except Exception as error:  # noqa: BLE001 - TensorFlow raises several types
        reason = (str(error).strip() or type(error).__name__).splitlines()[0]
        raise Im2txtError(f"{prefix} is not a TensorFlow checkpoint ({reason})") from None
    step = int(reader.get_tensor("global_step")) if "global_step" in shapes else None
    files = storage.glob(prefix + ".data-*") + [prefix + ".index"]
    return Source(
        "checkpoint",
        prefix,
        shapes,
        lambda name: np.asarray(reader.get_tensor(name), "float32"),
        _file_hashes(files),
        step,
    )


def read_graph(path: str) -> Source:
    """A frozen GraphDef (``.pb``): every Const node is a variable of its name."""
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    data = storage.read_bytes(path)
    graph = tf.compat.v1.GraphDef()
    try:
        graph.ParseFromString(data)
    except DecodeError as error:
        raise Im2txtError(f"{path} is not a TensorFlow GraphDef ({error})") from None
    consts = {n.name: n.attr["value"].tensor for n in graph.node if n.op == "Const"}
    shapes = {
        name: tuple(d.size for d in tensor.tensor_shape.dim) for name, tensor in consts.items()
    }
    return Source(
        "graph",
        path,
        shapes,
        lambda name: np.asarray(tf.make_ndarray(consts[name]), "float32"),
        {os.path.basename(path): sha256(data)},
        None,
    )


def read_word_counts(text: str, source: str = "word_counts.txt") -> tuple[list[str], list[int]]:
    """im2txt's vocabulary: words by id (the line number; ``<UNK>`` appended when missing) and
    their counts."""
    words, counts = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise Im2txtError(f"{source}:{number}: expected 'word count', got {line!r}")
        word = parts[0]
        if _BYTES_WORD.fullmatch(word):  # Python 3's str(bytes): b'word' (#1411)
            word = ast.literal_eval(word).decode("utf-8")
        if word in SPECIAL_TOKENS or word.startswith("<unused-"):
            raise Im2txtError(f"{source}:{number}: {word!r} is reserved in beamcap's vocabulary")
        words.append(word)
        counts.append(int(parts[1]))
    if len(set(words)) != len(words):
        twice = sorted({w for w in words if words.count(w) > 1})[:3]
        raise Im2txtError(f"{source}: words listed twice: {', '.join(twice)}")
    for token in (START, END):
        if token not in words:
            raise Im2txtError(f"{source} has no {token} line: not an im2txt vocabulary")
    if UNK not in words:
        words.append(UNK)
        counts.append(0)
    return words, counts


def vocabulary_rows(words: list[str], counts: list[int], width: int) -> tuple[Vocabulary, list]:
    """beamcap's vocabulary and, per beamcap id, the im2txt id it takes its weights from
    (None for ``<pad>``). ``width``: the model's logits."""
    if len(words) > width:
        raise Im2txtError(
            f"the vocabulary has {len(words)} words (with <UNK>), more than the model's "
            f"{width} logits: this word_counts.txt belongs to another model"
        )
    ids = {word: index for index, word in enumerate(words)}
    rest = [i for i, w in enumerate(words) if w not in (START, END, UNK)]
    rows = [None, ids[START], ids[END], ids[UNK], *rest, *range(len(words), width)]
    names = [*SPECIAL_TOKENS, *(words[i] for i in rest)]
    names += [f"<unused-{i}>" for i in range(len(words), width)]
    all_counts = [0, *(counts[r] if r < len(counts) else 0 for r in rows[1:])]
    return Vocabulary(names, all_counts), rows


def lstm_variables(shapes: dict) -> tuple[str, str] | None:
    """The (kernel, bias) names of whichever generation of BasicLSTMCell names is present."""
    return next((pair for pair in LSTM_NAMES if all(n in shapes for n in pair)), None)


def convert_lstm(kernel: np.ndarray, bias: np.ndarray, input_dim: int) -> list[np.ndarray]:
    """BasicLSTMCell (i, j, f, o; forget bias added at run time) -> Keras LSTM weights."""
    i, j, f, o = np.split(kernel, 4, axis=1)
    reordered = np.concatenate([i, f, j, o], axis=1)
    bi, bj, bf, bo = np.split(bias, 4)
    return [
        reordered[:input_dim],
        reordered[input_dim:],
        np.concatenate([bi, bf + FORGET_BIAS, bj, bo]),
    ]


def check_variables(source: Source) -> tuple[str, str]:
    """Raises :class:`Im2txtError` naming the head variables that are missing; returns the LSTM
    (kernel, bias) names."""
    missing = [name for name in HEAD_NAMES if name not in source.shapes]
    lstm = lstm_variables(source.shapes)
    if lstm is None:
        missing.append(f"{LSTM_NAMES[0][0]} (or {LSTM_NAMES[1][0]}, {LSTM_NAMES[2][0]})")
    if not any(name.startswith("InceptionV3/") for name in source.shapes):
        missing.append("InceptionV3/* (the image model)")
    if missing:
        what = "nodes" if source.kind == "graph" else "variables"
        raise Im2txtError(
            f"{source.path} lacks im2txt's {what}: {', '.join(missing)}"
            + (" (a frozen graph holds each variable as a Const node)" if what == "nodes" else "")
        )
    return lstm


def build_decoder(source: Source, lstm: tuple[str, str], rows: list):
    """A :class:`ShowAndTell` holding the im2txt head, its vocabulary rows reordered."""
    from models.captioner.decoder import DecoderConfig, ShowAndTell

    embed = source.read("image_embedding/weights")
    words = source.read("seq_embedding/map")
    kernel, bias = source.read(lstm[0]), source.read(lstm[1])
    logits_w, logits_b = source.read("logits/weights"), source.read("logits/biases")
    dim = embed.shape[1]
    units = kernel.shape[1] // 4
    expected = {
        "image_embedding/weights": (embed.shape, (ARCHITECTURE.feature_dim, dim)),
        "seq_embedding/map": (words.shape, (len(rows) - 1, dim)),
        lstm[0]: (kernel.shape, (dim + units, 4 * units)),
        lstm[1]: (bias.shape, (4 * units,)),
        "logits/weights": (logits_w.shape, (units, len(rows) - 1)),
        "logits/biases": (logits_b.shape, (len(rows) - 1,)),
    }
    for name, (shape, wanted) in expected.items():
        if tuple(shape) != wanted:
            raise Im2txtError(f"{source.path}: {name} has shape {tuple(shape)}, expected {wanted}")
    decoder = ShowAndTell(DecoderConfig(len(rows), embedding_dim=dim, lstm_units=units))
    taken = [r for r in rows if r is not None]
    pad = np.zeros((1, dim), "float32")
    decoder.image_projection.set_weights([embed, np.zeros(dim, "float32")])
    decoder.word_embedding.set_weights([np.concatenate([pad, words[taken]])])
    decoder.lstm.set_weights(convert_lstm(kernel, bias, dim))
    decoder.logits.set_weights(
        [
            np.concatenate([np.zeros((units, 1), "float32"), logits_w[:, taken]], axis=1),
            np.concatenate([[-np.inf], logits_b[taken]]).astype("float32"),
        ]
    )
    return decoder


def build_encoder(source: Source, *, mapping=None):
    """An :class:`ImageEncoder` holding the slim InceptionV3's weights. ``mapping`` (tests
    only) replaces the structural mapping's list of units."""
    from models.captioner.encoder import EncoderSpec, ImageEncoder
    from models.captioner.slim_inception import MappingError, load_inception, map_inception
    from models.captioner.slim_inception import required_variables as inception_variables

    backbone = ARCHITECTURE.constructor()(
        include_top=False, weights=None, input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3)
    )
    try:
        units = map_inception(backbone, source.shapes)
    except MappingError as error:
        raise Im2txtError(f"{source.path}: {error}") from None
    missing = [name for name in inception_variables(units) if name not in source.shapes]
    if missing:
        raise Im2txtError(
            f"{source.path} lacks InceptionV3 variables: {', '.join(missing[:4])}"
            + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        )
    units = mapping(units) if mapping else units
    load_inception(units, {name: source.read(name) for name in inception_variables(units)})
    with tempfile.TemporaryDirectory(prefix="beamcap-im2txt-") as tmp:
        weights = str(Path(tmp, "encoder.weights.h5"))
        backbone.save_weights(weights)
        weights_name = f"im2txt:{os.path.basename(source.path)}"
        spec = EncoderSpec(weights_name, IMAGE_SIZE, architecture=ARCHITECTURE.name)
        return ImageEncoder(spec, weights_file=weights)


def import_im2txt(source: Source, vocab_uri: str, output: str, *, mapping=None):
    """Writes ``output`` as a verified bundle from an im2txt model; returns its manifest."""
    from models.captioner.bundle import save_bundle

    lstm = check_variables(source)
    vocab_bytes = storage.read_bytes(vocab_uri)
    text = vocab_bytes.decode("utf-8")
    words, counts = read_word_counts(text, source=vocab_uri)
    vocabulary, rows = vocabulary_rows(words, counts, source.shapes["logits/biases"][0])
    decoder = build_decoder(source, lstm, rows)
    encoder = build_encoder(source, mapping=mapping)
    return save_bundle(
        output,
        encoder=encoder,
        decoder=decoder,
        vocabulary=vocabulary,
        source={
            "format": "im2txt",
            "kind": source.kind,
            "files": source.files,
            "global_step": source.global_step,
            "vocabulary": {
                "file": os.path.basename(vocab_uri),
                "sha256": sha256(vocab_bytes),
                "words": len(words),
                "unk_appended": len(words) > len(text.splitlines()),
                "unused_ids": len(rows) - 1 - len(words),
            },
        },
    )
