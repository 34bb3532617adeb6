"""Student implementations for the grader's tests.

``student_block(**options)`` and ``student_resnet50(**options)`` build
functions with the signatures the grader calls, written the way students
write them. With no options they are correct; each option either switches to
an equivalent style (which must pass) or makes one typical mistake (which
must be caught with its own message).
"""

from __future__ import annotations

import string

import keras
from keras import layers
from keras.layers import (
    Activation,
    Add,
    AveragePooling2D,
    BatchNormalization,
    Conv2D,
    Dense,
    Flatten,
    GlobalAveragePooling2D,
    Input,
    MaxPooling2D,
    ReLU,
    ZeroPadding2D,
)
from keras.models import Model

from resnet_course.blocks import convolutional_block as reference_convolutional_block
from resnet_course.blocks import identity_block as reference_identity_block

class DoubledConv2D(Conv2D):
    """A Conv2D with the right settings that computes something else (only the numbers show it)."""

    def call(self, inputs):
        return super().call(inputs) * 2.0


class InferenceOnlyBatchNormalization(BatchNormalization):
    """A batch norm that always uses its moving statistics, even in training mode."""

    def call(self, inputs, training=None, mask=None):
        return super().call(inputs, training=False, mask=mask)


CORRECT_BLOCK = dict(
    relu="layer",              # "layer" ReLU(), "activation" Activation('relu'), "function", "ops", "lambda"
    add="Add",                 # "Add", "add" (layers.add), "swap", "plus" (X + X_shortcut), "ops"
    tuples=False,              # tuples for kernel sizes and strides
    relu_names="canonical",    # "canonical", "custom" or "none" (activations' names)
    names="canonical",         # "canonical", "none", "misspelt", "hardcoded"
    final_relu=True,
    relu_before_add=False,
    bn_axis=3,
    padding_2b="same",
    filter_order=(0, 1, 2),    # which of F1, F2, F3 each conv uses
    kernel_2b=None,            # None: f
    skip_bn=None,              # "2a", "2b", "2c" or "1": that batch norm is missing
    stride_on="2a",            # "2a" (ResNet v1) or "2b" (v1.5)
    projection=True,
    shortcut_bn=True,
    shortcut_stride=None,      # None: s
    bn_relu_swapped=False,
    use_bias=True,
    conv_activation=None,      # an activation inside the first conv
    shortcut_from="input",     # "input" or "after_2a"
    undefined_name=False,      # a NameError inside the block
    return_none=False,
    relu6=False,               # ReLU(max_value=6) after the Add
    bn_negative_axis=False,    # BatchNormalization(axis=-1), the same as axis=3
    padding_upper=False,       # padding="SAME" / "VALID"
    conv_layer=Conv2D,         # the class of the fxf conv
    bn_layer=BatchNormalization,  # the class of the first batch norm
)


def _relu(X, name, opts):
    if opts["relu_names"] == "custom":
        name = "my_" + name
    elif opts["relu_names"] == "none":
        name = None
    style = opts["relu"]
    if style == "layer":
        return ReLU(name=name)(X)
    if style == "activation":
        return Activation("relu", name=name)(X)
    if style == "function":
        return keras.activations.relu(X)
    if style == "ops":
        return keras.ops.relu(X)
    if style == "lambda":
        return layers.Lambda(lambda t: keras.ops.maximum(t, 0.0), name=name)(X)
    raise ValueError(style)


def _add(X, X_shortcut, name, opts):
    style = opts["add"]
    if style == "Add":
        return Add(name=name)([X, X_shortcut])
    if style == "add":
        return layers.add([X, X_shortcut], name=name)
    if style == "swap":
        return Add(name=name)([X_shortcut, X])
    if style == "plus":
        return X + X_shortcut
    if style == "ops":
        return keras.ops.add(X_shortcut, X)
    raise ValueError(style)


def _names(stage, block, opts):
    if opts["names"] == "hardcoded":
        stage, block = 2, "a"
    conv_base = f"res{stage}{block}_branch"
    bn_base = f"bn{stage}{block}_branch"

    def conv(branch):
        if opts["names"] == "none":
            return None
        if opts["names"] == "misspelt" and branch == "2b":
            return conv_base + "_2b"
        return conv_base + branch

    def bn(branch):
        if opts["names"] == "none":
            return None
        return bn_base + branch

    return conv, bn


def _block(X, f, filters, stage, block, s, opts):
    conv_name, bn_name = _names(stage, block, opts)
    F = [filters[i] for i in opts["filter_order"]]
    pair = (lambda n: (n, n)) if opts["tuples"] else (lambda n: n)
    is_conv_block = s is not None
    stride = s if is_conv_block else 1
    prefix = f"res{stage}{block}"

    axis = -1 if opts["bn_negative_axis"] else opts["bn_axis"]

    def bn_relu(X, branch, relu):
        if opts["bn_relu_swapped"] and relu:
            X = _relu(X, f"{prefix}_branch{branch}_relu", opts)
            return BatchNormalization(axis=axis, name=bn_name(branch))(X)
        if opts["skip_bn"] != branch:
            bn = opts["bn_layer"] if branch == "2a" else BatchNormalization
            X = bn(axis=axis, name=bn_name(branch))(X)
        if relu:
            X = _relu(X, f"{prefix}_branch{branch}_relu", opts)
        return X

    X_shortcut = X
    strides_2a = stride if opts["stride_on"] == "2a" else 1
    strides_2b = stride if opts["stride_on"] == "2b" else 1
    valid, same = ("VALID", "SAME") if opts["padding_upper"] else ("valid", "same")
    X = Conv2D(F[0], pair(1), strides=pair(strides_2a), padding=valid, name=conv_name("2a"),
               use_bias=opts["use_bias"], activation=opts["conv_activation"])(X)
    if opts["shortcut_from"] == "after_2a":
        X_shortcut = X
    X = bn_relu(X, "2a", True)
    if opts["undefined_name"]:
        X = Conv2D(F2, pair(f), padding="same")(X)  # noqa: F821 - the student's NameError
    kernel = opts["kernel_2b"] or f
    padding_2b = same if opts["padding_2b"] == "same" else opts["padding_2b"]
    X = opts["conv_layer"](F[1], pair(kernel), strides=pair(strides_2b), padding=padding_2b, name=conv_name("2b"),
                           use_bias=opts["use_bias"])(X)
    X = bn_relu(X, "2b", True)
    X = Conv2D(F[2], pair(1), strides=pair(1), padding="valid", name=conv_name("2c"),
               use_bias=opts["use_bias"])(X)
    X = bn_relu(X, "2c", False)
    if opts["relu_before_add"]:
        X = _relu(X, f"{prefix}_branch2c_relu", opts)

    if is_conv_block and opts["projection"]:
        shortcut_stride = opts["shortcut_stride"] or stride
        X_shortcut = Conv2D(F[2], pair(1), strides=pair(shortcut_stride), padding="valid", name=conv_name("1"),
                            use_bias=opts["use_bias"])(X_shortcut)
        if opts["shortcut_bn"] and opts["skip_bn"] != "1":
            X_shortcut = BatchNormalization(axis=opts["bn_axis"], name=bn_name("1"))(X_shortcut)

    X = _add(X, X_shortcut, prefix if opts["names"] != "none" else None, opts)
    if opts["relu6"]:
        X = ReLU(max_value=6.0, name=f"{prefix}_relu")(X)
    elif opts["final_relu"] and not opts["relu_before_add"]:
        X = _relu(X, f"{prefix}_relu", opts)
    if opts["return_none"]:
        return None
    return X


def student_identity_block(**options):
    """An identity_block(X, f, filters, stage, block), correct unless options say otherwise."""
    unknown = set(options) - set(CORRECT_BLOCK)
    if unknown:
        raise TypeError(f"unknown options {unknown}")
    opts = {**CORRECT_BLOCK, **options}

    def identity_block(X, f, filters, stage, block):
        return _block(X, f, filters, stage, block, None, opts)

    return identity_block


def student_convolutional_block(**options):
    """A convolutional_block(X, f, filters, stage, block, s=2), correct unless options say otherwise."""
    unknown = set(options) - set(CORRECT_BLOCK)
    if unknown:
        raise TypeError(f"unknown options {unknown}")
    opts = {**CORRECT_BLOCK, **options}

    def convolutional_block(X, f, filters, stage, block, s=2):
        return _block(X, f, filters, stage, block, s, opts)

    return convolutional_block


# --- ResNet-50 ---------------------------------------------------------------

CORRECT_MODEL = dict(
    filters=((64, 64, 256), (128, 128, 512), (256, 256, 1024), (512, 512, 2048)),
    strides=(1, 2, 2, 2),
    identity_blocks=(2, 3, 5, 2),
    zero_pad=True,
    max_pool=True,
    head="avg_flatten",        # "avg_flatten", "gap", "no_flatten"
    softmax="dense",           # "dense", "activation" (Dense then Activation('softmax')), "none"
    dropout=False,
    fixed_classes=None,        # a number: ignore the classes argument
    fixed_input=None,          # a shape: ignore the input_shape argument
    return_tensor=False,
    stem_bn=True,
    all_convolutional=False,   # convolutional blocks (s=1) where identity blocks belong
    identity_block=None,       # None: the reference's
    convolutional_block=None,  # None: the reference's
)


def student_resnet50(**options):
    """A ResNet50(input_shape=(64, 64, 3), classes=6), correct unless options say otherwise."""
    unknown = set(options) - set(CORRECT_MODEL)
    if unknown:
        raise TypeError(f"unknown options {unknown}")
    o = {**CORRECT_MODEL, **options}
    identity_block = o["identity_block"] or reference_identity_block
    convolutional_block = o["convolutional_block"] or reference_convolutional_block

    def ResNet50(input_shape=(64, 64, 3), classes=6):
        X_input = Input(o["fixed_input"] or input_shape)
        X = ZeroPadding2D((3, 3), name="conv1_pad")(X_input) if o["zero_pad"] else X_input
        X = Conv2D(64, (7, 7), strides=(2, 2), name="conv1")(X)
        if o["stem_bn"]:
            X = BatchNormalization(axis=3, name="bn_conv1")(X)
        X = Activation("relu")(X)
        if o["max_pool"]:
            X = MaxPooling2D((3, 3), strides=(2, 2), name="pool1")(X)
        for index, (filters, s, count) in enumerate(zip(o["filters"], o["strides"], o["identity_blocks"])):
            stage = 2 + index
            X = convolutional_block(X, 3, list(filters), stage, "a", s)
            for letter in string.ascii_lowercase[1 : count + 1]:
                if o["all_convolutional"]:
                    X = convolutional_block(X, 3, list(filters), stage, letter, 1)
                else:
                    X = identity_block(X, 3, list(filters), stage, letter)
        if o["head"] == "gap":
            X = GlobalAveragePooling2D(name="avg_pool")(X)
        else:
            X = AveragePooling2D((2, 2), name="avg_pool")(X)
            if o["head"] != "no_flatten":
                X = Flatten(name="flatten")(X)
        if o["dropout"]:
            X = layers.Dropout(0.5)(X)
        classes = o["fixed_classes"] or classes
        if o["softmax"] == "dense":
            X = Dense(classes, activation="softmax", name="fc" + str(classes))(X)
        else:
            X = Dense(classes, name="fc" + str(classes))(X)
            if o["softmax"] == "activation":
                X = Activation("softmax")(X)
        if o["return_tensor"]:
            return X
        return Model(inputs=X_input, outputs=X, name="ResNet50")

    return ResNet50
