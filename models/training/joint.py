"""Phase 2 of Show-and-Tell training: the encoder and the decoder fitted together (im2txt's
``train_inception``), on pixels instead of precomputed features.

:class:`JointCaptioner` wraps an :class:`~models.captioner.encoder.ImageEncoder`'s model (uint8
pixels -> pooled features) and a :class:`~models.captioner.decoder.Decoder`'s teacher-forcing
model over them. One batch is ``((images [B, S, S, 3] uint8, tokens [B, C, T] int32),
targets [B, C, T-1])``: every image goes through the CNN once and the decoder reads all C of its
captions (rows of zeros pad images with fewer captions and are masked out of the loss), so a CNN
pass, the expensive part, is paid once per image rather than once per caption.

Two Adam optimizers: the model's own (``compile``) for the decoder and ``encoder_optimizer`` for
the encoder, each with its learning rate and clipping (the encoder's is small: it is
fine-tuned). Both are attributes of the model, so ``save_weights`` (and ``BackupAndRestore``)
checkpoint their state.

BatchNorm (:func:`set_batchnorm`): ``train`` normalises with batch statistics and updates the
moving ones; ``frozen`` keeps the moving statistics and betas fixed (inference mode). See
:func:`resolve_batchnorm` for the default.

Needs Keras' TensorFlow backend (a custom ``train_step`` with ``tf.GradientTape``).
"""

from __future__ import annotations

import keras

from models.captioner.decoder import Decoder, masked_cross_entropy
from models.captioner.encoder import ImageEncoder
from models.configs import BATCHNORM_MODES


def resolve_batchnorm(mode: str, weights: str) -> str:
    """``auto`` -> ``train`` for randomly initialised weights (``random:SEED``), whose moving
    statistics are placeholders (mean 0, variance 1) that describe no activation: frozen, the
    network would run unnormalised and its features stay nearly constant. -> ``frozen`` for
    pretrained weights (ImageNet or a file): their statistics are meaningful, and batch statistics
    from small batches of a narrow domain would drag them away (the Keras fine-tuning advice)."""
    if mode not in BATCHNORM_MODES:
        raise ValueError(f"encoder BatchNorm must be one of {BATCHNORM_MODES}, got {mode!r}")
    if mode != "auto":
        return mode
    return "train" if weights.startswith("random:") else "frozen"


def set_batchnorm(backbone: keras.Model, mode: str) -> int:
    """Freezes (``frozen``) or unfreezes (``train``) every BatchNormalization layer of the
    backbone; returns how many there are. A Keras 3 BatchNormalization with ``trainable=False``
    runs in inference mode even when the model trains."""
    layers = [
        layer
        for layer in backbone._flatten_layers()
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    for layer in layers:
        layer.trainable = mode == "train"
    return len(layers)


class JointCaptioner(keras.Model):
    """Encoder + decoder for teacher forcing on pixels; see the module docstring."""

    def __init__(
        self,
        encoder: ImageEncoder,
        decoder: Decoder,
        *,
        encoder_optimizer: keras.optimizers.Optimizer,
        **kwargs,
    ):
        super().__init__(name="joint_captioner", **kwargs)
        self.image_encoder = encoder.model
        self.decoder_model = decoder.training_model
        self.encoder_optimizer = encoder_optimizer
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def call(self, inputs, training=False):
        import tensorflow as tf

        images, tokens = inputs
        features = self.image_encoder(images, training=training)
        shape = tf.shape(tokens)
        features = tf.repeat(features, shape[1], axis=0)  # row b*C + c is caption c of image b
        return self.decoder_model([features, tf.reshape(tokens, [-1, shape[2]])], training=training)

    def _loss(self, data, training: bool):
        import tensorflow as tf

        (images, tokens), targets = data
        logits = self((images, tokens), training=training)
        return masked_cross_entropy(tf.reshape(targets, [-1, tf.shape(targets)[2]]), logits)

    def build_optimizers(self) -> None:
        """Creates both optimizers' slots (before fit, and before a checkpoint is restored)."""
        self.encoder_optimizer.build(self.image_encoder.trainable_variables)
        self.optimizer.build(self.decoder_model.trainable_variables)

    def train_step(self, data):
        import tensorflow as tf

        encoder_variables = self.image_encoder.trainable_variables
        decoder_variables = self.decoder_model.trainable_variables
        with tf.GradientTape() as tape:
            loss = self._loss(data, training=True)
        gradients = tape.gradient(loss, encoder_variables + decoder_variables)
        split = len(encoder_variables)
        self.encoder_optimizer.apply(gradients[:split], encoder_variables)
        self.optimizer.apply(gradients[split:], decoder_variables)
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        self.loss_tracker.update_state(self._loss(data, training=False))
        return {"loss": self.loss_tracker.result()}

    @property
    def metrics(self):
        return [self.loss_tracker]
