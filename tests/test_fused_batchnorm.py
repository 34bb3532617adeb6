"""resnet_course.fused_batchnorm: the fused layer computes what Keras' BatchNormalization computes.

On each backend (fused on TensorFlow and PyTorch, Keras' own layer on JAX): forward in both
modes, the moving-statistics update, the gradients, mixed precision,
the fall-back for layouts the kernel does not take, and the swap to and from plain
Keras layers (names and weights kept) that training and saving rely on (the saved-model round
trip of every training layer is in tests/test_torch_kernels.py).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from resnet_course import training
from resnet_course.fused_batchnorm import (
    FusedBatchNormalization,
    uses_fused_batch_norm,
    with_fused_batch_norm,
    with_keras_batch_norm,
)
from resnet_course.training import recipe
from swap_checks import assert_swap_round_trip

TINY = dict(width=0.0625, identity_blocks=(0, 0, 0, 0))
to_numpy = keras.ops.convert_to_numpy


def test_fused_on_tensorflow_and_torch_keras_elsewhere():
    """The layer fuses where a backend has the kernel (TensorFlow, PyTorch); JAX compiles Keras' own."""
    _, fused = _pair()
    assert fused._can_fuse(keras.ops.zeros((2, 6, 5, 8)), None) == (keras.backend.backend() in ("tensorflow", "torch"))


def _pair(channels=8, momentum=0.9, **options):
    plain = keras.layers.BatchNormalization(momentum=momentum, name="bn", **options)
    fused = FusedBatchNormalization.from_config(plain.get_config())
    shape = (None, 6, 5, channels)
    plain.build(shape)
    fused.build(shape)
    rng = np.random.default_rng(0)
    gamma, beta = rng.normal(1, 0.2, channels), rng.normal(0, 0.2, channels)
    mean, variance = rng.normal(0, 1, channels), rng.uniform(0.5, 2, channels)
    for layer in (plain, fused):
        layer.set_weights([w.astype("float32") for w in (gamma, beta, mean, variance)])
    return plain, fused


def _images(shape=(4, 6, 5, 8), seed=1):
    return np.random.default_rng(seed).normal(2.0, 3.0, shape).astype("float32")


@pytest.mark.parametrize("training_mode", [False, True])
def test_forward_matches_keras(training_mode):
    plain, fused = _pair()
    x = _images()
    np.testing.assert_allclose(to_numpy(fused(x, training=training_mode)), to_numpy(plain(x, training=training_mode)),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_moving_statistics_update_matches_keras(as_tensor):
    """Arrays take Keras' __call__; the backend's tensors take the direct call on PyTorch
    (resnet_course.layer_swap.DirectCall), whose update is in place."""
    plain, fused = _pair(momentum=0.7)
    for seed in range(3):
        x = _images(seed=seed)
        if as_tensor:
            x = keras.ops.convert_to_tensor(x)
        plain(x, training=True)
        fused(x, training=True)
    np.testing.assert_allclose(to_numpy(fused.moving_mean), to_numpy(plain.moving_mean), rtol=1e-5, atol=1e-6)
    # Keras keeps the biased batch variance; the fused kernels' variance is turned into it.
    np.testing.assert_allclose(to_numpy(fused.moving_variance), to_numpy(plain.moving_variance), rtol=1e-5, atol=1e-6)


def _gradients(layer, x, upstream):
    """d sum(layer(x) * upstream) / d (x, gamma, beta), in training mode, on the running backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, training=True) * upstream)
        return [g.numpy() for g in tape.gradient(loss, [x, layer.gamma, layer.beta])]
    if backend == "torch":
        import torch

        x = torch.tensor(x, requires_grad=True)
        loss = (layer(x, training=True) * torch.tensor(upstream)).sum()
        grads = torch.autograd.grad(loss, [x, layer.gamma.value, layer.beta.value])
        return [g.numpy() for g in grads]
    pytest.skip(f"the layer is Keras' own on {backend}")


def test_gradients_match_keras():
    plain, fused = _pair()
    x, upstream = _images(), _images(seed=7)
    for g_plain, g_fused in zip(_gradients(plain, x, upstream), _gradients(fused, x, upstream)):
        np.testing.assert_allclose(g_fused, g_plain, rtol=1e-4, atol=1e-4)


def test_frozen_layer_uses_moving_statistics():
    plain, fused = _pair()
    plain.trainable = fused.trainable = False
    x = _images()
    np.testing.assert_allclose(to_numpy(fused(x, training=True)), to_numpy(plain(x, training=False)),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_numpy(fused.moving_mean), to_numpy(plain.moving_mean))


def test_mixed_bfloat16_keeps_the_compute_dtype_and_close_values():
    plain = keras.layers.BatchNormalization(name="bn", dtype="mixed_bfloat16")
    fused = FusedBatchNormalization.from_config(plain.get_config())
    x = keras.ops.cast(_images(), "bfloat16")
    for mode in (False, True):
        y_fused, y_plain = fused(x, training=mode), plain(x, training=mode)
        assert keras.backend.standardize_dtype(y_fused.dtype) == "bfloat16"
        np.testing.assert_allclose(to_numpy(keras.ops.cast(y_fused, "float32")),
                                   to_numpy(keras.ops.cast(y_plain, "float32")), rtol=0.02, atol=0.02)


@pytest.mark.parametrize("shape, options", [((4, 8), {}), ((4, 8, 6, 5), {"axis": 1}), ((4, 6, 5, 8), {"center": False})])
def test_layouts_the_kernel_cannot_take_fall_back_to_keras(shape, options):
    plain = keras.layers.BatchNormalization(name="bn", **options)
    fused = FusedBatchNormalization.from_config(plain.get_config())
    x = _images(shape)
    for mode in (False, True):
        np.testing.assert_allclose(to_numpy(fused(x, training=mode)), to_numpy(plain(x, training=mode)),
                                   rtol=1e-5, atol=1e-5)


def test_swap_keeps_names_weights_and_outputs():
    model = training.build_model(recipe("cifar10", "quick", fused_batch_norm=False, **TINY))
    assert not uses_fused_batch_norm(model)
    fused = with_fused_batch_norm(model)
    assert uses_fused_batch_norm(fused)
    assert type(fused.get_layer("ResNet50").get_layer("bn2a_branch2a")) is FusedBatchNormalization
    back = assert_swap_round_trip(model, fused, with_keras_batch_norm, _images((3, 32, 32, 3)) * 40 + 120,
                                  modes=(False,), atol=1e-6)
    assert not uses_fused_batch_norm(back)
    assert type(back.get_layer("ResNet50").get_layer("bn2a_branch2a")) is keras.layers.BatchNormalization

