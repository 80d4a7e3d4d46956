"""Fit Show and Tell on the ``beamcap features`` output, in im2txt's two phases.

Phase 1 (default): the decoder on precomputed features of a frozen encoder. Teacher forcing over
one example per image-caption pair (shuffled, padded per batch, prefetched by ``tf.data``),
masked cross-entropy, Adam with gradient-norm clipping.

Phase 2 (``train_encoder=True``, usually with ``init_from`` a phase-1 bundle): the encoder and
the decoder together on the records' pixels (features written ``--with-images``), through
:class:`models.training.joint.JointCaptioner`: one CNN pass per image for all of its captions, the
encoder with its own Adam and learning rate, BatchNorm trained or frozen (``encoder_batchnorm``),
bfloat16 compute if asked (``encoder_precision``). The train split is repeated and shuffled
without end; an "epoch" is ``images_per_epoch`` images, the interval between evaluations.

Both phases, every epoch: validation loss, validation BLEU-4 (and whatever a ``judge`` scores,
e.g. the synthetic scenes' attribute accuracy) on a sample decoded with beam search, a checkpoint
(``keras.callbacks.BackupAndRestore``: rerunning after an interruption resumes from the last
finished epoch), early stopping on the validation loss, and a stop once ``time_budget_minutes``
have passed. At the end: ``loss.png``, ``metrics.json`` (with the per-epoch history, examples
seen included) and the model bundle, encoder weights included, in the output directory. A
phase-2 bundle records ``phase: 2`` and its fine-tuning settings in the manifest's encoder
section; the caption job reads it like any other.

Parts: ``inputs`` (tf.data pipelines and the validation sample), ``phases`` (what differs
between the two phases), ``joint`` (phase 2's encoder + decoder model), ``callbacks``
(validation, progress, time budget, examples seen), ``curve`` (history, plot, headline) and
``trainer`` (``train``). Training needs Keras'
TensorFlow backend (``tf.data``).
"""

from models.training.curve import headline
from models.training.trainer import train

__all__ = ["headline", "train"]
