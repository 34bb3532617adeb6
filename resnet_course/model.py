"""The reference ResNet-50 (v1) of the course, and its mapping to keras.applications.

The architecture, for the defaults (64x64x3 input, 6 classes):

    ZeroPadding2D(3) -> Conv2D 64 7x7 /2 -> BN -> ReLU -> MaxPooling2D 3x3 /2
    stage 2: convolutional block [64, 64, 256], s=1, + 2 identity blocks
    stage 3: convolutional block [128, 128, 512], s=2, + 3 identity blocks
    stage 4: convolutional block [256, 256, 1024], s=2, + 5 identity blocks
    stage 5: convolutional block [512, 512, 2048], s=2, + 2 identity blocks
    AveragePooling2D(2) -> Flatten -> Dense(classes, softmax)

23,600,006 parameters, of which 53,120 (the batch norms' moving statistics)
are not trainable.
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence

import keras
from keras import layers

from resnet_course.blocks import (
    CHANNEL_AXIS,
    convolutional_block,
    identity_block,
    kernel_initializer_for,
)

#: [F1, F2, F3] of every block of stages 2, 3, 4 and 5.
STAGE_FILTERS = ((64, 64, 256), (128, 128, 512), (256, 256, 1024), (512, 512, 2048))
#: Identity blocks after the convolutional block of stages 2, 3, 4 and 5.
STAGE_IDENTITY_BLOCKS = (2, 3, 5, 2)
#: Stride of each stage's convolutional block.
STAGE_STRIDES = (1, 2, 2, 2)
FIRST_STAGE = 2
MIDDLE_KERNEL = 3
POOLINGS = ("avg_pool", "global")
#: The stem's convolution, (kernel, stride, zero padding), for each choice of ``stem``:
#: ResNet-50's own 7x7 stride-2 conv, or the 3x3 stride-1 conv of He et al.'s CIFAR-10
#: ResNets, which keeps a 32x32 image at 32x32 into stage 2 (4x the FLOPs after the stem).
STEMS = {"imagenet": (7, 2, 3), "small": (3, 1, 1)}


def scaled_filters(width: float, filters: Sequence[Sequence[int]] = STAGE_FILTERS) -> tuple[tuple[int, ...], ...]:
    """Every stage's filters multiplied by ``width`` (e.g. 0.5 for half the filters)."""
    if width <= 0:
        raise ValueError(f"width must be positive, got {width!r}.")
    return tuple(tuple(max(1, round(n * width)) for n in stage) for stage in filters)


def _conv_output_size(size: int, kernel: int, stride: int, padding: str) -> int:
    if padding == "same":
        return math.ceil(size / stride)
    return (size - kernel) // stride + 1


def _check_model_arguments(input_shape, classes, filters, identity_blocks, pooling, stem_pool, stem,
                            stem_filters) -> None:
    """Fail with a clear message before Keras fails deep inside a layer."""
    def size(n) -> bool:
        return isinstance(n, int) and not isinstance(n, bool) and n > 0

    if len(input_shape) != 3 or not size(input_shape[2]) or not all(n is None or size(n) for n in input_shape[:2]):
        raise ValueError(
            f"ResNet50: input_shape must be (height, width, channels) of positive ints, got {input_shape!r} "
            "(e.g. (64, 64, 3) for SIGNS, (48, 48, 1) for FER-2013; (None, None, 3) takes any size "
            "with pooling='global')."
        )
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 2:
        raise ValueError(f"ResNet50: classes must be an int >= 2 (the softmax's size), got {classes!r}.")
    if len(filters) != len(identity_blocks):
        raise ValueError(
            f"ResNet50: filters has {len(filters)} stages but identity_blocks has {len(identity_blocks)}; "
            "give one [F1, F2, F3] and one identity-block count per stage."
        )
    if len(filters) > len(STAGE_STRIDES):
        raise ValueError(f"ResNet50: at most {len(STAGE_STRIDES)} stages, got {len(filters)}.")
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in identity_blocks):
        raise ValueError(f"ResNet50: identity_blocks must be ints >= 0, got {tuple(identity_blocks)!r}.")
    if pooling not in POOLINGS:
        raise ValueError(f"ResNet50: pooling must be one of {POOLINGS}, got {pooling!r}.")
    if stem not in STEMS:
        raise ValueError(f"ResNet50: stem must be one of {tuple(STEMS)}, got {stem!r}.")
    if not size(stem_filters):
        raise ValueError(f"ResNet50: stem_filters must be a positive int (the stem convolution's filters, "
                         f"64 in ResNet-50), got {stem_filters!r}.")

    if None in input_shape[:2]:
        if pooling != "global":
            raise ValueError(
                f"ResNet50: an input of any size ({input_shape!r}) needs pooling='global': the "
                "avg_pool head's Flatten needs a known size."
            )
        return
    stem_kernel, stem_stride, stem_padding = STEMS[stem]
    height, width = input_shape[:2]
    sizes = []
    for size in (height, width):
        size = _conv_output_size(size + 2 * stem_padding, stem_kernel, stem_stride, "valid")
        if stem_pool:
            size = _conv_output_size(size, 3, 2, "valid")
        for stride in STAGE_STRIDES[: len(filters)]:
            size = _conv_output_size(size, 1, stride, "valid")
        sizes.append(size)
    if min(sizes) < 1:
        raise ValueError(
            f"ResNet50: a {height}x{width} input shrinks to nothing before the last stage. "
            "Use a larger input, or stem_pool=False."
        )
    if pooling == "avg_pool" and min(sizes) < 2:
        raise ValueError(
            f"ResNet50: a {height}x{width} input leaves the last stage {sizes[0]}x{sizes[1]}, smaller than "
            "the 2x2 avg_pool of the head. For small images such as 32x32 pass stem_pool=False "
            "(no max-pool in the stem), or pooling='global' (global average pooling)."
        )


def ResNet50(
    input_shape=(64, 64, 3),
    classes=6,
    *,
    filters=STAGE_FILTERS,
    identity_blocks=STAGE_IDENTITY_BLOCKS,
    stem_pool=True,
    stem="imagenet",
    stem_filters=64,
    pooling="avg_pool",
    seed=None,
    bn_momentum=0.99,
    dropout=0.0,
    name="ResNet50",
):
    """Build the course's ResNet-50 as a ``keras.Model``.

    Arguments:
        input_shape: (height, width, channels); any number of channels. Height and
            width may be None (any size) with ``pooling="global"``: the training
            recipes that train on random crops test on whole images.
        classes: number of classes of the softmax.
        filters: [F1, F2, F3] per stage (see ``scaled_filters`` for thinner models).
        identity_blocks: number of identity blocks per stage, after its
            convolutional block.
        stem_pool: keep the stem's 3x3 max-pool; turn it off for 32x32 images.
        stem: the stem's convolution: ``"imagenet"`` (7x7, stride 2, as the course
            teaches) or ``"small"`` (3x3, stride 1: a 32x32 image enters stage 2 at
            32x32, at 4x the FLOPs). The layers keep their names.
        stem_filters: the stem convolution's filters (64 in ResNet-50). Thin models on
            large maps may want fewer: the stem's output and stage 2's first 1x1
            convolutions run at the stem's resolution.
        pooling: the head's pooling, ``"avg_pool"`` (a 2x2 AveragePooling2D and
            Flatten, as the course teaches) or ``"global"`` (global average
            pooling, for any input size).
        seed: seeds the kernel initializers, so the same seed gives the same model.
        bn_momentum: the batch norms' momentum. Keras' default 0.99 suits long
            training; short runs (a few hundred steps) want 0.9, or the moving
            statistics lag far behind the weights and test accuracy suffers.
        dropout: dropout rate before the classifier (0: none, as in the course).
        name: the model's name.
    """
    input_shape = tuple(input_shape)
    filters = tuple(tuple(stage) for stage in filters)
    identity_blocks = tuple(identity_blocks)
    _check_model_arguments(input_shape, classes, filters, identity_blocks, pooling, stem_pool, stem, stem_filters)
    stem_kernel, stem_stride, stem_padding = STEMS[stem]
    block_options = dict(seed=seed, bn_momentum=bn_momentum)

    X_input = keras.Input(shape=input_shape, name="input")
    X = layers.ZeroPadding2D(stem_padding, name="conv1_pad")(X_input)
    X = layers.Conv2D(
        stem_filters, stem_kernel, strides=stem_stride, name="conv1",
        kernel_initializer=kernel_initializer_for("conv1", seed),
    )(X)
    X = layers.BatchNormalization(axis=CHANNEL_AXIS, momentum=bn_momentum, name="bn_conv1")(X)
    X = layers.ReLU(name="conv1_relu")(X)
    if stem_pool:
        X = layers.MaxPooling2D(3, strides=2, name="pool1")(X)

    for index, (stage_filters, identities) in enumerate(zip(filters, identity_blocks)):
        stage = FIRST_STAGE + index
        X = convolutional_block(X, MIDDLE_KERNEL, stage_filters, stage, "a", s=STAGE_STRIDES[index], **block_options)
        for letter in string.ascii_lowercase[1 : identities + 1]:
            X = identity_block(X, MIDDLE_KERNEL, stage_filters, stage, letter, **block_options)

    if pooling == "avg_pool":
        X = layers.AveragePooling2D(2, name="avg_pool")(X)
        X = layers.Flatten(name="flatten")(X)
    else:
        X = layers.GlobalAveragePooling2D(name="avg_pool")(X)
    if dropout:
        X = layers.Dropout(dropout, name="dropout")(X)
    classifier = f"fc{classes}"
    # float32 softmax even under a mixed-precision policy, for a stable loss.
    X = layers.Dense(
        classes,
        activation="softmax",
        name=classifier,
        kernel_initializer=kernel_initializer_for(classifier, seed),
        dtype="float32",
    )(X)
    return keras.Model(inputs=X_input, outputs=X, name=name)


def stage_output_names(model: keras.Model) -> list[str]:
    """Names of the layers whose outputs end the stem and each stage."""
    names = ["pool1" if any(layer.name == "pool1" for layer in model.layers) else "conv1_relu"]
    names += [layer.name for layer in model.layers if layer.name.startswith("res") and layer.name.endswith("_relu")
              and "branch" not in layer.name]
    # Keep only the last block of each stage.
    last_per_stage = {}
    for name in names[1:]:
        last_per_stage[name[3]] = name
    return names[:1] + list(last_per_stage.values())


# --- keras.applications -----------------------------------------------------

_BRANCH_TO_APPLICATIONS = {"branch1": "0", "branch2a": "1", "branch2b": "2", "branch2c": "3"}


def keras_applications_name(name: str) -> str | None:
    """The keras.applications ResNet50 name of our layer ``name`` (None: no counterpart).

    >>> keras_applications_name("res3b_branch2a"), keras_applications_name("bn_conv1")
    ('conv3_block2_1_conv', 'conv1_bn')
    """
    if name == "conv1":
        return "conv1_conv"
    if name == "bn_conv1":
        return "conv1_bn"
    if name.startswith("fc") and name[2:].isdigit():
        return "predictions"
    for prefix, suffix in (("res", "conv"), ("bn", "bn")):
        if name.startswith(prefix) and "_branch" in name:
            block_id, branch = name[len(prefix) :].split("_", 1)
            if branch not in _BRANCH_TO_APPLICATIONS or len(block_id) < 2:
                return None
            stage, letter = block_id[:-1], block_id[-1]
            block_number = string.ascii_lowercase.index(letter) + 1
            return f"conv{stage}_block{block_number}_{_BRANCH_TO_APPLICATIONS[branch]}_{suffix}"
    return None


def load_keras_applications_weights(model: keras.Model, source) -> list[str]:
    """Copy the weights of a keras.applications ResNet50 into our model, by name.

    Arguments:
        model: a model built by ``ResNet50`` (3 input channels for ImageNet weights).
        source: a ``keras.applications.ResNet50`` model, or ``"imagenet"`` to
            build one with ImageNet weights (downloaded by Keras on first use).

    Returns:
        The names of our layers that received weights. The classifier is
        copied only when both have the same number of classes.

    The two models compute the same function up to the first batch norm.
    After that they differ in two places, so activations are close but not
    equal: keras.applications' batch norms use epsilon 1.001e-5 (ours use
    Keras' default 1e-3), and keras.applications zero-pads by 1 before its
    3x3 max-pool (``pool1_pad``), so its stage 2 sees a 16x16 map for a 64x64
    input where ours sees 15x15.
    """
    if isinstance(source, str):
        if source != "imagenet":
            raise ValueError(f"source must be a keras.applications ResNet50 model or 'imagenet', got {source!r}.")
        source = keras.applications.ResNet50(weights="imagenet", include_top=False, input_shape=model.input_shape[1:])
    source_layers = {layer.name: layer for layer in source.layers}
    copied = []
    for layer in model.layers:
        counterpart = source_layers.get(keras_applications_name(layer.name) or "")
        if counterpart is None or not layer.weights:
            continue
        ours = [tuple(w.shape) for w in layer.get_weights()]
        theirs = [tuple(w.shape) for w in counterpart.get_weights()]
        if ours != theirs:
            if layer.name.startswith("fc"):
                continue  # another number of classes: keep our classifier
            raise ValueError(
                f"Layer {layer.name} has weights of shapes {ours} but keras.applications' "
                f"{counterpart.name} has {theirs}; build our model with the default filters and stem "
                "(and 3 input channels for ImageNet weights)."
            )
        layer.set_weights(counterpart.get_weights())
        copied.append(layer.name)
    if not copied:
        raise ValueError(
            f"No layer of {source.name!r} matched ours by name: is it a keras.applications ResNet50?"
        )
    return copied

