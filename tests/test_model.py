"""The reference blocks and ResNet-50: shapes, names, parameter counts, options, errors."""

import re

import keras
import numpy as np
import pytest

from resnet_course import ResNet50, convolutional_block, identity_block
from resnet_course.blocks import layer_names
from resnet_course.model import (
    keras_applications_name,
    load_keras_applications_weights,
    scaled_filters,
    stage_output_names,
)


@pytest.fixture(scope="module")
def resnet50():
    return ResNet50()


def add_sources(add_layer):
    """Names of the layers whose outputs feed an Add."""
    return {tensor._keras_history.operation.name for tensor in add_layer.input}


def count(weights):
    return int(sum(np.prod(w.shape) for w in weights))


def test_parameter_counts_match_the_course(resnet50):
    assert resnet50.name == "ResNet50"
    assert resnet50.count_params() == 23_600_006
    assert count(resnet50.trainable_weights) == 23_546_886
    assert count(resnet50.non_trainable_weights) == 53_120


def test_output_and_stage_shapes(resnet50):
    assert resnet50.output_shape == (None, 6)
    shapes = {name: resnet50.get_layer(name).output.shape for name in stage_output_names(resnet50)}
    assert shapes == {
        "pool1": (None, 15, 15, 64),
        "res2c_relu": (None, 15, 15, 256),
        "res3d_relu": (None, 8, 8, 512),
        "res4f_relu": (None, 4, 4, 1024),
        "res5c_relu": (None, 2, 2, 2048),
    }
    assert resnet50.get_layer("flatten").output.shape == (None, 2048)


def test_layer_names_follow_one_scheme(resnet50):
    names = [layer.name for layer in resnet50.layers]
    assert names[:6] == ["input", "conv1_pad", "conv1", "bn_conv1", "conv1_relu", "pool1"]
    assert names[-3:] == ["avg_pool", "flatten", "fc6"]
    blocks = sorted({m.group(1) for m in map(re.compile(r"^res(\d[a-z])_branch2a$").match, names) if m})
    assert blocks == ["2a", "2b", "2c", "3a", "3b", "3c", "3d", "4a", "4b", "4c", "4d", "4e", "4f", "5a", "5b", "5c"]
    for block in blocks:
        expected = layer_names(int(block[0]), block[1], shortcut=block[1] == "a")
        assert set(expected.values()) <= set(names), block
    assert sum(name.endswith("_branch1") and name.startswith("res") for name in names) == 4


def test_block_layers_in_course_order():
    X = keras.Input((4, 4, 6))
    out = convolutional_block(X, 2, [2, 4, 6], stage=1, block="a", s=2)
    model = keras.Model(X, out)
    convs = [(layer.name, layer.filters, layer.kernel_size, layer.strides, layer.padding)
             for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs == [
        ("res1a_branch2a", 2, (1, 1), (2, 2), "valid"),
        ("res1a_branch2b", 4, (2, 2), (1, 1), "same"),
        ("res1a_branch2c", 6, (1, 1), (1, 1), "valid"),
        ("res1a_branch1", 6, (1, 1), (2, 2), "valid"),
    ]
    assert all(layer.axis in (3, [3]) for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))
    assert model.output_shape == (None, 2, 2, 6)
    assert add_sources(model.get_layer("res1a")) == {"bn1a_branch2c", "bn1a_branch1"}


def test_identity_block_keeps_shape_and_adds_input():
    X = keras.Input((5, 7, 6))
    model = keras.Model(X, identity_block(X, 3, [2, 4, 6], stage=3, block="c"))
    assert model.output_shape == (None, 5, 7, 6)
    assert add_sources(model.get_layer("res3c")) == {"bn3c_branch2c", model.layers[0].name}


def test_seed_makes_models_reproducible():
    a = ResNet50((64, 64, 3), 6, seed=7)
    b = ResNet50((64, 64, 3), 6, seed=7)
    c = ResNet50((64, 64, 3), 6, seed=8)
    x = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    np.testing.assert_array_equal(a.predict(x, verbose=0), b.predict(x, verbose=0))
    assert not np.allclose(a.get_layer("conv1").get_weights()[0], c.get_layer("conv1").get_weights()[0])
    # Each layer gets its own seed: no two convs of one shape share their kernel.
    first, second = a.get_layer("res2b_branch2a").get_weights()[0], a.get_layer("res2c_branch2a").get_weights()[0]
    assert not np.allclose(first, second)


@pytest.mark.parametrize(
    "options, input_shape, stage5",
    [
        (dict(stem_pool=False), (32, 32, 3), (2, 2)),
        (dict(pooling="global"), (32, 32, 3), (1, 1)),
        (dict(stem_pool=False, filters=scaled_filters(0.5)), (32, 32, 3), (2, 2)),
        (dict(stem_pool=False), (48, 48, 1), (3, 3)),
    ],
)
def test_options_for_small_images(options, input_shape, stage5):
    model = ResNet50(input_shape, 10, **options)
    assert model.output_shape == (None, 10)
    assert model.get_layer("res5c_relu").output.shape[1:3] == stage5
    if "filters" in options:
        assert model.get_layer("res3a_branch2a").filters == 64
        assert model.get_layer("res5c_relu").output.shape[-1] == 1024
    assert ("pool1" in [layer.name for layer in model.layers]) == options.get("stem_pool", True)


def test_small_stem_keeps_full_resolution_and_layer_names():
    imagenet = ResNet50((32, 32, 3), 10, stem_pool=False, pooling="global")
    small = ResNet50((32, 32, 3), 10, stem_pool=False, pooling="global", stem="small")
    assert [layer.name for layer in small.layers] == [layer.name for layer in imagenet.layers]
    conv1 = small.get_layer("conv1")
    assert conv1.kernel_size == (3, 3) and conv1.strides == (1, 1)
    assert small.get_layer("conv1_pad").output.shape[1:3] == (34, 34)
    assert small.get_layer("res2a_relu").output.shape[1:3] == (32, 32)
    assert small.get_layer("res5a_relu").output.shape[1:3] == (4, 4)
    # Only conv1's kernel changes size: 3x3x3x64 instead of 7x7x3x64.
    assert imagenet.count_params() - small.count_params() == (49 - 9) * 3 * 64


def test_small_stem_size_check_uses_the_stem_stride_for_both_sides():
    # 32 -> 32 (stem) -> 15 (max-pool) -> 15, 8, 4, 2: a 2x2 stage 5 suits the 2x2 avg_pool head.
    model = ResNet50((32, 32, 3), 10, stem="small")
    assert model.get_layer("res5c_relu").output.shape[1:3] == (2, 2)
    with pytest.raises(ValueError, match=r"a 16x32 input leaves the last stage 1x2"):
        ResNet50((16, 32, 3), 10, stem="small")


def test_error_unknown_stem():
    with pytest.raises(ValueError, match=r"stem must be one of \('imagenet', 'small'\), got 'cifar'"):
        ResNet50((32, 32, 3), 10, stem="cifar")


def test_stem_filters_set_the_stem_and_stage_2s_inputs():
    filters = scaled_filters(0.25)
    wide = ResNet50((32, 32, 3), 10, filters=filters, stem="small", stem_pool=False, pooling="global")
    thin = ResNet50((32, 32, 3), 10, filters=filters, stem="small", stem_pool=False, pooling="global",
                    stem_filters=16)
    assert [layer.name for layer in thin.layers] == [layer.name for layer in wide.layers]
    assert thin.get_layer("conv1").filters == 16 and wide.get_layer("conv1").filters == 64
    assert thin.get_layer("bn_conv1").output.shape[-1] == 16
    # Stage 2 takes 16 channels: its first 1x1 convolutions (to 16 and to 64 filters) shrink.
    assert thin.get_layer("res2a_branch2a").kernel.shape == (1, 1, 16, 16)
    assert thin.get_layer("res2a_branch1").kernel.shape == (1, 1, 16, 64)
    conv1 = 3 * 3 * 3 + 1 + 4  # per filter: its kernel and bias, and the batch norm's 4 weights
    stage2 = 16 + 64  # per input channel: a weight for each of res2a_branch2a's and res2a_branch1's filters
    assert wide.count_params() - thin.count_params() == (64 - 16) * (conv1 + stage2)


@pytest.mark.parametrize("value", [0, -16, 16.0, True, "16"])
def test_error_stem_filters(value):
    with pytest.raises(ValueError, match=r"stem_filters must be a positive int .*64 in ResNet-50.*, got"):
        ResNet50((32, 32, 3), 10, stem_filters=value)


def test_identity_blocks_per_stage_and_dropout():
    model = ResNet50((64, 64, 3), 6, identity_blocks=(1, 1, 1, 1), dropout=0.2)
    names = {layer.name for layer in model.layers}
    assert {"res2b", "res5b", "dropout"} <= names and "res2c" not in names


def test_error_identity_block_channel_mismatch():
    X = keras.Input((4, 4, 6))
    with pytest.raises(ValueError, match=r"F3=8 but the input has 6 channels.*convolutional_block"):
        identity_block(X, 2, [2, 4, 8], stage=1, block="a")


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda X: identity_block(X, 0, [2, 4, 6], 1, "a"), "f is the middle conv's kernel size"),
        (lambda X: identity_block(X, 2, [2, 4], 1, "a"), r"filters must be three positive ints"),
        (lambda X: identity_block(X, 2, [2, 4, 6], 1, "a b"), "block must be a short string"),
        (lambda X: convolutional_block(X, 2, [2, 4, 6], 1, "a", s=0), "s is the stride"),
        (lambda X: identity_block(np.zeros((4, 4)), 2, [2, 4, 6], 1, "a"), "X must be a 4-D tensor"),
    ],
)
def test_block_argument_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call(keras.Input((4, 4, 6)))


def test_error_small_input_names_the_option():
    with pytest.raises(ValueError, match=r"32x32 input leaves the last stage 1x1.*stem_pool=False"):
        ResNet50((32, 32, 3), 10)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(input_shape=(64, 64)), "input_shape must be"),
        (dict(classes=1), "classes must be an int >= 2"),
        (dict(pooling="max"), "pooling must be one of"),
        (dict(identity_blocks=(2, 3, 5)), "filters has 4 stages but identity_blocks has 3"),
        (dict(input_shape=(2, 2, 3)), "shrinks to nothing"),
        (dict(input_shape=(64, 64, None)), "input_shape must be"),
        (dict(input_shape=(None, None, 3)), r"any size \(\(None, None, 3\)\) needs pooling='global'"),
    ],
)
def test_model_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResNet50(**kwargs)


def test_a_model_of_any_size_takes_crops_and_whole_images():
    """Recipes with a ``crop`` train on small windows and test on whole images: one model, any size."""
    model = ResNet50((None, None, 3), 10, filters=scaled_filters(0.0625), identity_blocks=(0, 0, 0, 0),
                     stem="small", stem_pool=False, pooling="global", seed=0)
    fixed = ResNet50((32, 32, 3), 10, filters=scaled_filters(0.0625), identity_blocks=(0, 0, 0, 0),
                     stem="small", stem_pool=False, pooling="global", seed=0)
    assert [layer.name for layer in model.layers] == [layer.name for layer in fixed.layers]
    images = np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(images)),
                               keras.ops.convert_to_numpy(fixed(images)), atol=1e-5)
    assert keras.ops.convert_to_numpy(model(images[:, :24, :24])).shape == (2, 10)


def test_keras_applications_names():
    assert keras_applications_name("conv1") == "conv1_conv"
    assert keras_applications_name("bn_conv1") == "conv1_bn"
    assert keras_applications_name("res2a_branch1") == "conv2_block1_0_conv"
    assert keras_applications_name("bn4f_branch2c") == "conv4_block6_3_bn"
    assert keras_applications_name("res5c_branch2b") == "conv5_block3_2_conv"
    assert keras_applications_name("fc6") == "predictions"
    assert keras_applications_name("res2a_relu") is None
    assert keras_applications_name("flatten") is None


def test_load_keras_applications_weights_reproduces_activations(resnet50):
    reference = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=6)
    copied = load_keras_applications_weights(resnet50, reference)
    conv_and_bn = [layer.name for layer in resnet50.layers if layer.weights and not layer.name.startswith("fc")]
    assert set(conv_and_bn) <= set(copied) and "fc6" in copied
    x = np.random.default_rng(1).random((2, 64, 64, 3), dtype=np.float32)

    def activations(model, names):
        outputs = keras.Model(model.input, [model.get_layer(n).output for n in names])(x, training=False)
        return [keras.ops.convert_to_numpy(output) for output in outputs]

    ours, theirs = activations(resnet50, ["conv1", "bn_conv1"]), activations(reference, ["conv1_conv", "conv1_bn"])
    # The stem's conv computes exactly the same function ...
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-5, atol=1e-5)
    # ... and the batch norms differ only by epsilon (1e-3 against 1.001e-5).
    np.testing.assert_allclose(ours[1], theirs[1], rtol=2e-3, atol=2e-3)
    # From the same input, a whole stage-2 block agrees up to that epsilon. keras.applications
    # pads before its max-pool: at 64x64 its stage 2 is 16x16, which ours reaches at 66x66.
    ours_66 = ResNet50((66, 66, 3), 6)
    load_keras_applications_weights(ours_66, reference)
    feature = np.random.default_rng(2).random((2, 16, 16, 64), dtype=np.float32)
    ours_block = keras.Model(ours_66.get_layer("res2a_branch2a").input, ours_66.get_layer("res2a_relu").output)
    theirs_block = keras.Model(reference.get_layer("conv2_block1_1_conv").input,
                               reference.get_layer("conv2_block1_out").output)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ours_block(feature, training=False)),
                               keras.ops.convert_to_numpy(theirs_block(feature, training=False)),
                               rtol=1e-2, atol=1e-2)


def test_load_keras_applications_weights_rejects_other_shapes():
    thin = ResNet50((64, 64, 3), 6, filters=scaled_filters(0.5))
    reference = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=6)
    with pytest.raises(ValueError, match="default filters"):
        load_keras_applications_weights(thin, reference)
