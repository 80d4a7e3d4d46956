"""An im2txt model built from code independent of beamcap's: tf-slim's own ``inception_v3_base``
(in im2txt's arg_scope), TensorFlow's BasicLSTMCell and im2txt's head as
``show_and_tell_model.py`` builds it in inference mode, with random values for every variable
(BatchNorm statistics included). Saved as a name-based checkpoint and as a frozen GraphDef; its
session runs im2txt's inference (``feed_image``, ``inference_step``) as the reference, and
:func:`caption_generator` is im2txt's ``CaptionGenerator.beam_search`` (top-k bug fixed).
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import sys
import warnings
from pathlib import Path

import numpy as np

IMAGE_SIZE = 299
END_BIAS = 2.0
WORDS = ["<S>", "</S>", "a", "dog", "cat", "on", "the", "grass", "red", "ball", ".", "with"]


def _slim():
    """tf-slim 1.1.0 imports ``tf_keras.legacy_tf_layers``, which tf-keras 2.21 keeps under
    ``tf_keras.src``."""
    import tf_keras
    import tf_keras.src.legacy_tf_layers as legacy

    sys.modules.setdefault("tf_keras.legacy_tf_layers", legacy)
    tf_keras.legacy_tf_layers = legacy
    import tf_slim
    from tf_slim.nets import inception_v3

    return tf_slim, inception_v3.inception_v3_base


def _build_graph(tf, vocab_size: int, embedding_size: int, num_lstm_units: int):
    """im2txt's inference graph; the image input is the processed float image in [-1, 1]."""
    from tf_keras.src.layers.rnn.legacy_cells import BasicLSTMCell

    slim, inception_v3_base = _slim()
    images = tf.compat.v1.placeholder(tf.float32, [None, IMAGE_SIZE, IMAGE_SIZE, 3], "image_feed")
    input_feed = tf.compat.v1.placeholder(tf.int64, [None], "input_feed")
    # image_embedding.inception_v3(trainable=False, is_training=False)
    batch_norm = {"is_training": False, "trainable": False, "decay": 0.9997, "epsilon": 0.001}
    with (
        tf.compat.v1.variable_scope("InceptionV3", "InceptionV3", [images]) as scope,
        slim.arg_scope([slim.conv2d, slim.fully_connected], trainable=False),
        slim.arg_scope(
            [slim.conv2d],
            activation_fn=tf.nn.relu,
            normalizer_fn=slim.batch_norm,
            normalizer_params=batch_norm,
        ),
    ):
        net, _ = inception_v3_base(images, scope=scope)
        with tf.compat.v1.variable_scope("logits"):
            net = slim.avg_pool2d(net, net.get_shape()[1:3], padding="VALID", scope="pool")
            net = slim.flatten(net, scope="flatten")
    with tf.compat.v1.variable_scope("image_embedding") as scope:
        image_embeddings = slim.fully_connected(
            net, embedding_size, activation_fn=None, biases_initializer=None, scope=scope
        )
    with tf.compat.v1.variable_scope("seq_embedding"):
        embedding_map = tf.compat.v1.get_variable("map", [vocab_size, embedding_size])
        seq_embeddings = tf.nn.embedding_lookup(embedding_map, tf.expand_dims(input_feed, 1))
    cell = BasicLSTMCell(num_units=num_lstm_units, state_is_tuple=True)
    with tf.compat.v1.variable_scope("lstm") as lstm_scope:
        zero_state = cell.zero_state(batch_size=tf.shape(images)[0], dtype=tf.float32)
        _, initial_state = cell(image_embeddings, zero_state)
        lstm_scope.reuse_variables()
        tf.concat(axis=1, values=initial_state, name="initial_state")
        state_feed = tf.compat.v1.placeholder(tf.float32, [None, 2 * num_lstm_units], "state_feed")
        state_tuple = tf.split(value=state_feed, num_or_size_splits=2, axis=1)
        outputs, state_tuple = cell(inputs=tf.squeeze(seq_embeddings, axis=[1]), state=state_tuple)
        tf.concat(axis=1, values=state_tuple, name="state")
    with tf.compat.v1.variable_scope("logits") as scope:
        logits = slim.fully_connected(outputs, vocab_size, activation_fn=None, scope=scope)
    tf.nn.softmax(logits, name="softmax")
    tf.compat.v1.Variable(0, name="global_step", trainable=False, dtype=tf.int64)


def _random_value(name: str, shape, rng) -> np.ndarray:
    """Values that keep activations near unit scale through the network and make the decoder's
    word distributions peaked (so beam search meets no near-ties)."""
    if name.endswith("moving_mean"):
        return rng.normal(0.0, 0.2, shape)
    if name.endswith("moving_variance"):
        return rng.uniform(0.5, 1.5, shape)
    if name.endswith("beta"):
        return rng.normal(0.0, 0.2, shape)
    if name.startswith("InceptionV3/"):
        return rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)
    if name == "image_embedding/weights":
        return rng.normal(0.0, 1.0 / np.sqrt(shape[0]), shape)
    if name == "lstm/basic_lstm_cell/kernel":
        return rng.normal(0.0, 2.0 / np.sqrt(shape[0]), shape)
    if name == "logits/weights":
        return rng.normal(0.0, 3.0, shape)
    return rng.normal(0.0, 0.5 if name == "logits/biases" else 1.0, shape)


@dataclasses.dataclass
class Reference:
    checkpoint: str  # prefix
    graph: str
    vocab: str
    words: list[str]  # im2txt ids, <UNK> appended
    vocab_size: int  # logits width
    global_step: int
    session: object

    def feed_image(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [B, 299, 299, 3] -> im2txt's initial state [B, 2 units] (c, h)."""
        images = np.asarray(pixels, "float32") / 127.5 - 1.0
        return self.session.run("lstm/initial_state:0", {"image_feed:0": images})

    def inference_step(self, input_feed, state_feed) -> tuple[np.ndarray, np.ndarray]:
        return self.session.run(
            ["softmax:0", "lstm/state:0"],
            {"input_feed:0": np.asarray(input_feed), "lstm/state_feed:0": state_feed},
        )

    def close(self):
        self.session.close()


def build_reference(
    root: Path,
    *,
    embedding_size=16,
    num_lstm_units=16,
    unused=2,
    seed=2,
    vocabulary=tuple(WORDS),
    end_bias=END_BIAS,
):
    """Writes ``model.ckpt-1234.*``, ``show-and-tell.pb`` and ``word_counts.txt`` under
    ``root``; the logits are ``unused`` rows wider than the vocabulary (as the published
    model's). ``vocabulary``: the lines of ``word_counts.txt``; ``end_bias`` is added to the
    logit of ``</S>``. Returns the :class:`Reference` with its open session."""
    import tensorflow as tf

    words = [*vocabulary, "<UNK>"]
    vocab_size = len(words) + unused
    graph, rng, step = tf.Graph(), np.random.default_rng(seed), 1234
    with graph.as_default(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf-slim's and the cell's deprecation notices
        _build_graph(tf, vocab_size, embedding_size, num_lstm_units)
        session = tf.compat.v1.Session(graph=graph)
        variables = tf.compat.v1.global_variables()
        session.run(tf.compat.v1.global_variables_initializer())
        for variable in variables:
            name = variable.op.name
            if name == "global_step":
                variable.load(step, session)
            else:
                value = _random_value(name, variable.shape.as_list(), rng)
                if name == "logits/biases":  # captions that end (at various lengths)
                    value[vocabulary.index("</S>")] += end_bias
                variable.load(value.astype("float32"), session)
        checkpoint = tf.compat.v1.train.Saver(variables).save(
            session, str(root / "model.ckpt"), global_step=step, write_meta_graph=False
        )
        frozen = tf.compat.v1.graph_util.convert_variables_to_constants(
            session, graph.as_graph_def(), ["lstm/initial_state", "softmax", "lstm/state"]
        )
    (root / "show-and-tell.pb").write_bytes(frozen.SerializeToString())
    lines = [f"{word} {len(vocabulary) - index}\n" for index, word in enumerate(vocabulary)]
    (root / "word_counts.txt").write_text("".join(lines))
    return Reference(
        checkpoint,
        str(root / "show-and-tell.pb"),
        str(root / "word_counts.txt"),
        words,
        vocab_size,
        step,
        session,
    )


class _Caption:
    def __init__(self, sentence, state, logprob, score):
        self.sentence, self.state, self.logprob, self.score = sentence, state, logprob, score

    def __lt__(self, other):
        return self.score < other.score


class _TopN:
    def __init__(self, n):
        self.n, self.data = n, []

    def push(self, x):
        if len(self.data) < self.n:
            heapq.heappush(self.data, x)
        else:
            heapq.heappushpop(self.data, x)

    def extract(self, sort=False):
        data, self.data = self.data, []
        return sorted(data, reverse=True) if sort else data


def caption_generator(
    reference: Reference, pixels, *, start_id, end_id, beam_size=3, max_caption_length=20
):
    """im2txt's ``CaptionGenerator.beam_search`` on one image (its fixed version: each partial
    caption expands to its ``beam_size`` most probable words). Returns [(word ids without <S>
    and </S>, log-prob, score)] best first."""
    initial_state = reference.feed_image(pixels[None])
    partial = _TopN(beam_size)
    partial.push(_Caption([start_id], initial_state[0], 0.0, 0.0))
    complete = _TopN(beam_size)
    for _ in range(max_caption_length - 1):
        captions = partial.extract()
        softmax, states = reference.inference_step(
            np.array([c.sentence[-1] for c in captions]), np.array([c.state for c in captions])
        )
        for i, caption in enumerate(captions):
            words_and_probs = sorted(enumerate(softmax[i]), key=lambda x: -x[1])[:beam_size]
            for w, p in words_and_probs:
                if p < 1e-12:
                    continue
                sentence = caption.sentence + [w]
                logprob = caption.logprob + math.log(p)
                beam = _Caption(sentence, states[i], logprob, logprob)
                (complete if w == end_id else partial).push(beam)
        if not partial.data:
            break
    found = complete if complete.data else partial
    return [
        ([w for w in c.sentence[1:] if w != end_id], c.logprob, c.score)
        for c in found.extract(sort=True)
    ]
