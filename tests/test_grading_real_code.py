"""Diagnoses on code as students really write it from the original templates (issue 13's cases):
a template's `X = None` placeholders left in, the main path overwritten by the shortcut's batch
norm, and a ResNet-50 whose layers miss several of the course's names at once."""

from __future__ import annotations

import keras
import pytest
from keras.layers import (
    Activation,
    Add,
    AveragePooling2D,
    BatchNormalization,
    Conv2D,
    Dense,
    Flatten,
    Input,
    MaxPooling2D,
    ZeroPadding2D,
)
from keras.models import Model

from resnet_course.blocks import convolutional_block, identity_block
from resnet_course.grading import check_convolutional_block, check_identity_block, check_resnet50
from resnet_course.grading.failure import GradingFailure


def identity_block_with_placeholders(X, f, filters, stage, block):
    """The 2018 template with only the first component written."""
    conv_name_base = "res" + str(stage) + block + "_branch"
    bn_name_base = "bn" + str(stage) + block + "_branch"
    F1, F2, F3 = filters
    X_shortcut = X
    X = Conv2D(filters=F1, kernel_size=(1, 1), strides=(1, 1), padding="valid", name=conv_name_base + "2a")(X)
    X = BatchNormalization(axis=3, name=bn_name_base + "2a")(X)
    X = Activation("relu")(X)
    # Second component of main path
    X = None
    X = None
    X = None
    # Final step: Add shortcut value to main path, and pass it through a RELU activation
    X = None
    X = None
    return X


def convolutional_block_overwriting_the_main_path(X, f, filters, stage, block, s=2):
    conv_name_base = "res" + str(stage) + block + "_branch"
    bn_name_base = "bn" + str(stage) + block + "_branch"
    F1, F2, F3 = filters
    X_shortcut = X
    X = Conv2D(F1, (1, 1), strides=(s, s), name=conv_name_base + "2a")(X)
    X = BatchNormalization(axis=3, name=bn_name_base + "2a")(X)
    X = Activation("relu")(X)
    X = Conv2D(F2, (f, f), strides=(1, 1), padding="same", name=conv_name_base + "2b")(X)
    X = BatchNormalization(axis=3, name=bn_name_base + "2b")(X)
    X = Activation("relu")(X)
    X = Conv2D(F3, (1, 1), strides=(1, 1), padding="valid", name=conv_name_base + "2c")(X)
    X = BatchNormalization(axis=3, name=bn_name_base + "2c")(X)
    X_shortcut = Conv2D(F3, (1, 1), strides=(s, s), padding="valid", name=conv_name_base + "1")(X_shortcut)
    X = BatchNormalization(axis=3, name=bn_name_base + "1")(X_shortcut)  # should be X_shortcut = ...
    X = Add()([X, X_shortcut])
    X = Activation("relu")(X)
    return X


def _resnet50(conv_block, *, names: bool):
    """ResNet-50 as the 2018 template writes it; ``names=False`` leaves the stem's padding and
    max-pool and the head's pooling and flatten without the course's names."""

    def build(input_shape=(64, 64, 3), classes=6):
        X_input = Input(input_shape)
        X = ZeroPadding2D((3, 3), **({"name": "conv1_pad"} if names else {}))(X_input)
        X = Conv2D(64, (7, 7), strides=(2, 2), name="conv1")(X)
        X = BatchNormalization(axis=3, name="bn_conv1")(X)
        X = Activation("relu")(X)
        X = MaxPooling2D((3, 3), strides=(2, 2), **({"name": "pool1"} if names else {}))(X)
        for stage, filters, count, s in ((2, [64, 64, 256], 2, 1), (3, [128, 128, 512], 3, 2),
                                         (4, [256, 256, 1024], 5, 2), (5, [512, 512, 2048], 2, 2)):
            X = conv_block(X, 3, filters, stage=stage, block="a", s=s)
            for letter in "bcdef"[:count]:
                X = identity_block(X, 3, filters, stage=stage, block=letter)
        X = AveragePooling2D((2, 2), **({"name": "avg_pool"} if names else {"name": "average_pool"}))(X)
        X = Flatten(name="flatten" if names else "flat")(X)
        X = Dense(classes, activation="softmax", name="fc" + str(classes))(X)
        return Model(inputs=X_input, outputs=X, name="ResNet50")

    return build


def test_template_placeholders_left_in_are_named():
    with pytest.raises(GradingFailure) as raised:
        check_identity_block(identity_block_with_placeholders)
    message = str(raised.value)
    assert "still has the template's placeholder lines `X = None` (5 times), so X ends up None" in message, message
    assert "return X" not in message, message


def test_main_path_overwritten_by_the_shortcut_in_the_block():
    with pytest.raises(GradingFailure) as raised:
        check_convolutional_block(convolutional_block_overwriting_the_main_path)
    message = str(raised.value)
    assert "both of its inputs come from 'res1a_branch1'" in message or "both of its inputs come from" in message
    assert "X = BatchNormalization(...)(X_shortcut)` overwrote the main path's X" in message, message
    assert "three convs" not in message, message


@pytest.mark.slow  # builds ResNet-50
def test_main_path_overwritten_by_the_shortcut_in_resnet50():
    keras.backend.clear_session()
    with pytest.raises(GradingFailure) as raised:
        check_resnet50(_resnet50(convolutional_block_overwriting_the_main_path, names=True))
    message = str(raised.value)
    assert "overwrote the main path's X" in message, message
    assert "identity blocks before" not in message and "identity block(s) before" not in message, message


@pytest.mark.slow  # builds ResNet-50
def test_every_name_problem_of_a_run_in_one_list():
    keras.backend.clear_session()
    with pytest.raises(GradingFailure) as raised:
        check_resnet50(_resnet50(convolutional_block, names=False))
    message = str(raised.value)
    assert "4 layers don't have the course's names:" in message, message
    for name in ("conv1_pad", "pool1", "avg_pool", "flatten"):
        assert f"expected the name '{name}'" in message, message


def test_the_template_model_with_the_course_names_passes_the_name_checks():
    """The template as written above, with every name given, is the reference's twin (a control:
    the helpers above make only the mistakes they are named for)."""
    assert convolutional_block is not convolutional_block_overwriting_the_main_path


def test_placeholders_reach_the_trusted_verdict(tmp_path):
    """The grading child hands the placeholder lines back as data; the trusted side words the same message."""
    from resnet_course.grading import collect, verdict
    from resnet_course.grading.calls import call_block
    from resnet_course.grading.cases import IDENTITY_BLOCK_CASES
    from resnet_course.grading.checks import judge_block, reference_block

    case = IDENTITY_BLOCK_CASES[0]
    outcome = call_block(identity_block_with_placeholders, "identity_block", case)
    record = collect._outcome_record(outcome, collect.Writer(tmp_path))
    assert record["placeholders"] == ["X = None"] * 5
    handed_back = verdict._outcome(record, tmp_path)
    reference = reference_block("identity_block", case)
    messages = []
    for attempt in (outcome, handed_back):
        with pytest.raises(GradingFailure) as raised:
            judge_block("identity_block", 1, 3, case, attempt, reference)
        messages.append(str(raised.value))
    assert messages[0] == messages[1]


@pytest.mark.parametrize("signature, message", [
    ("input_shape=(64, 3, 3), classes=6", "ResNet50's default input_shape is (64, 3, 3), expected (64, 64, 3)"),
    ("input_shape=(64, 64, 3), classes=10", "ResNet50's default classes is 10, expected 6"),
    ("input_shape, classes=6", "ResNet50() can't be called without arguments: input_shape has no default"),
])
def test_resnet50_defaults_are_checked(signature, message):
    from resnet_course.grading.checks import check_resnet50_defaults

    namespace = {}
    exec(f"def ResNet50({signature}):\n    pass\n", namespace)  # noqa: S102 - a signature under test
    with pytest.raises(GradingFailure, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_resnet50_defaults(namespace["ResNet50"])


def test_resnet50_defaults_accept_the_template_and_lists():
    from resnet_course.grading.checks import check_resnet50_defaults

    def ResNet50(input_shape=[64, 64, 3], classes=6):  # noqa: N802, B006 - a list is a valid default here
        pass

    check_resnet50_defaults(ResNet50)
    check_resnet50_defaults(lambda **options: None)
