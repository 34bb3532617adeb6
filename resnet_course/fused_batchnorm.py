"""Fused batch normalization for training on the TensorFlow backend: the same layer, one kernel.

Keras 3's ``BatchNormalization`` is not fused on TensorFlow: in training it computes
the moments with ``tf.nn.moments`` and normalizes with ``tf.nn.batch_normalization``,
about ten element-wise kernels forward and as many backward per layer, and under
``mixed_bfloat16`` it also casts the activations to float32 and back. ResNet-50 has
53 batch norms; on a 2-core CPU those passes over memory take a large share of a step
(benchmarks/bench_profile.py) and eat most of what bfloat16 saves in the convolutions.

``FusedBatchNormalization`` keeps the layer's weights, name, config and moving-statistics
update (momentum, biased variance) and replaces the arithmetic with TensorFlow's
``FusedBatchNormV3`` (oneDNN on x86: bfloat16 in and out, float32 statistics), whose
gradient is one ``FusedBatchNormGradV3``. On PyTorch, Keras' layer is the same dozen
element-wise passes, and ``torch.native_batch_norm`` on the channels-last tensor (a permuted
view, no copy) replaces them (1.14x faster steps in float32, 1.5x in bfloat16; see
benchmarks/results/backends.md). On JAX, whose XLA compiler fuses the arithmetic itself, or
for a layout the kernels cannot take, it is Keras' layer.

This is a training-speed concern, so it lives here and not in the course's model:
``resnet_course.model`` and ``resnet_course.blocks`` build plain Keras layers (what
students write and the grader compares), ``with_fused_batch_norm`` swaps them in for
training and ``with_keras_batch_norm`` (or ``resnet_course.layer_swap.with_keras_layers``)
swaps them back before a model is saved, so a saved model loads with plain Keras.
"""

from __future__ import annotations

import keras
from keras.src.backend.common.stateless_scope import in_stateless_scope

from resnet_course.layer_swap import DirectCall, all_layers, swap_layers, training_layer


@training_layer
@keras.saving.register_keras_serializable(package="resnet_course")
class FusedBatchNormalization(DirectCall, keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` computed by one fused kernel (channels-last, 4-D):
    TensorFlow's ``FusedBatchNormV3``, or PyTorch's ``native_batch_norm``."""

    def _can_fuse(self, inputs, mask) -> bool:
        rank = len(inputs.shape)
        return (
            keras.backend.backend() in ("tensorflow", "torch")
            and mask is None
            and rank == 4
            and self.axis in (-1, rank - 1)
            and self.center
            and self.scale
            and not self.renorm
            and not self.synchronized
        )

    def call(self, inputs, training=None, mask=None):
        if not self._can_fuse(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        if keras.backend.backend() == "torch":
            return self._call_torch(inputs, training)
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
            count = tf.cast(tf.size(x) // tf.shape(x)[-1], tf.float32)
            variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            y, _, _, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=scale, offset=offset,
                mean=tf.cast(self.moving_mean, tf.float32), variance=tf.cast(self.moving_variance, tf.float32),
                epsilon=self.epsilon, data_format="NHWC", is_training=False,
            )
        return tf.cast(y, self.compute_dtype)

    def _call_torch(self, inputs, training):
        """PyTorch's batch norm kernel on the channels-last input, seen as NCHW without a copy
        (``permute`` keeps the memory layout, which PyTorch's CPU kernel takes as is)."""
        import torch

        x = inputs.permute(0, 3, 1, 2)
        if x.dtype not in (torch.float32, torch.bfloat16):
            x = x.float()
        gamma, beta = self.gamma.value.float(), self.beta.value.float()
        if training and self.trainable:
            y, mean, inverse_std = torch.native_batch_norm(x, gamma, beta, None, None, True, 0.0, self.epsilon)
            variance = inverse_std.detach().pow(-2) - self.epsilon  # biased, as Keras' average uses
            self._move_towards(self.moving_mean, mean.detach())
            self._move_towards(self.moving_variance, variance)
        else:
            y = torch.nn.functional.batch_norm(x, self.moving_mean.value.float(), self.moving_variance.value.float(),
                                               gamma, beta, False, 0.0, self.epsilon)
        return y.permute(0, 2, 3, 1).to(keras.backend.standardize_dtype(self.compute_dtype) == "bfloat16"
                                        and torch.bfloat16 or torch.float32)


    def _move_towards(self, variable, batch_value):
        """variable = momentum * variable + (1 - momentum) * batch_value, in place (one kernel,
        no Keras op per term) unless Keras is tracing or running statelessly."""
        import torch

        if in_stateless_scope() or variable.value.device.type == "meta":
            variable.assign(variable * self.momentum + batch_value * (1.0 - self.momentum))
            return
        with torch.no_grad():
            variable.value.lerp_(batch_value.to(variable.value.dtype), 1.0 - self.momentum)


def with_fused_batch_norm(model: keras.Model) -> keras.Model:
    """``model`` with every ``BatchNormalization`` fused (a copy; names and weights kept).

    Worth it on TensorFlow (1.2-1.5x faster training, ``python benchmarks/run.py --only settings``)
    and PyTorch; on JAX the layers are Keras'.
    """
    return swap_layers(model, lambda layer: FusedBatchNormalization
                       if type(layer) is keras.layers.BatchNormalization else None)


def with_keras_batch_norm(model: keras.Model) -> keras.Model:
    """``model`` with plain ``keras.layers.BatchNormalization`` again (a copy; for saving)."""
    return swap_layers(model, lambda layer: keras.layers.BatchNormalization
                       if isinstance(layer, FusedBatchNormalization) else None)


def uses_fused_batch_norm(model: keras.Model) -> bool:
    """True when any layer of ``model`` (nested models included) is a ``FusedBatchNormalization``."""
    return any(isinstance(layer, FusedBatchNormalization) for layer in all_layers(model))

