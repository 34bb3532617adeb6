"""Tests of the grader, resnet_course.grading (the notebook's checks; trusted grading's data path is in
tests/test_grading_program.py, test_grading_data_path.py and test_grading_exercises_path.py).

The reference passes every check; each equivalent style of writing the blocks
passes; each typical mistake fails with its own message. The mistaken
students live in tests/student_mistakes.py.
"""

from __future__ import annotations

import re
import warnings

import pytest

from resnet_course import ResNet50, convolutional_block, identity_block
from resnet_course.grading import (
    CONVOLUTIONAL_BLOCK_CASES,
    IDENTITY_BLOCK_CASES,
    RESNET50_CASES,
    BlockCase,
    check_convolutional_block,
    check_identity_block,
    check_resnet50,
)
try:
    from student_mistakes import (
        DoubledConv2D,
        InferenceOnlyBatchNormalization,
        student_convolutional_block,
        student_identity_block,
        student_resnet50,
    )
except ImportError:  # tests/ imported as a package
    from tests.student_mistakes import (
        DoubledConv2D,
        InferenceOnlyBatchNormalization,
        student_convolutional_block,
        student_identity_block,
        student_resnet50,
    )

PASSED = "All tests passed.\n"


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _message(check, fn, **kwargs) -> str:
    with pytest.raises(AssertionError) as info:
        check(fn, **kwargs)
    return str(info.value)


# --- the reference passes ------------------------------------------------------


def test_reference_identity_block_passes(capsys):
    check_identity_block(identity_block)
    assert capsys.readouterr().out == PASSED


def test_reference_convolutional_block_passes(capsys):
    check_convolutional_block(convolutional_block)
    assert capsys.readouterr().out == PASSED


RESNET50_PROGRESS = (
    "case 1 of 2 passed: {name}(input_shape=(64, 64, 3), classes=6)\n"
    "case 2 of 2 passed: {name}(input_shape=(96, 64, 1), classes=3)\n"
)


def test_reference_resnet50_passes(capsys):
    check_resnet50(ResNet50)
    assert capsys.readouterr().out == RESNET50_PROGRESS.format(name="ResNet50") + PASSED


def test_cases_cover_the_issue():
    """The (4, 4, 6), f=2, [2, 4, 6] case, a non-square input, other f/filters/stage/block, s=1 and s=3."""
    for cases in (IDENTITY_BLOCK_CASES, CONVOLUTIONAL_BLOCK_CASES):
        assert cases[0] == BlockCase((4, 4, 6), 2, (2, 4, 6), 1, "a")
        assert any(c.input_shape[0] != c.input_shape[1] for c in cases)
        assert any(c.f != 2 and c.filters != (2, 4, 6) and c.stage != 1 and c.block != "a" for c in cases)
    assert {c.s for c in CONVOLUTIONAL_BLOCK_CASES} >= {None, 1, 3}
    assert RESNET50_CASES[0].input_shape == (64, 64, 3) and RESNET50_CASES[0].classes == 6


# --- equivalent styles pass -----------------------------------------------------

STYLES = {
    "Activation('relu')": dict(relu="activation"),
    "keras.activations.relu(X)": dict(relu="function"),
    "keras.ops.relu(X)": dict(relu="ops"),
    "Lambda relu": dict(relu="lambda"),
    "layers.add": dict(add="add"),
    "Add inputs swapped": dict(add="swap"),
    "X + X_shortcut": dict(add="plus"),
    "keras.ops.add": dict(add="ops"),
    "tuple kernels and strides": dict(tuples=True),
    "renamed activations": dict(relu_names="custom"),
    "unnamed activations and Add": dict(relu_names="none", relu="activation"),
    "axis=-1, padding='SAME'": dict(bn_negative_axis=True, padding_upper=True),
}


@pytest.mark.parametrize("options", STYLES.values(), ids=STYLES.keys())
def test_identity_block_styles_pass(options, capsys):
    check_identity_block(student_identity_block(**options))
    assert capsys.readouterr().out == PASSED


@pytest.mark.parametrize(
    "options",
    [dict(relu="activation", add="swap", tuples=True), dict(add="plus", relu="function", relu_names="none")],
    ids=["Activation, swapped Add, tuples", "X + X_shortcut, relu function"],
)
def test_convolutional_block_styles_pass(options, capsys):
    check_convolutional_block(student_convolutional_block(**options))
    assert capsys.readouterr().out == PASSED


def test_resnet50_styles_pass(capsys):
    """Dense then Activation('softmax'), unnamed stem ReLU, blocks written with ops."""
    student = student_resnet50(
        softmax="activation",
        identity_block=student_identity_block(relu="function", add="plus", relu_names="none"),
        convolutional_block=student_convolutional_block(relu="activation", add="swap", tuples=True),
    )
    check_resnet50(student)
    assert capsys.readouterr().out == RESNET50_PROGRESS.format(name=student.__name__) + PASSED


# --- mistakes in the blocks ---------------------------------------------------------

IDENTITY_MISTAKES = {
    "missing final ReLU": (dict(final_relu=False), r"'res1a_relu' \(layer 11 of 11, after the Add\) is missing.*missing final ReLU"),
    "ReLU before the Add": (dict(relu_before_add=True), r"The Add 'res1a' isn't followed by a ReLU, but a ReLU .* sits before the Add"),
    "BN on the wrong axis": (dict(bn_axis=1), r"'bn1a_branch2a' \(layer 3 of 11, main path\): BatchNormalization normalises axis 1, expected axis 3"),
    "valid padding on the fxf conv": (dict(padding_2b="valid"), r"raised ValueError(.|\n)*Why: Layer 'res1a_branch2b' \(layer 5 of 11, main path\) has padding 'valid', expected 'same'"),
    "F1 and F2 mixed up": (dict(filter_order=(1, 0, 2)), r"'res1a_branch2a' .* has 4 filters, expected 2 \(F1.*\n.*did you mix up F1, F2 and F3"),
    "F1 for F3": (dict(filter_order=(0, 1, 0)), r"Why: Layer 'res1a_branch2c' .* has 2 filters, expected 6 \(F3.*\n.*did you mix up"),
    "kernel 3 instead of f": (dict(kernel_2b=3), r"'res1a_branch2b' .* has kernel_size \(3, 3\), expected \(2, 2\) = \(f, f\)"),
    "missing BN": (dict(skip_bn="2b"), r"'bn1a_branch2b' \(layer 6 of 11, main path\) is missing: expected BatchNormalization"),
    "missing names": (dict(names="none"), r"expected the name 'res1a_branch2a', found 'conv2d(_\d+)?' \(an automatic name"),
    "misspelt name": (dict(names="misspelt"), r"expected the name 'res1a_branch2b', found 'res1a_branch_2b'.\nHint: check the spelling"),
    # every misnamed layer in one list, the shared fix said once (issue 13)
    "names fixed to stage 2 block a": (dict(names="hardcoded"), r"layers don't have the course's names:\n- (.|\n)*found 'res2a_branch2a'(.|\n)*\nHint: build the names from the stage and block"),
    "BN and ReLU swapped": (dict(bn_relu_swapped=True), r"'bn1a_branch2a' .* wrong order"),
    "conv without bias": (dict(use_bias=False), r"'res1a_branch2a' .* has use_bias=False"),
    "ReLU inside the conv": (dict(conv_activation="relu"), r"'res1a_branch2a' .* has activation 'relu', expected none"),
    "shortcut from inside the main path": (dict(shortcut_from="after_2a"), r"Why: the shortcut is taken from .*'res1a_branch2a', inside the main path"),
    "ReLU6 after the Add": (dict(relu6=True), r"'res1a_relu' .*: expected ReLU after Add 'res1a', found ReLU\(max_value=6.0\)"),
    "no return": (dict(return_none=True), r"identity_block returned None(.|\n)*return X"),
    "numbers differ": (dict(conv_layer=DoubledConv2D), r"'res1a_branch2b' .* computes other numbers than the reference in inference mode"),
    "training mode differs": (dict(bn_layer=InferenceOnlyBatchNormalization), r"'bn1a_branch2a' .* computes other numbers than the reference in training mode"),
}


@pytest.mark.parametrize("options, pattern", IDENTITY_MISTAKES.values(), ids=IDENTITY_MISTAKES.keys())
def test_identity_block_mistakes(options, pattern):
    message = _message(check_identity_block, student_identity_block(**options))
    assert message.startswith("identity_block ")
    assert "case 1 of 3" in message
    assert re.search(pattern, message), message
    assert "Hint: " in message


CONVOLUTIONAL_MISTAKES = {
    "stride on the fxf conv (v1.5)": (dict(stride_on="2b"), r"the stride s=2 is on 'res1a_branch2b' \(the fxf conv\) but the course's ResNet v1 puts it on the first 1x1 conv 'res1a_branch2a'; moving it to the fxf conv is ResNet v1.5"),
    "shortcut without projection": (dict(projection=False), r"raised ValueError(.|\n)*Why: Layer 'res1a_branch1' \(layer 10 of 13, shortcut\) is missing: the shortcut of the convolutional block has no projection"),
    "shortcut without BN": (dict(shortcut_bn=False), r"'bn1a_branch1' \(layer 11 of 13, shortcut\) is missing: the shortcut has no BatchNormalization"),
    "shortcut with the wrong stride": (dict(shortcut_stride=1), r"Why: Layer 'res1a_branch1' .*: the shortcut's conv has strides \(1, 1\), expected \(2, 2\) = \(s, s\)"),
    "missing final ReLU": (dict(final_relu=False), r"'res1a_relu' \(layer 13 of 13, after the Add\) is missing.*missing final ReLU"),
    "ReLU before the Add": (dict(relu_before_add=True), r"isn't followed by a ReLU, but a ReLU .* sits before the Add"),
    "missing BN": (dict(skip_bn="2a"), r"'bn1a_branch2a' \(layer 3 of 13, main path\) is missing"),
}


@pytest.mark.parametrize("options, pattern", CONVOLUTIONAL_MISTAKES.values(), ids=CONVOLUTIONAL_MISTAKES.keys())
def test_convolutional_block_mistakes(options, pattern):
    message = _message(check_convolutional_block, student_convolutional_block(**options))
    assert message.startswith("convolutional_block ")
    assert "case 1 of 3" in message and "(s left at its default, 2)" in message
    assert re.search(pattern, message), message


def test_missing_projection_is_caught_when_shapes_match():
    """With s=1 and F3 equal to X's channels, the identity shortcut builds: still caught."""
    case = BlockCase((6, 9, 5), 3, (4, 2, 5), 3, "b", s=1)
    message = _message(check_convolutional_block, student_convolutional_block(projection=False), cases=[case])
    assert "raised" not in message
    assert re.search(r"'res3b_branch1' \(layer 10 of 13, shortcut\) is missing: the shortcut .* has no projection", message)


def test_convolutional_block_ignoring_s():
    """A block with a fixed stride 2 passes the s=2 case and fails the s=1 one."""
    fixed = student_convolutional_block()

    def convolutional_block(X, f, filters, stage, block, s=2):
        return fixed(X, f, filters, stage, block, 2)

    message = _message(check_convolutional_block, convolutional_block)
    assert "case 2 of 3" in message and "s=1" in message
    assert "the block doesn't use s=1" in message


def test_student_exception_names_the_case_and_line():
    message = _message(check_identity_block, student_identity_block(undefined_name=True))
    assert message.startswith("identity_block raised NameError on case 1 of 3: identity_block(X, f=2, filters=[2, 4, 6]")
    assert "name 'F2' is not defined" in message
    assert re.search(r'File ".*student_mistakes.py", line \d+, in _block: X = Conv2D\(F2', message)
    assert "Hint: a name is not defined" in message


def test_wrong_signature_is_reported():
    def identity_block(X, f, filters, stage):
        return X

    message = _message(check_identity_block, identity_block)
    assert "raised TypeError" in message
    assert "keep that signature" in message


def test_message_names_layer_expected_found_and_hint():
    message = _message(check_identity_block, student_identity_block(bn_axis=1))
    lines = message.splitlines()
    assert lines[0] == (
        "identity_block failed on case 1 of 3: identity_block(X, f=2, filters=[2, 4, 6], stage=1, block='a') "
        "with X = keras.Input(shape=(4, 4, 6))."
    )
    assert lines[1] == (
        "Layer 'bn1a_branch2a' (layer 3 of 11, main path): BatchNormalization normalises axis 1, expected axis 3 "
        "(the channels axis in NHWC)."
    )
    assert lines[2] == "Hint: use BatchNormalization(axis=3)."


# --- mistakes in ResNet-50 -----------------------------------------------------------

STAGE_FILTERS = ((64, 64, 256), (128, 128, 512), (256, 256, 1024), (512, 512, 2048))
CASE_2 = [RESNET50_CASES[1]]

MODEL_MISTAKES = {
    "126 filters for 128 in stage 3": (
        dict(filters=(STAGE_FILTERS[0], (126, 128, 512)) + STAGE_FILTERS[2:]), None,
        r"Wrong filter count in stage 3: Layer 'res3a_branch2a' \(layer 39 of 177, stage 3, convolutional block res3a, main path\) has 126 filters, expected 128",
    ),
    "wrong stride in stage 3": (dict(strides=(1, 1, 2, 2)), None, r"Wrong stride in stage 3: the convolutional block res3a uses s=1, expected s=2"),
    "wrong stride in stage 2 (the model no longer builds)": (
        dict(strides=(2, 2, 2, 2)), None, r"raised ValueError(.|\n)*Why: Wrong stride in stage 2: the convolutional block res2a uses s=2, expected s=1",
    ),
    "2 identity blocks in stage 3": (
        dict(identity_blocks=(2, 2, 5, 2)), None,
        r"Wrong number of identity blocks in stage 3: found 2 after the convolutional block res3a, expected 3 \(res3b, res3c, res3d\)",
    ),
    "6 identity blocks in stage 4": (dict(identity_blocks=(2, 3, 6, 2)), None, r"Wrong number of identity blocks in stage 4: found 6 .* expected 5"),
    "convolutional blocks everywhere": (dict(all_convolutional=True), None, r"Wrong number of stages: your model has 16 convolutional blocks .* expected 4"),
    "missing max-pool": (dict(max_pool=False), None, r"'pool1' \(layer 6 of 177, stem\) is missing: the stem has no max-pool"),
    "missing zero-padding": (dict(zero_pad=False), None, r"'conv1_pad' \(layer 2 of 177, stem\) is missing: the stem has no zero-padding"),
    "missing stem BN": (dict(stem_bn=False), None, r"'bn_conv1' \(layer 4 of 177, stem\) is missing"),
    "Dense without softmax": (dict(softmax="none"), None, r"'fc6' \(layer 177 of 177, head\): the Dense layer has activation 'linear', expected 'softmax'"),
    "global pooling": (dict(head="gap"), None, r"'avg_pool' .* expected AveragePooling2D.*found GlobalAveragePooling2D"),
    "missing Flatten": (dict(head="no_flatten"), None, r"'flatten' \(layer 176 of 177, head\) is missing"),
    "extra Dropout": (dict(dropout=True), None, r"Unexpected layer Dropout\(0.5\)"),
    "classes ignored": (dict(fixed_classes=6), CASE_2, r"case 1 of 1: ResNet50\(input_shape=\(96, 64, 1\), classes=3\)(.|\n)*has 6 units, expected 3 \(classes\)"),
    "input_shape ignored": (dict(fixed_input=(64, 64, 3)), CASE_2, r"input has shape \(None, 64, 64, 3\), expected \(None, 96, 64, 1\)"),
    "returns a tensor": (dict(return_tensor=True), None, r"ResNet50 returned KerasTensor, expected a keras.Model"),
    "identity block without final ReLU": (
        dict(identity_block=student_identity_block(final_relu=False)), None,
        r"'res2b_relu' \(layer 28 of 177, stage 2, identity block res2b, after the Add\) is missing.*missing final ReLU",
    ),
    "v1.5 convolutional block": (dict(convolutional_block=student_convolutional_block(stride_on="2b")), None, r"res3a_branch2b.*ResNet v1.5"),
    "identity block with valid padding": (
        dict(identity_block=student_identity_block(padding_2b="valid")), None,
        r"raised ValueError(.|\n)*Why: Layer 'res2b_branch2b' \(layer 22 of 177, stage 2, identity block res2b, main path\) has padding 'valid'",
    ),
}


@pytest.mark.parametrize("options, cases, pattern", MODEL_MISTAKES.values(), ids=MODEL_MISTAKES.keys())
def test_resnet50_mistakes(options, cases, pattern):
    kwargs = {} if cases is None else {"cases": cases}
    message = _message(check_resnet50, student_resnet50(**options), **kwargs)
    assert message.startswith("ResNet50 ")
    assert re.search(pattern, message), message
    assert "Hint: " in message


# --- the same messages from models handed back as config JSON (trusted grading) ---------------------


def _handed_back(outcome):
    """``outcome`` as the trusted grader sees it: its models rebuilt from their config JSON."""
    from resnet_course.grading.allowlist import load_model

    if outcome.model is not None:
        outcome.model = load_model(outcome.model.to_json())
    if outcome.diagnosis_model is not None:
        outcome.diagnosis_model = load_model(outcome.diagnosis_model.to_json())
    return outcome


def _judged_after_handback(fn_name, fn, case, count):
    from resnet_course.grading.calls import call_block
    from resnet_course.grading.checks import clear_session, judge_block, reference_block

    clear_session()
    reference = reference_block(fn_name, case)
    outcome = _handed_back(call_block(fn, fn_name, case))
    with pytest.raises(AssertionError) as info:
        judge_block(fn_name, 1, count, case, outcome, reference)
    return str(info.value)


SERIALISABLE_IDENTITY_MISTAKES = {k: v for k, v in IDENTITY_MISTAKES.items()
                                  if "conv_layer" not in v[0] and "bn_layer" not in v[0]}


@pytest.mark.parametrize("options", [v[0] for v in SERIALISABLE_IDENTITY_MISTAKES.values()],
                         ids=SERIALISABLE_IDENTITY_MISTAKES.keys())
def test_identity_block_mistakes_word_for_word_after_handback(options):
    fn = student_identity_block(**options)
    direct = _message(check_identity_block, fn)
    assert _judged_after_handback("identity_block", fn, IDENTITY_BLOCK_CASES[0], 3) == direct


@pytest.mark.parametrize("options", [v[0] for v in CONVOLUTIONAL_MISTAKES.values()], ids=CONVOLUTIONAL_MISTAKES.keys())
def test_convolutional_block_mistakes_word_for_word_after_handback(options):
    fn = student_convolutional_block(**options)
    direct = _message(check_convolutional_block, fn)
    assert _judged_after_handback("convolutional_block", fn, CONVOLUTIONAL_BLOCK_CASES[0], 3) == direct


@pytest.mark.slow
@pytest.mark.parametrize("name", ["wrong stride in stage 3", "wrong stride in stage 2 (the model no longer builds)",
                                  "missing max-pool", "Dense without softmax", "returns a tensor"])
def test_resnet50_mistakes_word_for_word_after_handback(name):
    from resnet_course.grading.calls import call_resnet50
    from resnet_course.grading.checks import clear_session, judge_resnet50, reference_resnet50

    options, cases, _ = MODEL_MISTAKES[name]
    case = (cases or RESNET50_CASES)[0]
    fn = student_resnet50(**options)
    direct = _message(check_resnet50, fn, cases=[case])
    clear_session()
    reference = reference_resnet50(tuple(case.input_shape), case.classes)
    outcome = _handed_back(call_resnet50(fn, case))
    with pytest.raises(AssertionError) as info:
        judge_resnet50(1, 1, case, outcome, reference)
    assert str(info.value) == direct
