"""resnet_course.torch_kernels: the channels-last convolution and max-pooling, ReLU and Add
compute what Keras' Conv2D, MaxPooling2D, ReLU and Add compute, and skip Keras' per-call
bookkeeping only where it has nothing to do (resnet_course.layer_swap.DirectCall).

On PyTorch the layers call PyTorch's kernels on the channels-last tensor; the tests check the
forward pass and the gradients against Keras' layers for every padding, stride, dilation and
group case the course's models and students use, that the fast path is the one that ran,
the fall-back for cases the kernels cannot take, mixed precision, and the swap to and from
Keras' layers that training and saving rely on. On TensorFlow and JAX the layers are Keras'.
"""

from __future__ import annotations

import dataclasses
import zipfile

import keras
import numpy as np
import pytest

from resnet_course import training
from resnet_course.layer_swap import with_keras_layers
from resnet_course.fused_batchnorm import FusedBatchNormalization
from resnet_course.torch_kernels import (
    ChannelsLastConv2D,
    ChannelsLastMaxPooling2D,
    TorchAdd,
    TorchReLU,
    _same_padding,
    uses_torch_kernels,
    with_torch_kernels,
)
from resnet_course.training import recipe
from swap_checks import assert_swap_round_trip

TINY = dict(width=0.0625, identity_blocks=(0, 0, 0, 0))
ON_TORCH = keras.backend.backend() == "torch"
to_numpy = keras.ops.convert_to_numpy

# (input height and width, Conv2D options, whether PyTorch's kernel takes it as is)
CONVOLUTIONS = [
    ((8, 8), dict(filters=6, kernel_size=1, strides=2), True),  # conv block shortcut, stride-2 1x1
    ((8, 8), dict(filters=6, kernel_size=3, padding="same"), True),  # block's 3x3
    ((9, 7), dict(filters=5, kernel_size=7, strides=2), True),  # imagenet stem after ZeroPadding2D
    ((7, 7), dict(filters=4, kernel_size=3, strides=2, padding="same"), True),  # same, odd size: 1 + 1
    ((8, 8), dict(filters=4, kernel_size=3, strides=2, padding="same"), False),  # same: 0 + 1, Keras' path
    ((8, 6), dict(filters=4, kernel_size=(3, 5), padding="same", dilation_rate=2), True),
    ((6, 6), dict(filters=6, kernel_size=3, padding="same", groups=2, use_bias=False, activation="relu"), True),
]
POOLS = [
    ((9, 9), dict(pool_size=3, strides=2), True),  # the stem's pool
    ((8, 8), dict(pool_size=2), True),
    ((7, 7), dict(pool_size=3, strides=2, padding="same"), True),
    ((8, 8), dict(pool_size=3, strides=1, padding="same"), True),
    ((8, 8), dict(pool_size=3, strides=2, padding="same"), False),  # 0 + 1 pixels: Keras' path
]


def _images(shape, seed=1):
    return np.random.default_rng(seed).normal(0.5, 2.0, shape).astype("float32")


def _conv_pair(size, options, channels=4, dtype=None):
    plain = keras.layers.Conv2D(name="conv", dtype=dtype, **options)
    fast = ChannelsLastConv2D.from_config(plain.get_config())
    shape = (None, *size, channels)
    plain.build(shape)
    fast.build(shape)
    rng = np.random.default_rng(0)
    weights = [rng.normal(0, 0.3, w.shape).astype("float32") for w in plain.get_weights()]
    plain.set_weights(weights)
    fast.set_weights(weights)
    return plain, fast


def _pool_pair(options):
    plain = keras.layers.MaxPooling2D(name="pool", **options)
    return plain, ChannelsLastMaxPooling2D.from_config(plain.get_config())


@pytest.fixture
def keras_paths_refused(monkeypatch):
    """Make Keras' own Conv2D and MaxPooling2D call raise: a test then passes only if the
    PyTorch kernels ran."""

    def refuse(self, inputs):
        raise AssertionError(f"{type(self).__name__} took Keras' path")

    monkeypatch.setattr(keras.layers.Conv2D, "call", refuse)
    monkeypatch.setattr(keras.layers.MaxPooling2D, "call", refuse)


def test_same_padding_is_keras_convention():
    """Keras (as TensorFlow) puts the odd pixel of "same" padding after the image."""
    assert _same_padding(8, 3, 2) == (0, 1)
    assert _same_padding(7, 3, 2) == (1, 1)
    assert _same_padding(8, 3, 1) == (1, 1)
    assert _same_padding(8, 3, 1, dilation=2) == (2, 2)
    assert _same_padding(8, 1, 2) == (0, 0)


@pytest.mark.parametrize("size, options, fast", CONVOLUTIONS)
def test_convolution_matches_keras(size, options, fast):
    plain, layer = _conv_pair(size, options)
    x = _images((3, *size, 4))
    np.testing.assert_allclose(to_numpy(layer(x)), to_numpy(plain(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size, options, fast", POOLS)
def test_max_pooling_matches_keras(size, options, fast):
    plain, layer = _pool_pair(options)
    x = _images((3, *size, 5))
    np.testing.assert_array_equal(to_numpy(layer(x)), to_numpy(plain(x)))


@pytest.mark.skipif(not ON_TORCH, reason="the PyTorch kernels run on the PyTorch backend only")
@pytest.mark.parametrize("size, options, fast", [c for c in CONVOLUTIONS if c[2]] + [p for p in POOLS if p[2]])
def test_cases_the_kernels_take_do_not_use_keras_path(size, options, fast, keras_paths_refused):
    layer = (_conv_pair(size, options)[1] if "filters" in options else _pool_pair(options)[1])
    y = to_numpy(layer(_images((2, *size, 4))))
    assert y.shape[0] == 2


@pytest.mark.skipif(not ON_TORCH, reason="the PyTorch kernels run on the PyTorch backend only")
@pytest.mark.parametrize("size, options, fast", [c for c in CONVOLUTIONS if not c[2]] + [p for p in POOLS if not p[2]])
def test_cases_the_kernels_cannot_take_use_keras_path(size, options, fast, keras_paths_refused):
    layer = (_conv_pair(size, options)[1] if "filters" in options else _pool_pair(options)[1])
    with pytest.raises(AssertionError, match="took Keras' path"):
        layer(_images((2, *size, 4)))


def _torch_gradients(layer, x, upstream):
    import torch

    x = torch.tensor(x, requires_grad=True)
    variables = [v.value for v in layer.trainable_variables]
    loss = (layer(x) * torch.tensor(upstream)).sum()
    return [g.numpy() for g in torch.autograd.grad(loss, [x, *variables])]


@pytest.mark.skipif(not ON_TORCH, reason="the layers are Keras' own off PyTorch")
@pytest.mark.parametrize("size, options, fast", CONVOLUTIONS + POOLS)
def test_gradients_match_keras(size, options, fast):
    plain, layer = _conv_pair(size, options) if "filters" in options else _pool_pair(options)
    x = _images((2, *size, 4))
    upstream = _images(tuple(to_numpy(plain(x)).shape), seed=7)
    grads_plain, grads_fast = _torch_gradients(plain, x, upstream), _torch_gradients(layer, x, upstream)
    assert len(grads_fast) == len(grads_plain) == 1 + len(plain.trainable_variables)
    for g_plain, g_fast in zip(grads_plain, grads_fast):
        np.testing.assert_allclose(g_fast, g_plain, rtol=1e-4, atol=1e-4)


def test_mixed_bfloat16_keeps_the_compute_dtype_and_close_values():
    plain, layer = _conv_pair((8, 8), dict(filters=6, kernel_size=3, padding="same"), dtype="mixed_bfloat16")
    x = keras.ops.cast(_images((2, 8, 8, 4)), "bfloat16")
    y_fast, y_plain = layer(x), plain(x)
    assert keras.backend.standardize_dtype(y_fast.dtype) == "bfloat16"
    np.testing.assert_allclose(to_numpy(keras.ops.cast(y_fast, "float32")),
                               to_numpy(keras.ops.cast(y_plain, "float32")), rtol=0.05, atol=0.05)


def test_swap_keeps_names_weights_and_outputs():
    model = training.build_model(recipe("signs", "quick", torch_kernels=False, fused_batch_norm=False, **TINY))
    assert not uses_torch_kernels(model)
    fast = with_torch_kernels(model)
    assert uses_torch_kernels(fast)
    fast_resnet = fast.get_layer("ResNet50")
    assert type(fast_resnet.get_layer("conv1")) is ChannelsLastConv2D
    assert type(fast_resnet.get_layer("pool1")) is ChannelsLastMaxPooling2D
    assert {type(layer) for layer in fast_resnet.layers} >= {TorchReLU, TorchAdd}
    assert not any(type(layer) in (keras.layers.ReLU, keras.layers.Add) for layer in fast_resnet.layers)
    back = assert_swap_round_trip(model, fast, with_keras_layers, _images((3, 64, 64, 3)) * 40 + 120)
    assert not uses_torch_kernels(back)
    assert type(back.get_layer("ResNet50").get_layer("conv1")) is keras.layers.Conv2D
    assert {type(layer) for layer in back.get_layer("ResNet50").layers} >= {keras.layers.ReLU, keras.layers.Add}


def test_recipes_train_with_faster_layers_and_save_keras_layers(tmp_path):
    """Fused batch norms on TensorFlow and PyTorch, these kernels on PyTorch; a saved model has
    Keras' layers only and loads with Keras alone."""
    from resnet_course.fused_batchnorm import uses_fused_batch_norm

    r = recipe("signs", "quick", **TINY)
    assert r.torch_kernels and r.fused_batch_norm
    model = training.build_model(r)
    assert uses_torch_kernels(model) == ON_TORCH
    assert uses_fused_batch_norm(model) == (keras.backend.backend() in ("tensorflow", "torch"))
    training.save_model(model, tmp_path / "model.keras")
    with zipfile.ZipFile(tmp_path / "model.keras") as archive:
        config = archive.read("config.json").decode()
    assert "ChannelsLast" not in config and "FusedBatchNormalization" not in config and "Conv2D" in config
    assert "TorchReLU" not in config and "TorchAdd" not in config
    loaded = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    assert not uses_torch_kernels(loaded) and not uses_fused_batch_norm(loaded)
    x = _images((2, 64, 64, 3)) * 40 + 120
    np.testing.assert_allclose(to_numpy(loaded(x, training=False)), to_numpy(model(x, training=False)),
                               rtol=1e-5, atol=1e-5)


def _channels_last_view(value) -> bool:
    import torch

    return value.permute(3, 2, 0, 1).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.skipif(not ON_TORCH, reason="the kernels' storage is PyTorch's")
def test_kernels_are_stored_in_pytorchs_order_and_tracked():
    """A built kernel's permute is PyTorch's channels-last weight as is (no copy per step), and
    the parameter PyTorch tracks is the variable's own."""
    _, layer = _conv_pair((8, 8), dict(filters=6, kernel_size=3, padding="same"))
    kernel = layer.kernel.value
    assert tuple(kernel.shape) == (3, 3, 4, 6) and _channels_last_view(kernel)
    assert any(p is kernel for p in layer.parameters())
    weights = _images((3, 3, 4, 6), seed=5)
    layer.set_weights([weights, np.zeros(6, "float32")])
    np.testing.assert_array_equal(to_numpy(layer.kernel), weights)
    assert _channels_last_view(layer.kernel.value)


@pytest.mark.skipif(not ON_TORCH, reason="the PyTorch kernels run on the PyTorch backend only")
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_training_steps_with_the_kernels_match_keras_layers(optimizer):
    """Three steps of a small course model (momentum and Adam's moments come into play), with
    the optimizer's slots in the kernels' memory order: the same losses, and with SGD the same
    kernels and outputs."""
    from resnet_course.torch_kernels import match_optimizer_to_kernels

    # Whole images and a fixed peak, whatever the recipe's tuning: Adam's steps magnify rounding
    # differences (below), and this tolerance was set for these.
    r = recipe("cifar10", "quick", optimizer=optimizer, crop=0, learning_rate=0.2, **TINY)
    x = _images((8, 32, 32, 3)) * 40 + 120
    y = keras.utils.to_categorical(np.arange(8) % 10, 10)
    results = []
    for kernels in (False, True):
        keras.utils.set_random_seed(3)
        model = training.build_model(dataclasses.replace(r, torch_kernels=kernels))
        assert uses_torch_kernels(model) == kernels
        model.compile(optimizer=training.make_optimizer(r, steps_per_epoch=10), loss="categorical_crossentropy")
        match_optimizer_to_kernels(model)
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        slots = [v for v in model.optimizer.variables if len(v.shape) == 4]
        assert slots and all(_channels_last_view(v.value) for v in slots) == kernels
        losses = [float(model.train_on_batch(x, y)) for _ in range(3)]
        kernels_after = [to_numpy(v) for v in model.trainable_variables if len(v.shape) >= 2]
        results.append((losses, kernels_after, to_numpy(model(x, training=True))))
    (losses_plain, kernels_plain, out_plain), (losses_fast, kernels_fast, out_fast) = results
    np.testing.assert_allclose(losses_fast, losses_plain, rtol=1e-4)
    if optimizer == "adamw":
        # Adam divides each step by the gradient's own scale, so a weight whose gradient is zero up
        # to rounding (a conv bias before a batch norm, a kernel slice feeding a dead ReLU) takes
        # full steps of either sign: compare the losses, which every real update moves, only.
        return
    for a, b in zip(kernels_fast, kernels_plain):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(out_fast, out_plain, rtol=1e-3, atol=1e-4)


# --- ReLU and Add, and the direct call ----------------------------------------------------


@pytest.mark.parametrize("options", [{}, dict(max_value=6.0), dict(negative_slope=0.1), dict(threshold=0.5)])
def test_relu_matches_keras(options):
    plain = keras.layers.ReLU(**options)
    x = _images((2, 5, 5, 3))
    np.testing.assert_array_equal(to_numpy(TorchReLU.from_config(plain.get_config())(x)), to_numpy(plain(x)))


def test_add_matches_keras():
    a, b, c = (_images((2, 4, 4, 3), seed=s) for s in range(3))
    np.testing.assert_allclose(to_numpy(TorchAdd()([a, b, c])), to_numpy(keras.layers.Add()([a, b, c])), rtol=1e-6)
    # Different shapes broadcast in Keras' Add (here a channel vector): its path, same answer.
    v = _images((2, 1, 1, 3), seed=4)
    np.testing.assert_allclose(to_numpy(TorchAdd()([a, v])), to_numpy(keras.layers.Add()([a, v])), rtol=1e-6)


@pytest.fixture
def keras_call_refused(monkeypatch):
    """Make Keras' Layer.__call__ raise: a call passes only if it went straight to ``call``."""

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"{type(self).__name__} took Keras' __call__")

    monkeypatch.setattr(keras.layers.Layer, "__call__", refuse)


def _built_training_layers():
    _, conv = _conv_pair((8, 8), dict(filters=4, kernel_size=3, padding="same"))
    norm = FusedBatchNormalization()
    norm.build((None, 8, 8, 4))
    add = TorchAdd()
    add.build([(None, 8, 8, 4)] * 2)
    return conv, norm, TorchReLU(), add


@pytest.mark.skipif(not ON_TORCH, reason="the direct call is PyTorch's")
def test_direct_call_on_concrete_tensors_skips_keras_call(keras_call_refused):
    conv, norm, relu, add = _built_training_layers()
    x = keras.ops.convert_to_tensor(_images((2, 8, 8, 4)))
    y = relu(add([norm(conv(x), training=True), x]))
    assert tuple(y.shape) == (2, 8, 8, 4)
    norm(x, training=False)


def _stateless(layer, x, **kwargs):
    with keras.StatelessScope():
        return layer(x, **kwargs)


def _masked(layer, x, **kwargs):
    x = keras.ops.convert_to_tensor(x)
    x._keras_mask = keras.ops.ones(x.shape[:-1], "bool")
    return layer(x, **kwargs)


@pytest.mark.skipif(not ON_TORCH, reason="the direct call is PyTorch's")
@pytest.mark.parametrize("case", ["array", "training=None", "stateless", "masked", "mixed_bfloat16", "symbolic",
                                  "unbuilt"])
def test_calls_that_need_keras_bookkeeping_take_keras_call(case, keras_call_refused):
    conv, norm, _, _ = _built_training_layers()
    x = _images((2, 8, 8, 4))
    tensor = keras.ops.convert_to_tensor(x)
    calls = {
        "array": lambda: conv(x),  # Keras converts arrays
        "training=None": lambda: norm(tensor),  # Keras resolves the flag from the outer call
        "stateless": lambda: _stateless(norm, tensor, training=True),
        "masked": lambda: _masked(conv, x),
        "mixed_bfloat16": lambda: _conv_pair((8, 8), dict(filters=4, kernel_size=1), dtype="mixed_bfloat16")[1](
            keras.ops.cast(tensor, "bfloat16")),
        "symbolic": lambda: conv(keras.KerasTensor((None, 8, 8, 4))),
        "unbuilt": lambda: TorchAdd()([tensor, tensor]),
    }
    with pytest.raises(AssertionError, match="took Keras' __call__"):
        calls[case]()


@pytest.mark.skipif(not ON_TORCH, reason="the in-place update is PyTorch's")
def test_batch_norm_in_a_stateless_scope_leaves_its_variables_alone():
    _, norm, _, _ = _built_training_layers()
    before = to_numpy(norm.moving_mean).copy()
    with keras.StatelessScope() as scope:
        norm(keras.ops.convert_to_tensor(_images((2, 8, 8, 4))), training=True)
        updated = scope.get_current_value(norm.moving_mean)
    np.testing.assert_array_equal(to_numpy(norm.moving_mean), before)
    assert updated is not None and not np.allclose(to_numpy(updated), before)
