"""The checks: each calls the student's function on its cases, then judges what the call gave.

A call's result is first captured as a ``CallOutcome`` (the exception raised, what was returned, or
the model built), then judged against the reference built live for the same case. The notebook's
checks do both in one process; the trusted grader judges outcomes that a separate process captured
and handed back as data (``collect`` and ``verdict``), so both give the same messages.
"""

from __future__ import annotations

import keras

from resnet_course import blocks as _blocks
from resnet_course import model as _model
from resnet_course.grading.calls import CallOutcome, call_block, call_resnet50
from resnet_course.grading.cases import (
    CONVOLUTIONAL_BLOCK_CASES,
    IDENTITY_BLOCK_CASES,
    RESNET50_CASES,
)
from resnet_course.grading.comparison import compare_graphs
from resnet_course.grading.exception_messages import (
    diagnose_add_failure,
    diagnose_model_failure,
    model_error_text,
    student_exception,
)
from resnet_course.grading.failure import GradingFailure
from resnet_course.grading.messages import Context, Failure, shape_text

PASSED = "All tests passed."

#: the reference function of each block exercise
BLOCK_REFERENCES = {
    "identity_block": _blocks.identity_block,
    "convolutional_block": _blocks.convolutional_block,
}


# --- the public checks ------------------------------------------------------


def check_identity_block(fn, *, cases=IDENTITY_BLOCK_CASES) -> None:
    """Check ``fn(X, f, filters, stage, block)`` against the reference identity block.

    Prints "All tests passed." or raises GradingFailure (an AssertionError) on the first failure.
    """
    _check_block(fn, "identity_block", cases)


def check_convolutional_block(fn, *, cases=CONVOLUTIONAL_BLOCK_CASES) -> None:
    """Check ``fn(X, f, filters, stage, block, s=2)`` against the reference convolutional block.

    Prints "All tests passed." or raises GradingFailure (an AssertionError) on the first failure.
    """
    _check_block(fn, "convolutional_block", cases)


def check_resnet50(fn, *, cases=RESNET50_CASES) -> None:
    """Check ``fn(input_shape=(64, 64, 3), classes=6)`` against the reference ResNet-50, and
    ``fn``'s own defaults (``ResNet50()`` must build that same model).

    Prints a line per case as it passes (with more than one case: each takes seconds), then
    "All tests passed.", or raises GradingFailure (an AssertionError) on the first failure.
    """
    cases = tuple(cases)
    clear_session()
    name = getattr(fn, "__name__", "ResNet50")
    for number, case in enumerate(cases, 1):
        reference = reference_resnet50(tuple(case.input_shape), case.classes)
        judge_resnet50(number, len(cases), case, call_resnet50(fn, case), reference)
        if len(cases) > 1:  # each case takes seconds: show that the check is moving
            print(f"case {number} of {len(cases)} passed: {case.describe(name)}", flush=True)
    check_resnet50_defaults(fn)
    print(PASSED)


#: ResNet50()'s defaults in the course: SIGNS' 64x64 RGB images, 6 classes
RESNET50_DEFAULTS = {"input_shape": (64, 64, 3), "classes": 6}


def check_resnet50_defaults(fn) -> None:
    """``ResNet50()`` with no arguments must build the SIGNS model: its defaults are checked from its
    signature (building a second ResNet-50 would cost seconds and say no more)."""
    import inspect

    name = getattr(fn, "__name__", "ResNet50")
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # no signature to read (a builtin, a C function): nothing to say
        return
    wanted = "def ResNet50(input_shape=(64, 64, 3), classes=6):"
    for argument, expected in RESNET50_DEFAULTS.items():
        parameter = parameters.get(argument)
        if parameter is None or parameter.kind is inspect.Parameter.VAR_KEYWORD:
            continue  # the cases above called it with these keywords, so it takes them somehow
        if parameter.default is inspect.Parameter.empty:
            raise GradingFailure(f"{name}() can't be called without arguments: {argument} has no default, "
                                 f"expected {expected!r}.\nHint: keep the template's first line, `{wanted}`")
        found = parameter.default
        same = tuple(found) == expected if isinstance(found, (tuple, list)) else found == expected
        if not same:
            raise GradingFailure(f"{name}'s default {argument} is {found!r}, expected {expected!r}: "
                                 f"{name}() must build the model for SIGNS' 64x64 RGB images and 6 classes."
                                 f"\nHint: keep the template's first line, `{wanted}`")


def _check_block(fn, fn_name, cases) -> None:
    cases = tuple(cases)
    clear_session()
    for number, case in enumerate(cases, 1):
        reference = reference_block(fn_name, case)
        judge_block(fn_name, number, len(cases), case, call_block(fn, fn_name, case), reference)
    print(PASSED)


# --- the references -----------------------------------------------------------

_REFERENCES: dict = {}


def reference_block(fn_name, case) -> keras.Model:
    """The reference block for one case, as a model named "reference" on an input named "X"."""
    extra = () if case.s is None else (case.s,)
    X_ref = keras.Input(shape=tuple(case.input_shape), name="X")
    output = BLOCK_REFERENCES[fn_name](X_ref, case.f, list(case.filters), case.stage, case.block, *extra)
    return keras.Model(X_ref, output, name="reference")


def reference_resnet50(input_shape, classes) -> keras.Model:
    """The reference ResNet-50 for one case, built live once per session (the last two are kept)."""
    key = (keras.backend.backend(), keras.config.floatx(), input_shape, classes)
    if key not in _REFERENCES:
        while len(_REFERENCES) >= 2:
            _REFERENCES.pop(next(iter(_REFERENCES)))
        _REFERENCES[key] = _model.ResNet50(input_shape=input_shape, classes=classes)
    return _REFERENCES[key]


def clear_session() -> None:
    """Reset Keras' automatic names (no garbage collection: it costs seconds in a big session)."""
    try:
        keras.backend.clear_session(free_memory=False)
    except TypeError:  # Keras before 3.7 has no free_memory
        keras.backend.clear_session()


# --- judging what a call gave ---------------------------------------------------


def judge_block(fn_name, number, count, case, outcome: CallOutcome, reference) -> None:
    """Raise GradingFailure with the diagnosis unless ``outcome`` is the reference block's equal."""
    header = f"{fn_name} failed on case {number} of {count}: {case.describe(fn_name)}."
    if outcome.raised is not None:
        cause = diagnose_add_failure(fn_name, case, reference, outcome.diagnosis_model)
        raise GradingFailure(
            student_exception(fn_name, number, count, case, outcome.raised, mode=fn_name, cause=cause)
        ) from None
    if outcome.returned_type == "NoneType" and outcome.placeholders:
        lines = list(dict.fromkeys(outcome.placeholders))
        counted = ", ".join(f"`{line}`" + (f" ({outcome.placeholders.count(line)} times)"
                                           if outcome.placeholders.count(line) > 1 else "") for line in lines)
        raise GradingFailure(
            f"{header}\n{outcome.name} returned None: your function still has the template's placeholder "
            f"{'lines' if len(outcome.placeholders) > 1 else 'line'} {counted}, so X ends up None.\n"
            "Hint: replace each `= None` with the layer it stands for, applied to X "
            "(e.g. `X = layers.Activation('relu')(X)`), as the comment above it says."
        )
    if outcome.returned_type == "NoneType":
        raise GradingFailure(
            f"{header}\n{outcome.name} returned None, expected the block's output tensor.\n"
            "Hint: end the function with `return X`."
        )
    if outcome.returned_type is not None:
        raise GradingFailure(
            f"{header}\n{outcome.name} returned {outcome.returned_type}, expected the block's output tensor "
            "(the result of the last layer, a KerasTensor).\nHint: end the function with `return X`."
        )
    if outcome.model_error is not None:
        raise GradingFailure(f"{header}\n{model_error_text(*outcome.model_error)}") from None
    _compare_or_fail(Context(fn_name, header, "block", case, reference, outcome.model))


def judge_resnet50(number, count, case, outcome: CallOutcome, reference) -> None:
    """Raise GradingFailure with the diagnosis unless ``outcome`` is the reference ResNet-50's equal."""
    fn_name = outcome.name
    header = f"{fn_name} failed on case {number} of {count}: {case.describe(fn_name)}."
    if outcome.raised is not None:
        cause = diagnose_model_failure(fn_name, case, reference, outcome.diagnosis_model)
        raise GradingFailure(
            student_exception(fn_name, number, count, case, outcome.raised, mode="model", cause=cause)
        ) from None
    if outcome.returned_type is not None:
        raise GradingFailure(
            f"{header}\n{fn_name} returned {outcome.returned_type}, expected a keras.Model built with "
            "keras.Model(inputs=X_input, outputs=X).\n"
            "Hint: end the function with `model = Model(inputs=X_input, outputs=X, name='ResNet50')` "
            "and `return model`."
        )
    student = outcome.model
    if len(student.inputs) != 1 or len(student.outputs) != 1:
        raise GradingFailure(
            f"{header}\nYour model has {len(student.inputs)} inputs and {len(student.outputs)} outputs, "
            "expected one of each.\nHint: Model(inputs=X_input, outputs=X) with the single Input."
        )
    expected_in, found_in = tuple(reference.inputs[0].shape), tuple(student.inputs[0].shape)
    if expected_in != found_in:
        raise GradingFailure(
            f"{header}\nYour model's input has shape {shape_text(found_in)}, expected {shape_text(expected_in)}.\n"
            f"Hint: build the input from the argument, X_input = Input(input_shape); "
            f"don't fix it to one shape."
        )
    _compare_or_fail(Context(fn_name, header, "model", case, reference, student))


def judge_size(what, outcome: CallOutcome, reference, describe) -> None:
    """A bigger case checked by its output's shape and parameter count only (the "_shapes" hidden tests).

    ``describe`` names the call, e.g. "identity_block(X, 3, [64, 64, 256], 2, 'c') on (56, 56, 256)".
    """
    if outcome.raised is not None:
        raise GradingFailure(f"{what} raised {outcome.raised.type_name} on {describe}: {outcome.raised.text}")
    if outcome.model is None:
        found = outcome.returned_type or f"an output Keras can't build a model from ({outcome.model_error[1]})"
        raise GradingFailure(f"{what} returned {found} on {describe}.")
    expected_shape, found_shape = tuple(reference.outputs[0].shape), tuple(outcome.model.outputs[0].shape)
    if expected_shape != found_shape:
        raise GradingFailure(f"{describe}: output shape {found_shape}, expected {expected_shape}")
    expected, found = reference.count_params(), outcome.model.count_params()
    if expected != found:
        raise GradingFailure(f"{describe}: {found:,} parameters, expected {expected:,}")


def _compare_or_fail(ctx) -> None:
    """Compare, and show a failure to the student as the message alone, not the grader's internals."""
    try:
        compare_graphs(ctx)
    except Failure as failure:
        raise GradingFailure(str(failure)) from None


def judge_default_resnet50(outcome: CallOutcome, reference) -> None:
    """``ResNet50()`` with its defaults: the parameter count, the stages' output shapes and the head."""
    from resnet_course.diagrams import stage_outputs

    what = f"{outcome.name}()"
    if outcome.raised is not None:
        raise GradingFailure(f"{what} raised {outcome.raised.type_name}: {outcome.raised.text}")
    if outcome.model is None:
        raise GradingFailure(f"{what} returned {outcome.returned_type}, expected a keras.Model.")
    model = outcome.model
    expected, found = reference.count_params(), model.count_params()
    if expected != found:
        raise GradingFailure(f"{found:,} parameters, expected {expected:,}")

    def stages(m):
        try:
            return stage_outputs(m)
        except Exception as error:  # noqa: BLE001 - a model without the course's layer names
            return f"unreadable ({error})"

    if stages(model) != stages(reference):
        raise GradingFailure(f"stage outputs {stages(model)}, expected {stages(reference)}")
    head, expected_head = [layer.name for layer in model.layers[-3:]], [layer.name for layer in reference.layers[-3:]]
    if head != expected_head:
        raise GradingFailure(f"the last three layers are {head}, expected {', '.join(expected_head)}")
