"""A prototype of the cheap fix the profile points at: fused batch normalization.

Keras 3's ``BatchNormalization`` is not fused on the TensorFlow backend: in
training it computes the moments with ``tf.nn.moments`` and normalizes with
``tf.nn.batch_normalization`` (about ten element-wise kernels forward and as
many backward per layer, each a pass over the activations), and under
``mixed_bfloat16`` it first casts the input to float32 and the output back.
ResNet-50 has 53 batch norms, so on a 2-core CPU those memory-bound passes
take a large share of a training step, and they eat most of what bfloat16 saves
in the convolutions.

``FusedBatchNormalization`` below keeps the layer's weights, names, config and
moving-statistics update (momentum, biased variance) and only replaces the
arithmetic with one ``FusedBatchNormV3`` kernel (oneDNN's on x86, bfloat16 in and
out with float32 statistics), whose gradient is one ``FusedBatchNormGradV3``.
It runs on the TensorFlow backend only; anywhere else it falls back to Keras'.

``build_ours_fused_bn`` builds our ResNet50 with it, by swapping the class
``keras.layers.BatchNormalization`` names while the model is built; this is a
benchmark-only prototype, not a change to the course's model.
"""

from __future__ import annotations

import contextlib

import keras


class FusedBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` computed by TensorFlow's fused kernel (channels-last)."""

    def _can_fuse(self, inputs, mask) -> bool:
        rank = len(inputs.shape)
        return (
            keras.backend.backend() == "tensorflow"
            and mask is None
            and rank == 4
            and self.axis in (-1, rank - 1)
            and self.center
            and self.scale
            and not self.renorm
        )

    def call(self, inputs, training=None, mask=None):
        if not self._can_fuse(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        x = inputs if inputs.dtype in (tf.float32, tf.bfloat16, tf.float16) else tf.cast(inputs, tf.float32)
        scale = tf.cast(self.gamma, tf.float32)
        offset = tf.cast(self.beta, tf.float32)
        if training and self.trainable:
            empty = tf.constant([], tf.float32)
            y, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=scale, offset=offset, mean=empty, variance=empty,
                epsilon=self.epsilon, data_format="NHWC", is_training=True,
            )
            # The kernel returns the unbiased variance; Keras' moving average uses the biased one.
            n = tf.cast(tf.size(x) // tf.shape(x)[-1], tf.float32)
            variance = variance * (n - 1.0) / tf.maximum(n, 1.0)
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            y, _, _, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=scale, offset=offset,
                mean=tf.cast(self.moving_mean, tf.float32), variance=tf.cast(self.moving_variance, tf.float32),
                epsilon=self.epsilon, data_format="NHWC", is_training=False,
            )
        return tf.cast(y, self.compute_dtype)


@contextlib.contextmanager
def fused_batch_norm():
    """Within the block, ``keras.layers.BatchNormalization`` is ``FusedBatchNormalization``."""
    original = keras.layers.BatchNormalization
    keras.layers.BatchNormalization = FusedBatchNormalization
    try:
        yield
    finally:
        keras.layers.BatchNormalization = original


def build_ours_fused_bn(input_shape, classes, **options):
    from bench_throughput import build_ours

    with fused_batch_norm():
        model, note = build_ours(input_shape, classes, **options)
    return model, (note + ", " if note != "defaults" else "") + "fused BN (prototype)"
