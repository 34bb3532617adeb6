"""The messages for an exception raised by a student's code: the case, the student's own line, and
why it happened, found by comparing the model built so far with the reference."""

from __future__ import annotations

import re

import keras

from resnet_course.grading.comparison import compare_layers
from resnet_course.grading.graph import Graph
from resnet_course.grading.messages import Context, Failure, named
from resnet_course.grading.calls import RaisedError


def _short_message(error: RaisedError, max_lines=8) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", error.text).strip() or error.representation
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > max_lines:
        lines = lines[:max_lines] + ["..."]
    return "\n".join("    " + line for line in lines)


def student_exception(fn_name, number, count, case, error: RaisedError, *, mode, cause=None) -> str:
    """The message for an exception raised by the student's code (``cause``: the diagnosis, if any)."""
    lines = [
        f"{fn_name} raised {error.type_name} on case {number} of {count}: {case.describe(fn_name)}.",
        _short_message(error),
    ]
    frames = error.frames
    if frames:
        lines.append("Your code, where it failed:")
        for frame in frames[-4:]:
            code = frame.line
            lines.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}: {code}')
    if cause is not None:
        lines.append("Why: " + cause.text)
        if cause.hint:
            lines.append("Hint: " + cause.hint)
    else:
        lines.append("Hint: " + _exception_hint(error, case, mode, in_student_code=bool(frames)))
    return "\n".join(lines)


def diagnose_model_failure(fn_name, case, reference, partial):
    """Why the student's ResNet50 raised: the first difference of ``partial``, the model built so far
    (``calls.partial_model``), or None."""
    if partial is None:
        return None
    try:
        ctx = Context(fn_name, "", "model", case, reference, partial, full=Graph(reference), truncated=True)
        compare_layers(ctx)
    except Failure as failure:
        return failure
    except Exception:  # noqa: BLE001 - the diagnosis is a bonus; the exception is reported anyway
        return None
    return None


def diagnose_add_failure(fn_name, case, reference, add_inputs):
    """Why the student's Add failed, found by comparing each of its inputs' paths with the reference's.

    ``add_inputs`` is ``keras.Model(X, [a, b])`` of the Add's two inputs (``calls.add_inputs_model``).
    Returns the first difference (a Failure) or None.
    """
    if add_inputs is None or len(add_inputs.outputs) != 2:
        return None
    try:
        full = Graph(reference)
        adds = full.adds()
        if len(adds) != 1:
            return None
        ref_main, ref_shortcut = (full.nodes[i].tensor for i in full.nodes[adds[0]].inputs)
        student_models = [keras.Model(add_inputs.inputs, t) for t in add_inputs.outputs]
        graphs = [Graph(m) for m in student_models]
        order = sorted(range(2), key=lambda k: -len(graphs[k].nodes))
        main_model, shortcut_model = (student_models[k] for k in order)
        main_graph, shortcut_graph = (graphs[k] for k in order)
        X_ref = reference.inputs[0]
        # The shortcut taken from inside the main path.
        shortcut_op = shortcut_graph.nodes[-1]
        if shortcut_op.kind != "input" and any(n.op is shortcut_op.op for n in main_graph.nodes):
            return Failure(
                "", hint="save the block's input before the main path changes X: X_shortcut = X.",
                text=f"the shortcut is taken from {named(shortcut_op)}, inside the main path, instead of from "
                "the block's input X.",
            )
        for ref_t, model in ((ref_main, main_model), (ref_shortcut, shortcut_model)):
            ctx = Context(fn_name, "", "block", case, keras.Model(X_ref, ref_t), model, full=full)
            try:
                compare_layers(ctx)
            except Failure as failure:
                return failure
    except Exception:  # noqa: BLE001 - the diagnosis is a bonus; the exception is reported anyway
        return None
    return None


_SHAPE_PATTERN = re.compile(r"\(([^()]*)\)|\[([^\[\]]*)\]")


def _shapes_in(text):
    shapes = []
    for match in _SHAPE_PATTERN.finditer(text):
        body = match.group(1) if match.group(1) is not None else match.group(2)
        items = [item.strip() for item in body.split(",") if item.strip()]
        if items and all(item == "None" or item.isdigit() for item in items):
            shape = tuple(None if item == "None" else int(item) for item in items)
            if len(shape) >= 3:
                shapes.append(shape[-3:])
    return shapes


def _exception_hint(error: RaisedError, case, mode, *, in_student_code=True) -> str:
    text = error.text
    if error.is_a("NameError"):
        return (
            "a name is not defined: check its spelling, and that it is defined inside your function "
            "or imported (e.g. `from keras.layers import Add`)."
        )
    if error.is_a("TypeError") and ("positional argument" in text or "unexpected keyword" in text):
        if in_student_code:
            return "check the arguments of the call shown above against the called function's signature."
        if mode == "convolutional_block":
            return "the grader calls convolutional_block(X, f, filters, stage, block, s); keep that signature."
        if mode == "identity_block":
            return "the grader calls identity_block(X, f, filters, stage, block); keep that signature."
        return "the grader calls ResNet50(input_shape=..., classes=...); keep that signature."
    if "incompatible shapes" in text or "broadcast" in text:
        shapes = _shapes_in(text)
        if mode == "convolutional_block":
            x_shape = tuple(case.input_shape)
            if any(shape == x_shape for shape in shapes):
                return (
                    "one input of the Add still has the shape of X itself, "
                    f"{x_shape}: in the convolutional block the shortcut needs a projection, "
                    "Conv2D(F3, (1, 1), strides=(s, s)) followed by BatchNormalization(axis=3), so that its "
                    "shape matches the main path's, and the main path's first 1x1 conv has strides=(s, s) too."
                )
            if len(shapes) >= 2 and shapes[0][:2] != shapes[1][:2]:
                return (
                    "the Add's two inputs differ in height and width: the stride s must be on the main path's "
                    "first 1x1 conv and on the shortcut's 1x1 conv (strides=(s, s)), and the fxf conv needs "
                    "padding='same'."
                )
            return (
                "the Add's two inputs differ in channels: the main path's last conv and the shortcut's conv "
                "both have F3 filters."
            )
        if mode == "identity_block":
            if len(shapes) >= 2 and shapes[0][:2] != shapes[1][:2]:
                return (
                    "the Add's two inputs differ in height and width: the identity block keeps them, so "
                    "every conv has stride 1 and the fxf conv needs padding='same'."
                )
            return (
                "the Add's two inputs must have the same shape: the last conv of the main path has F3 "
                "filters (F3 equals X's channels), and the shortcut is X itself, saved before the main path "
                "(X_shortcut = X)."
            )
        return (
            "two tensors of different shapes meet in an Add: check that each stage starts with a "
            "convolutional block (its projection changes the channels) and the filters of each block."
        )
    if mode == "model" and "shrinks" in text:
        return "check the strides and poolings of the stem and of each stage."
    return "fix the line shown above; the case above reproduces the error."


def model_error_text(type_name: str, text: str) -> str:
    """The message when ``keras.Model(X, output)`` fails on the student's block (exception class and text)."""
    if "used" in text and "unique" in text:
        return (
            f"Keras can't build a model from your block: {text}\n"
            "Hint: two layers share a name; every layer needs its own name (build them from "
            "stage, block and the branch: 'res' + str(stage) + block + '_branch2a' ...)."
        )
    if "not connected" in text:
        return (
            f"Keras can't build a model from your block: {text}\n"
            "Hint: the output must be computed from the argument X; don't create a new keras.Input "
            "inside the function."
        )
    return f"Keras can't build a model from your block: {type_name}: {text}"
