"""The two residual blocks of ResNet-50 (v1), as the course teaches them.

Every layer is named by one scheme, the original ResNet release's
(``res2a_branch2a``, ``bn2a_branch2a`` ...), so the grader can point at a layer
by name and pretrained weights can be mapped onto the model:

=====================  ======================================
layer                  name
=====================  ======================================
main-path conv k       ``res{stage}{block}_branch2{k}``  (k = a, b, c)
its batch norm         ``bn{stage}{block}_branch2{k}``
its ReLU               ``res{stage}{block}_branch2{k}_relu`` (a and b only)
shortcut conv          ``res{stage}{block}_branch1``
shortcut batch norm    ``bn{stage}{block}_branch1``
the Add                ``res{stage}{block}``
the final ReLU         ``res{stage}{block}_relu``
=====================  ======================================

Only the Keras 3 API is used, so the blocks run on the TensorFlow, JAX and
PyTorch backends.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import keras
from keras import layers

#: Channel axis of every tensor in the course (channels-last images, NHWC).
CHANNEL_AXIS = 3


def layer_names(stage: int | str, block: str, *, shortcut: bool = False) -> dict[str, str]:
    """Return the canonical names of one block's layers, keyed by role.

    >>> layer_names(2, "a")["conv_2a"]
    'res2a_branch2a'
    """
    prefix = f"{stage}{block}"
    names = {}
    for branch in ("2a", "2b", "2c"):
        names[f"conv_{branch}"] = f"res{prefix}_branch{branch}"
        names[f"bn_{branch}"] = f"bn{prefix}_branch{branch}"
    names["relu_2a"] = f"res{prefix}_branch2a_relu"
    names["relu_2b"] = f"res{prefix}_branch2b_relu"
    if shortcut:
        names["conv_1"] = f"res{prefix}_branch1"
        names["bn_1"] = f"bn{prefix}_branch1"
    names["add"] = f"res{prefix}"
    names["relu_out"] = f"res{prefix}_relu"
    return names


def kernel_initializer_for(name: str, seed: int | None) -> keras.initializers.Initializer:
    """Glorot-uniform initializer for the layer ``name``.

    With a seed, each layer gets its own seed derived from the layer's name, so
    the same seed always gives the same weights whatever order layers are built
    in, and no two layers share values (Keras warns when one seeded
    initializer is reused).
    """
    if seed is None:
        return keras.initializers.GlorotUniform()
    layer_seed = (zlib.crc32(name.encode()) + 1_000_003 * int(seed)) % (2**31 - 1)
    return keras.initializers.GlorotUniform(seed=layer_seed)


def _check_block_arguments(function: str, X, f, filters, stage, block, s=1) -> tuple[int, int, int]:
    """Fail with a clear message before Keras fails deep inside a layer."""
    shape = getattr(X, "shape", None)
    if shape is None or len(shape) != 4:
        raise ValueError(
            f"{function}: X must be a 4-D tensor (batch, height, width, channels), "
            f"got {type(X).__name__} with shape {shape}. Pass the output of "
            "keras.Input(shape=(height, width, channels)) or of a previous layer."
        )
    if isinstance(f, bool) or not isinstance(f, int) or f < 1:
        raise ValueError(f"{function}: f is the middle conv's kernel size and must be a positive int, got {f!r}.")
    if (
        isinstance(filters, (str, bytes))
        or not isinstance(filters, Sequence)
        or len(filters) != 3
        or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in filters)
    ):
        raise ValueError(
            f"{function}: filters must be three positive ints [F1, F2, F3] "
            f"(the three convs' filter counts), got {filters!r}."
        )
    if isinstance(stage, bool) or not isinstance(stage, int) or stage < 1:
        raise ValueError(f"{function}: stage must be a positive int (2 to 5 in ResNet-50), got {stage!r}.")
    if not isinstance(block, str) or not block.isalnum():
        raise ValueError(
            f"{function}: block must be a short string such as 'a' or 'b' (it goes into "
            f"layer names like res{stage}a_branch2a), got {block!r}."
        )
    if isinstance(s, bool) or not isinstance(s, int) or s < 1:
        raise ValueError(f"{function}: s is the stride and must be a positive int, got {s!r}.")
    return tuple(filters)


def _conv_bn(X, filters, kernel_size, *, strides, padding, conv_name, bn_name, seed, bn_momentum):
    """Conv2D followed by BatchNormalization over the channel axis."""
    X = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        name=conv_name,
        kernel_initializer=kernel_initializer_for(conv_name, seed),
    )(X)
    return layers.BatchNormalization(axis=CHANNEL_AXIS, momentum=bn_momentum, name=bn_name)(X)


def _main_path(X, f, filters, names, *, s, seed, bn_momentum):
    """1x1 conv (stride s) -> BN -> ReLU -> fxf conv -> BN -> ReLU -> 1x1 conv -> BN.

    The stride sits on the first 1x1 conv, as in the original ResNet (v1);
    ResNet v1.5 moves it to the fxf conv.
    """
    F1, F2, F3 = filters
    common = dict(seed=seed, bn_momentum=bn_momentum)
    X = _conv_bn(X, F1, 1, strides=s, padding="valid", conv_name=names["conv_2a"], bn_name=names["bn_2a"], **common)
    X = layers.ReLU(name=names["relu_2a"])(X)
    X = _conv_bn(X, F2, f, strides=1, padding="same", conv_name=names["conv_2b"], bn_name=names["bn_2b"], **common)
    X = layers.ReLU(name=names["relu_2b"])(X)
    return _conv_bn(X, F3, 1, strides=1, padding="valid", conv_name=names["conv_2c"], bn_name=names["bn_2c"], **common)


def identity_block(X, f, filters, stage, block, *, seed=None, bn_momentum=0.99):
    """The identity block: the shortcut adds the block's input unchanged.

    Arguments:
        X: input tensor of shape (batch, height, width, channels).
        f: kernel size of the middle conv of the main path.
        filters: [F1, F2, F3], the filter counts of the main path's three convs.
            F3 must equal the input's channel count, since the input is added
            to the main path's output.
        stage: the stage number (2 to 5 in ResNet-50), used in layer names.
        block: the block's letter within the stage ('a', 'b', ...), used in names.
        seed: seeds the kernel initializers (None: random).
        bn_momentum: momentum of the batch norms' moving statistics.

    Returns:
        Output tensor of shape (batch, height, width, F3).
    """
    filters = _check_block_arguments("identity_block", X, f, filters, stage, block)
    channels = X.shape[CHANNEL_AXIS]
    if channels is not None and filters[2] != channels:
        raise ValueError(
            f"identity_block res{stage}{block}: F3={filters[2]} but the input has {channels} channels. "
            "The identity shortcut adds the input to the main path's output, so F3 must equal the "
            f"input's channel count: use filters [F1, F2, {channels}], or use convolutional_block, "
            "whose 1x1 projection changes the channel count."
        )
    names = layer_names(stage, block)
    X_shortcut = X
    X = _main_path(X, f, filters, names, s=1, seed=seed, bn_momentum=bn_momentum)
    X = layers.Add(name=names["add"])([X, X_shortcut])
    return layers.ReLU(name=names["relu_out"])(X)


def convolutional_block(X, f, filters, stage, block, s=2, *, seed=None, bn_momentum=0.99):
    """The convolutional block: a 1x1 projection on the shortcut changes shape.

    Used where a stage starts: the main path and the shortcut both downsample
    with stride ``s`` and both end with F3 channels, so they can be added.

    Arguments:
        X: input tensor of shape (batch, height, width, channels).
        f: kernel size of the middle conv of the main path.
        filters: [F1, F2, F3], the filter counts of the main path's three convs
            (the shortcut's 1x1 conv has F3 filters).
        stage: the stage number (2 to 5 in ResNet-50), used in layer names.
        block: the block's letter within the stage ('a' in ResNet-50).
        s: stride of the first 1x1 conv and of the shortcut's 1x1 conv.
        seed: seeds the kernel initializers (None: random).
        bn_momentum: momentum of the batch norms' moving statistics.

    Returns:
        Output tensor of shape (batch, ceil(height / s), ceil(width / s), F3).
    """
    filters = _check_block_arguments("convolutional_block", X, f, filters, stage, block, s)
    names = layer_names(stage, block, shortcut=True)
    X_shortcut = X
    X = _main_path(X, f, filters, names, s=s, seed=seed, bn_momentum=bn_momentum)
    X_shortcut = _conv_bn(
        X_shortcut,
        filters[2],
        1,
        strides=s,
        padding="valid",
        conv_name=names["conv_1"],
        bn_name=names["bn_1"],
        seed=seed,
        bn_momentum=bn_momentum,
    )
    X = layers.Add(name=names["add"])([X, X_shortcut])
    return layers.ReLU(name=names["relu_out"])(X)
