"""The course's grader: checks a student's blocks and ResNet-50 against the reference.

>>> from resnet_course.grading import check_identity_block
>>> check_identity_block(identity_block)        # doctest: +SKIP
All tests passed.

Each check builds the student's function on symbolic ``keras.Input`` tensors
for several cases, builds the reference (``resnet_course.blocks`` and
``resnet_course.model``) on the same cases, and compares the two graphs in
data-flow order (the main path, then the shortcut, then the Add and what
follows it):

1. an exception raised in the student's code: reported with the case and the
   student's own line;
2. each layer's type and the settings that change its result (filters,
   kernel, strides, padding, batch-norm axis, activation ...), so a missing,
   extra or misplaced layer is reported where it first happens;
3. the names of the convs, batch norms, paddings, poolings, Flatten and the
   classifier (activations and Adds may be named freely);
4. the number of parameters (total, trainable and non-trainable);
5. the wiring (what feeds the Add);
6. the numbers: the reference's weights (with random batch-norm statistics)
   are copied into the student's layers, and the two models must compute the
   same outputs in inference and in training mode.

Every expected value is computed live from the reference, never pasted, so
the grader follows the library's versions. Equivalent styles pass:
``layers.ReLU()``, ``Activation('relu')`` or ``keras.activations.relu(X)``;
``Add()``, ``layers.add``, ``keras.ops.add`` or ``X + X_shortcut``, with the
Add's inputs in either order; ints or tuples for kernel sizes and strides;
any names on activations and Adds; ``Dense(classes)`` followed by
``Activation('softmax')``.

Only the Keras 3 API is used (and numpy), so the grader runs on the
TensorFlow, JAX and PyTorch backends.
"""

from __future__ import annotations

import difflib
import os
import re
import sysconfig
import traceback
from dataclasses import dataclass, field

import keras
import numpy as np
from keras import layers

from resnet_course import blocks as _blocks
from resnet_course import model as _model

__all__ = [
    "BlockCase",
    "ModelCase",
    "IDENTITY_BLOCK_CASES",
    "CONVOLUTIONAL_BLOCK_CASES",
    "RESNET50_CASES",
    "check_identity_block",
    "check_convolutional_block",
    "check_resnet50",
]

PASSED = "All tests passed."


# --- cases ------------------------------------------------------------------


@dataclass(frozen=True)
class BlockCase:
    """One call of a block: ``fn(X, f, filters, stage, block[, s])`` with
    ``X = keras.Input(shape=input_shape)``; ``s=None`` leaves s at its default."""

    input_shape: tuple
    f: int
    filters: tuple
    stage: int
    block: str
    s: int | None = None

    def describe(self, fn_name: str) -> str:
        args = f"X, f={self.f}, filters={list(self.filters)}, stage={self.stage}, block={self.block!r}"
        default = ""
        if fn_name == "convolutional_block":
            if self.s is None:
                default = " (s left at its default, 2)"
            else:
                args += f", s={self.s}"
        return f"{fn_name}({args}) with X = keras.Input(shape={tuple(self.input_shape)}){default}"


@dataclass(frozen=True)
class ModelCase:
    """One call of ``ResNet50(input_shape=..., classes=...)``."""

    input_shape: tuple
    classes: int

    def describe(self, fn_name: str) -> str:
        return f"{fn_name}(input_shape={tuple(self.input_shape)}, classes={self.classes})"


#: F3 equals the input's channels, as the identity block needs.
IDENTITY_BLOCK_CASES = (
    BlockCase((4, 4, 6), 2, (2, 4, 6), 1, "a"),
    BlockCase((6, 9, 4), 3, (3, 5, 4), 3, "c"),
    BlockCase((5, 7, 3), 4, (5, 2, 3), 5, "b"),
)
CONVOLUTIONAL_BLOCK_CASES = (
    BlockCase((4, 4, 6), 2, (2, 4, 6), 1, "a"),
    BlockCase((6, 9, 3), 3, (4, 2, 5), 3, "b", s=1),
    BlockCase((9, 7, 5), 4, (3, 6, 8), 5, "c", s=3),
)
RESNET50_CASES = (
    ModelCase((64, 64, 3), 6),
    ModelCase((96, 64, 1), 3),
)


# --- the public checks ------------------------------------------------------


def check_identity_block(fn, *, cases=IDENTITY_BLOCK_CASES) -> None:
    """Check ``fn(X, f, filters, stage, block)`` against the reference identity block.

    Prints "All tests passed." or raises AssertionError on the first failure.
    """
    _check_block(fn, "identity_block", _blocks.identity_block, cases)


def check_convolutional_block(fn, *, cases=CONVOLUTIONAL_BLOCK_CASES) -> None:
    """Check ``fn(X, f, filters, stage, block, s=2)`` against the reference convolutional block.

    Prints "All tests passed." or raises AssertionError on the first failure.
    """
    _check_block(fn, "convolutional_block", _blocks.convolutional_block, cases)


def check_resnet50(fn, *, cases=RESNET50_CASES) -> None:
    """Check ``fn(input_shape=(64, 64, 3), classes=6)`` against the reference ResNet-50.

    Prints "All tests passed." or raises AssertionError on the first failure.
    """
    fn_name = getattr(fn, "__name__", "ResNet50")
    cases = tuple(cases)
    _clear_session()
    for number, case in enumerate(cases, 1):
        header = f"{fn_name} failed on case {number} of {len(cases)}: {case.describe(fn_name)}."
        reference = _reference_resnet50(tuple(case.input_shape), case.classes)
        try:
            student = fn(input_shape=tuple(case.input_shape), classes=case.classes)
        except Exception as exc:  # noqa: BLE001 - any error of the student's is reported
            cause = _diagnose_model_failure(exc, fn_name, case, reference)
            raise AssertionError(
                _student_exception(fn_name, number, len(cases), case, exc, mode="model", cause=cause)
            ) from None
        if not isinstance(student, keras.Model) or not getattr(student, "outputs", None):
            raise AssertionError(
                f"{header}\n{fn_name} returned {type(student).__name__}, expected a keras.Model built with "
                "keras.Model(inputs=X_input, outputs=X).\n"
                "Hint: end the function with `model = Model(inputs=X_input, outputs=X, name='ResNet50')` "
                "and `return model`."
            )
        if len(student.inputs) != 1 or len(student.outputs) != 1:
            raise AssertionError(
                f"{header}\nYour model has {len(student.inputs)} inputs and {len(student.outputs)} outputs, "
                "expected one of each.\nHint: Model(inputs=X_input, outputs=X) with the single Input."
            )
        expected_in, found_in = tuple(reference.inputs[0].shape), tuple(student.inputs[0].shape)
        if expected_in != found_in:
            raise AssertionError(
                f"{header}\nYour model's input has shape {_shape(found_in)}, expected {_shape(expected_in)}.\n"
                f"Hint: build the input from the argument, X_input = Input(input_shape); "
                f"don't fix it to one shape."
            )
        _compare_or_fail(_Context(fn_name, header, "model", case, reference, student))
    print(PASSED)


def _compare_or_fail(ctx) -> None:
    """Compare, and show a failure to the student as a plain AssertionError, not the grader's internals."""
    try:
        _compare_graphs(ctx)
    except _Failure as failure:
        raise AssertionError(str(failure)) from None


_REFERENCES: dict = {}


def _reference_resnet50(input_shape, classes) -> keras.Model:
    """The reference ResNet-50 for one case, built live once per session (the last two are kept)."""
    key = (keras.backend.backend(), keras.config.floatx(), input_shape, classes)
    if key not in _REFERENCES:
        while len(_REFERENCES) >= 2:
            _REFERENCES.pop(next(iter(_REFERENCES)))
        _REFERENCES[key] = _model.ResNet50(input_shape=input_shape, classes=classes)
    return _REFERENCES[key]


def _clear_session() -> None:
    """Reset Keras' automatic names (no garbage collection: it costs seconds in a big session)."""
    try:
        keras.backend.clear_session(free_memory=False)
    except TypeError:  # Keras before 3.7 has no free_memory
        keras.backend.clear_session()


# --- block checks -----------------------------------------------------------


def _check_block(fn, fn_name, reference_fn, cases) -> None:
    student_name = getattr(fn, "__name__", fn_name)
    cases = tuple(cases)
    _clear_session()
    for number, case in enumerate(cases, 1):
        header = f"{fn_name} failed on case {number} of {len(cases)}: {case.describe(fn_name)}."
        args = (case.f, list(case.filters), case.stage, case.block)
        extra = () if case.s is None else (case.s,)

        X_ref = keras.Input(shape=tuple(case.input_shape), name="X")
        reference = keras.Model(X_ref, reference_fn(X_ref, *args, *extra), name="reference")

        X = keras.Input(shape=tuple(case.input_shape), name="X")
        try:
            output = fn(X, case.f, list(case.filters), case.stage, case.block, *extra)
        except Exception as exc:  # noqa: BLE001 - any error of the student's is reported
            cause = _diagnose_add_failure(exc, fn_name, case, reference, X)
            raise AssertionError(
                _student_exception(fn_name, number, len(cases), case, exc, mode=fn_name, cause=cause)
            ) from None
        if output is None:
            raise AssertionError(
                f"{header}\n{student_name} returned None, expected the block's output tensor.\n"
                "Hint: end the function with `return X`."
            )
        if not keras.backend.is_keras_tensor(output):
            raise AssertionError(
                f"{header}\n{student_name} returned {type(output).__name__}, expected the block's output tensor "
                "(the result of the last layer, a KerasTensor).\nHint: end the function with `return X`."
            )
        try:
            student = keras.Model(X, output, name="student")
        except Exception as exc:  # noqa: BLE001
            raise AssertionError(f"{header}\n{_model_error_text(exc)}") from None
        _compare_or_fail(_Context(fn_name, header, "block", case, reference, student))
    print(PASSED)


def _model_error_text(exc) -> str:
    text = str(exc)
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
    return f"Keras can't build a model from your block: {type(exc).__name__}: {text}"


# --- the student's exceptions -------------------------------------------------

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_STDLIB_DIR = os.path.abspath(sysconfig.get_paths()["stdlib"])
_LIBRARY_PARTS = ("site-packages", "dist-packages")


def _is_library_file(filename: str) -> bool:
    if filename.startswith("<frozen"):
        return True
    path = os.path.abspath(filename)
    if path.startswith(_PACKAGE_DIR + os.sep):
        return True
    parts = path.split(os.sep)
    if any(part in _LIBRARY_PARTS for part in parts):
        return True
    return path.startswith(_STDLIB_DIR + os.sep)


def _student_frames(exc):
    frames = traceback.extract_tb(exc.__traceback__)
    return [frame for frame in frames if not _is_library_file(frame.filename)]


def _short_message(exc, max_lines=8) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip() or repr(exc)
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > max_lines:
        lines = lines[:max_lines] + ["..."]
    return "\n".join("    " + line for line in lines)


def _student_exception(fn_name, number, count, case, exc, *, mode, cause=None) -> str:
    lines = [
        f"{fn_name} raised {type(exc).__name__} on case {number} of {count}: {case.describe(fn_name)}.",
        _short_message(exc),
    ]
    frames = _student_frames(exc)
    if frames:
        lines.append("Your code, where it failed:")
        for frame in frames[-4:]:
            code = (frame.line or "").strip()
            lines.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}: {code}')
    if cause is not None:
        lines.append("Why: " + cause.text)
        if cause.hint:
            lines.append("Hint: " + cause.hint)
    else:
        lines.append("Hint: " + _exception_hint(exc, case, mode, in_student_code=bool(frames)))
    return "\n".join(lines)


def _failing_call_tensors(exc) -> list:
    """The symbolic tensors passed to the library call that raised (e.g. the Add's inputs)."""
    frames = [frame for frame, _ in traceback.walk_tb(exc.__traceback__)]
    student = [k for k, frame in enumerate(frames) if not _is_library_file(frame.f_code.co_filename)]
    if not student or student[-1] + 1 >= len(frames):
        return []
    found, seen = [], set()

    def collect(value, depth=0):
        if isinstance(value, keras.KerasTensor):
            if id(value) not in seen:
                seen.add(id(value))
                found.append(value)
        elif isinstance(value, (list, tuple)) and depth < 2:
            for item in value:
                collect(item, depth + 1)

    for value in frames[student[-1] + 1].f_locals.values():
        collect(value)
    return found


def _diagnose_model_failure(exc, fn_name, case, reference):
    """Why the student's ResNet50 raised: the first difference of the model built so far, or None."""
    try:
        tensors = _failing_call_tensors(exc)
        if not tensors:
            return None
        tensor = tensors[0]
        start = tensor
        while True:
            history = start._keras_history
            node = history.operation._inbound_nodes[history.node_index]
            if node.is_input:
                break
            start = node.input_tensors[0]
        partial = keras.Model(start, tensor)
        ctx = _Context(fn_name, "", "model", case, reference, partial, full=_Graph(reference), truncated=True)
        _compare_layers(ctx)
    except _Failure as failure:
        return failure
    except Exception:  # noqa: BLE001 - the diagnosis is a bonus; the exception is reported anyway
        return None
    return None


def _diagnose_add_failure(exc, fn_name, case, reference, X):
    """Why the student's Add failed, found by comparing each of its inputs' paths with the reference's.

    Returns the first difference (a _Failure) or None.
    """
    try:
        tensors = _failing_call_tensors(exc)
        if len(tensors) != 2:
            return None
        full = _Graph(reference)
        adds = full.adds()
        if len(adds) != 1:
            return None
        ref_main, ref_shortcut = (full.nodes[i].tensor for i in full.nodes[adds[0]].inputs)
        student_models = [keras.Model(X, t) for t in tensors]
        graphs = [_Graph(m) for m in student_models]
        order = sorted(range(2), key=lambda k: -len(graphs[k].nodes))
        main_model, shortcut_model = (student_models[k] for k in order)
        main_graph, shortcut_graph = (graphs[k] for k in order)
        X_ref = reference.inputs[0]
        # The shortcut taken from inside the main path.
        shortcut_op = shortcut_graph.nodes[-1]
        if shortcut_op.kind != "input" and any(n.op is shortcut_op.op for n in main_graph.nodes):
            return _Failure(
                "", hint="save the block's input before the main path changes X: X_shortcut = X.",
                text=f"the shortcut is taken from {_named(shortcut_op)}, inside the main path, instead of from "
                "the block's input X.",
            )
        for ref_t, model in ((ref_main, main_model), (ref_shortcut, shortcut_model)):
            ctx = _Context(fn_name, "", "block", case, keras.Model(X_ref, ref_t), model, full=full)
            try:
                _compare_layers(ctx)
            except _Failure as failure:
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


def _exception_hint(exc, case, mode, *, in_student_code=True) -> str:
    text = str(exc)
    if isinstance(exc, NameError):
        return (
            "a name is not defined: check its spelling, and that it is defined inside your function "
            "or imported (e.g. `from keras.layers import Add`)."
        )
    if isinstance(exc, TypeError) and ("positional argument" in text or "unexpected keyword" in text):
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


# --- the graph of a model -----------------------------------------------------

_STRICT_NAMES = {"conv", "bn", "pad", "maxpool", "avgpool", "gap", "flatten", "dense", "dropout"}
_ACTIVATIONS = ("relu", "linear", "softmax", "sigmoid", "tanh", "elu", "selu", "gelu", "silu", "relu6",
                "leaky_relu", "softplus", "softsign", "hard_sigmoid", "exponential")


@dataclass
class _Node:
    """One layer (or operation) of a model, described by what changes its result."""

    index: int
    op: object
    kind: str
    type_name: str
    settings: dict
    inputs: list
    tensor: object
    name: str
    weight_op: object = None
    auto_named: bool = False
    consumers: list = field(default_factory=list)

    @property
    def token(self) -> str:
        if self.kind in ("activation", "other"):
            return f"{self.kind}:{self.type_name}:{self.settings.get('activation', '')}"
        return self.kind

    @property
    def shape(self) -> tuple:
        return tuple(self.tensor.shape)


def _to_snake_case(name: str) -> str:
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _probe(function, shape=(2, 12)):
    """Name of the activation computed by ``function`` (None: not a known one)."""
    rng = np.random.default_rng(0)
    # Values from 0.1 to 3000 in size, so that a clipped ReLU or a leaky one shows.
    x = (rng.choice([-1.0, 1.0], size=shape) * 10 ** rng.uniform(-1, 3.5, size=shape)).astype("float32")
    try:
        y = keras.ops.convert_to_numpy(function(keras.ops.convert_to_tensor(x)))
    except Exception:  # noqa: BLE001 - anything the probe can't run is "unknown"
        return None
    if y.shape != x.shape:
        return None
    with np.errstate(all="ignore"):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        candidates = {
            "relu": np.maximum(x, 0),
            "linear": x,
            "softmax": e / e.sum(axis=-1, keepdims=True),
            "sigmoid": 1 / (1 + np.exp(-x)),
            "tanh": np.tanh(x),
        }
    for name, expected in candidates.items():
        if np.allclose(y, expected, rtol=1e-5, atol=1e-6):
            return name
    return None


def _activation_name(function) -> str:
    if function is None:
        return "linear"
    for name in _ACTIVATIONS:
        try:
            if function is keras.activations.get(name):
                return name
        except (ValueError, AttributeError):
            continue
    probed = _probe(function)
    if probed is not None:
        return probed
    return getattr(function, "__name__", type(function).__name__)


def _relu_settings(op):
    negative_slope = float(getattr(op, "negative_slope", 0.0) or 0.0)
    max_value = getattr(op, "max_value", None)
    threshold = float(getattr(op, "threshold", 0.0) or 0.0)
    if negative_slope == 0 and max_value is None and threshold == 0:
        return None
    arguments = []
    if negative_slope:
        arguments.append(f"negative_slope={negative_slope}")
    if max_value is not None:
        arguments.append(f"max_value={max_value}")
    if threshold:
        arguments.append(f"threshold={threshold}")
    return f"ReLU({', '.join(arguments)})"


def _describe(op, node):
    """(kind, type name, settings) of one operation of the graph."""
    if isinstance(op, layers.InputLayer) or node.is_input:
        return "input", "Input", {}
    if isinstance(op, layers.Conv2D):
        kernel = tuple(op.kernel_size)
        padding = op.padding.lower()
        if kernel == (1, 1):
            padding = "valid"  # 'same' pads nothing for a 1x1 kernel: the two give the same result
        return "conv", "Conv2D", {
            "filters": op.filters,
            "kernel_size": kernel,
            "strides": tuple(op.strides),
            "padding": padding,
            "activation": _activation_name(op.activation),
            "use_bias": bool(op.use_bias),
            "dilation_rate": tuple(op.dilation_rate),
            "groups": getattr(op, "groups", 1),
            "data_format": op.data_format,
        }
    if isinstance(op, layers.BatchNormalization):
        rank = len(node.input_tensors[0].shape)
        axis = op.axis
        if isinstance(axis, (list, tuple)):
            axis = tuple(sorted(a % rank for a in axis))
            axis = axis[0] if len(axis) == 1 else axis
        else:
            axis = axis % rank
        return "bn", "BatchNormalization", {
            "axis": axis,
            "epsilon": float(op.epsilon),
            "center": bool(op.center),
            "scale": bool(op.scale),
        }
    if isinstance(op, layers.ReLU) or (type(op).__name__ in ("ReLU", "Relu") and not isinstance(op, layers.Layer)):
        special = _relu_settings(op)
        if special is None:
            return "relu", "ReLU", {}
        return "activation", "ReLU", {"activation": special}
    if isinstance(op, layers.Activation):
        name = _activation_name(op.activation)
        if name == "relu":
            return "relu", "ReLU", {}
        return "activation", "Activation", {"activation": name}
    if isinstance(op, layers.Add) or (
        type(op).__name__ == "Add" and not isinstance(op, layers.Layer) and len(node.input_tensors) == 2
    ):
        return "add", "Add", {}
    if isinstance(op, layers.ZeroPadding2D):
        return "pad", "ZeroPadding2D", {"padding": tuple(tuple(p) for p in op.padding)}
    if isinstance(op, (layers.MaxPooling2D, layers.AveragePooling2D)):
        kind = "maxpool" if isinstance(op, layers.MaxPooling2D) else "avgpool"
        return kind, type(op).__name__, {
            "pool_size": tuple(op.pool_size),
            "strides": tuple(op.strides) if op.strides is not None else tuple(op.pool_size),
            "padding": op.padding.lower(),
        }
    if isinstance(op, layers.GlobalAveragePooling2D):
        return "gap", "GlobalAveragePooling2D", {"keepdims": bool(getattr(op, "keepdims", False))}
    if isinstance(op, layers.Flatten):
        return "flatten", "Flatten", {}
    if isinstance(op, layers.Dense):
        return "dense", "Dense", {
            "units": op.units,
            "activation": _activation_name(op.activation),
            "use_bias": bool(op.use_bias),
        }
    if isinstance(op, layers.Dropout):
        return "dropout", "Dropout", {"rate": float(op.rate)}
    # Anything else without weights that maps a tensor to one of the same shape
    # (a Lambda, keras.ops.maximum(X, 0) ...) is probed numerically.
    if len(node.input_tensors) == 1 and not getattr(op, "weights", None):
        in_shape, out_shape = tuple(node.input_tensors[0].shape), tuple(node.output_tensors[0].shape)
        if in_shape == out_shape and None not in in_shape[1:]:
            tensor = node.input_tensors[0]

            def call(value, node=node, op=op, tensor=tensor):
                args, kwargs = node.arguments.fill_in({id(tensor): value})
                return op(*args, **kwargs)

            if _probe(call, (2,) + in_shape[1:]) == "relu":
                return "relu", "ReLU", {}
    return "other", type(op).__name__, {}


class _Graph:
    """A functional model's operations in data-flow order.

    The order is a depth-first walk back from the output in which each Add
    visits its deeper input (the main path) before the other (the shortcut),
    so the reference and a student's model list their layers in the same
    order whichever order they were created in or added in.
    """

    def __init__(self, model: keras.Model):
        self.model = model
        self.nodes: list[_Node] = []
        self._depths: dict[int, int] = {}
        self._index: dict[int, int] = {}
        self._visit(model.outputs[0])
        self._fold_dense_activations()
        for node in self.nodes:
            for i in node.inputs:
                self.nodes[i].consumers.append(node.index)

    @staticmethod
    def _producer(tensor):
        history = tensor._keras_history
        operation = history.operation
        return operation, operation._inbound_nodes[history.node_index]

    def _depth(self, tensor) -> int:
        """Longest path from the model's input to ``tensor`` (iterative: models can be deep)."""
        stack = [tensor]
        while stack:
            top = stack[-1]
            _, node = self._producer(top)
            if id(node) in self._depths:
                stack.pop()
                continue
            missing = [t for t in node.input_tensors if id(self._producer(t)[1]) not in self._depths]
            if missing:
                stack.extend(missing)
                continue
            parents = [self._depths[id(self._producer(t)[1])] for t in node.input_tensors]
            self._depths[id(node)] = 1 + max(parents) if parents else 0
            stack.pop()
        return self._depths[id(self._producer(tensor)[1])]

    def _ordered_parents(self, node) -> list:
        """A node's input tensors, deepest first (the main path before the shortcut)."""
        return sorted(node.input_tensors, key=lambda t: -self._depth(t))

    def _visit(self, output) -> None:
        """Number the nodes in depth-first post-order from ``output`` (iterative)."""
        stack = [(output, False)]
        while stack:
            tensor, expanded = stack.pop()
            op, node = self._producer(tensor)
            if id(node) in self._index:
                continue
            parents = self._ordered_parents(node)
            if not expanded:
                stack.append((tensor, True))
                stack.extend((t, False) for t in reversed(parents))
                continue
            inputs = [self._index[id(self._producer(t)[1])] for t in parents]
            kind, type_name, settings = _describe(op, node)
            name = op.name
            snake = _to_snake_case(type(op).__name__)
            auto = bool(re.fullmatch(rf"{re.escape(snake)}(_\d+)?", name))
            item = _Node(
                index=len(self.nodes), op=op, kind=kind, type_name=type_name, settings=settings, inputs=inputs,
                tensor=tensor, name=name, weight_op=op if getattr(op, "weights", None) else None,
                auto_named=auto,
            )
            self._index[id(node)] = item.index
            self.nodes.append(item)

    def _fold_dense_activations(self) -> None:
        """Dense(n) followed by Activation('softmax') counts as Dense(n, activation='softmax')."""
        users: dict[int, int] = {}
        for node in self.nodes:
            for i in node.inputs:
                users[i] = users.get(i, 0) + 1
        removed = set()
        for node in self.nodes:
            if node.kind not in ("relu", "activation") or len(node.inputs) != 1:
                continue
            dense = self.nodes[node.inputs[0]]
            if dense.kind == "dense" and dense.settings["activation"] == "linear" and users.get(dense.index) == 1:
                dense.settings["activation"] = "relu" if node.kind == "relu" else node.settings["activation"]
                dense.tensor = node.tensor
                removed.add(node.index)
        if not removed:
            return
        remap, kept = {}, []
        for node in self.nodes:
            if node.index in removed:
                remap[node.index] = remap[node.inputs[0]]
                continue
            remap[node.index] = len(kept)
            kept.append(node)
        for node in kept:
            node.inputs = [remap[i] for i in node.inputs]
            node.index = remap[node.index]
        self.nodes = kept

    def chain(self, start: int) -> list[int]:
        """Node indices walking back from ``start`` through single-input layers."""
        chain = [start]
        while len(self.nodes[chain[-1]].inputs) == 1:
            chain.append(self.nodes[chain[-1]].inputs[0])
        return chain

    def branches(self, add: int):
        """(main path, shortcut, fork) of the Add at index ``add``, each path in data-flow order."""
        node = self.nodes[add]
        if len(node.inputs) != 2:
            return [], [], None
        chain_a, chain_b = self.chain(node.inputs[0]), self.chain(node.inputs[1])
        in_b = set(chain_b)
        fork = next((i for i in chain_a if i in in_b), None)
        if fork is None:
            return chain_a[::-1], chain_b[::-1], None
        return chain_a[: chain_a.index(fork)][::-1], chain_b[: chain_b.index(fork)][::-1], fork

    def adds(self) -> list[int]:
        return [node.index for node in self.nodes if node.kind == "add"]

    def count_params(self):
        trainable = sum(int(np.prod(w.shape)) for w in self.model.trainable_weights)
        non_trainable = sum(int(np.prod(w.shape)) for w in self.model.non_trainable_weights)
        return trainable + non_trainable, trainable, non_trainable


def _node_params(node: _Node):
    op = node.weight_op
    if op is None:
        return 0, 0
    trainable = sum(int(np.prod(w.shape)) for w in op.trainable_weights)
    non_trainable = sum(int(np.prod(w.shape)) for w in op.non_trainable_weights)
    return trainable, non_trainable


# --- describing layers for messages ---------------------------------------------

_NAME_PATTERN = re.compile(r"^(res|bn)(\d+)([a-z]+)(?:_branch(1|2[abc]))?(_relu)?$")
_ROLE_OF_BRANCH = {"2a": "F1", "2b": "F2", "2c": "F3", "1": "F3"}


def _shape(shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _layer_text(node: _Node) -> str:
    s = node.settings
    if node.kind == "conv":
        text = (
            f"Conv2D({s['filters']}, kernel_size={s['kernel_size']}, strides={s['strides']}, "
            f"padding={s['padding']!r}"
        )
        if s["activation"] != "linear":
            text += f", activation={s['activation']!r}"
        if not s["use_bias"]:
            text += ", use_bias=False"
        return text + ")"
    if node.kind == "bn":
        return f"BatchNormalization(axis={s['axis']})"
    if node.kind == "relu":
        return "ReLU"
    if node.kind == "activation":
        if node.type_name == "ReLU":
            return s["activation"]
        return f"{node.type_name}({s['activation']!r})"
    if node.kind == "add":
        return "Add"
    if node.kind == "pad":
        return f"ZeroPadding2D(padding={s['padding']})"
    if node.kind in ("maxpool", "avgpool"):
        return f"{node.type_name}(pool_size={s['pool_size']}, strides={s['strides']})"
    if node.kind == "dense":
        return f"Dense({s['units']}, activation={s['activation']!r})"
    if node.kind == "dropout":
        return f"Dropout({s['rate']})"
    if node.kind == "input":
        return "the input X"
    return node.type_name


def _named(node: _Node) -> str:
    if node.kind == "input":
        return "the input X"
    return f"{_layer_text(node)} '{node.name}'"


class _Failure(AssertionError):
    """A failed check; ``text`` and ``hint`` are the message's parts."""

    def __init__(self, message, *, text, hint):
        super().__init__(message)
        self.text = text
        self.hint = hint


class _NoDiagnosis(Exception):
    """The partial graph of a failed call shows no difference before its end."""


class _Context:
    """One case: the reference and the student's model, and how to word messages."""

    def __init__(self, fn_name, header, mode, case, reference, student, *, full=None, truncated=False):
        self.fn_name = fn_name
        #: the student's model stops where their code raised: only a difference before its end counts
        self.truncated = truncated
        self.header = header
        #: the whole reference's graph, when ``reference`` is only a part of it
        self.full = full
        self.mode = mode
        self.case = case
        self.reference = reference
        self.student = student
        self.R = _Graph(reference)
        self.S = _Graph(student)
        self.ref_by_name = {node.name: node for node in self.R.nodes}
        self.mapping: dict[int, int] = {}
        self.projected_blocks = {
            m.group(2) + m.group(3)
            for node in self.R.nodes
            if node.kind == "conv" and (m := _NAME_PATTERN.match(node.name)) and m.group(4) == "1"
        }
        self.st_paths = self._student_paths()

    # -- wording --

    def where(self, ref: _Node) -> str:
        """Where the reference layer sits, e.g. 'stage 3, convolutional block res3a, main path'."""
        name = ref.name
        if ref.kind == "input":
            return "the input"
        match = _NAME_PATTERN.match(name)
        if match:
            stage, letter, branch, relu = match.group(2), match.group(3), match.group(4), match.group(5)
            if branch == "1":
                path = "shortcut"
            elif branch:
                path = "main path"
            elif relu:
                path = "after the Add"
            else:
                path = "the Add"
            if self.mode == "model":
                kind = "convolutional block" if stage + letter in self.projected_blocks else "identity block"
                return f"stage {stage}, {kind} res{stage}{letter}, {path}"
            return path
        if self.mode == "model":
            stem = {"conv1_pad", "conv1", "bn_conv1", "conv1_relu", "pool1"}
            return "stem" if name in stem else "head"
        return "block"

    def position(self, ref: _Node) -> str:
        graph = self.full or self.R
        index = next((n.index for n in graph.nodes if n.name == ref.name), ref.index) if self.full else ref.index
        return f"layer {index + 1} of {len(graph.nodes)}"

    def locate(self, ref: _Node, student: _Node | None = None) -> str:
        text = f"Layer '{ref.name}' ({self.position(ref)}, {self.where(ref)}"
        if student is not None and student.name != ref.name and ref.kind in _STRICT_NAMES:
            text += f"; yours is named '{student.name}'"
        return text + ")"

    def stage_block(self, ref: _Node):
        match = _NAME_PATTERN.match(ref.name)
        if not match:
            return None, None
        return match.group(2), match.group(2) + match.group(3)

    def fail(self, text: str, hint: str | None = None):
        lines = [self.header, text]
        if hint:
            lines.append("Hint: " + hint)
        expected, found = tuple(self.reference.outputs[0].shape), tuple(self.student.outputs[0].shape)
        if expected != found and self.full is None:
            what = "block's" if self.mode == "block" else "model's"
            lines.append(f"(Your {what} output has shape {_shape(found)}; expected {_shape(expected)}.)")
        raise _Failure("\n".join(lines), text=text, hint=hint)

    def _student_paths(self) -> dict[int, str]:
        paths = {}
        for add in self.S.adds():
            main, shortcut, _ = self.S.branches(add)
            for i in main:
                paths.setdefault(i, "main path")
            for i in shortcut:
                paths.setdefault(i, "shortcut")
        return paths

    def student_where(self, node: _Node) -> str:
        text = f"your layer {node.index + 1} of {len(self.S.nodes)}"
        if node.index in self.st_paths:
            text += f", {self.st_paths[node.index]}"
        elif node.kind == "add":
            text += ", the Add"
        return text

    def ref_node(self, name: str):
        return self.ref_by_name.get(name)

    def student_of(self, ref: _Node | None):
        if ref is None or ref.index not in self.mapping:
            return None
        return self.S.nodes[self.mapping[ref.index]]


# --- the comparison ------------------------------------------------------------


def _compare_graphs(ctx: _Context) -> None:
    R, S = ctx.R, ctx.S
    if ctx.mode == "model":
        _check_stages(ctx)
    _compare_layers(ctx)
    pairs = [(R.nodes[i], S.nodes[j]) for i, j in sorted(ctx.mapping.items())]
    # 2. names.
    for ref, st in pairs:
        _check_name(ctx, ref, st)
    # 3. parameters.
    _check_params(ctx, pairs)
    # 4. wiring.
    for ref, st in pairs:
        _check_wiring(ctx, ref, st)
    # 5. shapes (after the wiring, a difference here would be a surprise).
    for ref, st in pairs:
        if ref.shape[1:] != st.shape[1:]:
            ctx.fail(
                f"{ctx.locate(ref, st)} outputs shape {_shape(st.shape)}, expected {_shape(ref.shape)}.",
                "compare the layers just before it with the reference.",
            )
    # 6. numbers.
    _check_numbers(ctx, pairs)


def _compare_layers(ctx: _Context) -> None:
    """Align the two graphs' layers and check each one's type and settings, in data-flow order."""
    R, S = ctx.R, ctx.S
    if len(S.nodes) == 1 and len(R.nodes) > 1 and not ctx.truncated and ctx.full is None:
        ctx.fail(
            f"Your {'block' if ctx.mode == 'block' else 'model'} returns its input unchanged: it has no layers, "
            f"expected {len(R.nodes) - 1}.",
            "apply each layer to the output of the one before (X = Layer(...)(X)) and return the last X.",
        )
    matcher = difflib.SequenceMatcher(None, [n.token for n in R.nodes], [n.token for n in S.nodes], autojunk=False)
    opcodes = matcher.get_opcodes()
    for tag, i1, i2, j1, _ in opcodes:
        if tag == "equal":
            for k in range(i2 - i1):
                ctx.mapping[i1 + k] = j1 + k
    # 1. layer types and settings, in data-flow order.
    for position, (tag, i1, i2, j1, j2) in enumerate(opcodes):
        if tag == "equal":
            for k in range(i2 - i1):
                _check_settings(ctx, R.nodes[i1 + k], S.nodes[j1 + k])
        else:
            _structure_failure(ctx, opcodes, position)


def _check_stages(ctx: _Context) -> None:
    """ResNet-50 only: the number of stages and of identity blocks in each."""
    R, S = ctx.R, ctx.S

    def stages(graph):
        before, result = [], []
        for add in graph.adds():
            _, shortcut, _ = graph.branches(add)
            if shortcut:
                result.append([add])
            elif result:
                result[-1].append(add)
            else:
                before.append(add)
        return before, result

    _, ref_stages = stages(R)
    st_before, st_stages = stages(S)
    names = [[R.nodes[a].name for a in stage] for stage in ref_stages]
    counts = [len(stage) - 1 for stage in ref_stages]
    counts_text = ", ".join(str(c) for c in counts)
    first_stage = int(_NAME_PATTERN.match(names[0][0]).group(2))
    stage_numbers = [first_stage + k for k in range(len(names))]
    if not S.adds():
        ctx.fail(
            "Your model has no Add, so no residual block: expected "
            f"{sum(len(n) for n in names)} blocks in {len(names)} stages.",
            "build each stage with convolutional_block and identity_block.",
        )
    if st_before:
        ctx.fail(
            f"Your model has {len(st_before)} identity block(s) before its first convolutional block; "
            f"stage {first_stage} must start with the convolutional block {names[0][0]}.",
            "each stage is one convolutional_block followed by identity_blocks.",
        )
    if len(st_stages) != len(names):
        ctx.fail(
            f"Wrong number of stages: your model has {len(st_stages)} convolutional blocks (blocks whose "
            f"shortcut has a projection), expected {len(names)}, one at the start of each stage: "
            + ", ".join(n[0] for n in names) + ".",
            f"ResNet-50 has {len(names)} stages, each a convolutional block followed by "
            f"{counts_text} identity blocks.",
        )
    for number, ref_stage, st_stage in zip(stage_numbers, names, st_stages):
        if len(ref_stage) != len(st_stage):
            found = [S.nodes[a].name for a in st_stage[1:]]
            ctx.fail(
                f"Wrong number of identity blocks in stage {number}: found {len(st_stage) - 1} after the "
                f"convolutional block {ref_stage[0]}, expected {len(ref_stage) - 1} "
                f"({', '.join(ref_stage[1:])}). Your stage {number} has: {', '.join(found) or 'none'}.",
                f"ResNet-50 has {counts_text} identity blocks in stages "
                f"{', '.join(str(n) for n in stage_numbers)}; check the calls (or the loop) of stage {number}.",
            )


# -- settings --


def _check_settings(ctx: _Context, ref: _Node, st: _Node) -> None:
    for key, expected in ref.settings.items():
        found = st.settings.get(key)
        if found == expected:
            continue
        if ref.kind == "conv":
            _conv_failure(ctx, ref, st, key, expected, found)
        if ref.kind == "bn" and key == "axis":
            ctx.fail(
                f"{ctx.locate(ref, st)}: BatchNormalization normalises axis {found}, expected axis {expected} "
                "(the channels axis in NHWC).",
                f"use BatchNormalization(axis={expected}).",
            )
        if ref.kind == "dense" and key == "activation":
            ctx.fail(
                f"{ctx.locate(ref, st)}: the Dense layer has activation {found!r}, expected {expected!r}; "
                f"without softmax the model outputs scores, not probabilities.",
                f"Dense(classes, activation='softmax', name='fc' + str(classes)).",
            )
        if ref.kind == "dense" and key == "units":
            ctx.fail(
                f"{ctx.locate(ref, st)}: the Dense layer has {found} units, expected {expected} (classes).",
                "use Dense(classes, ...), with the classes argument, not a fixed number.",
            )
        if ref.kind == "pad" and key == "padding":
            ctx.fail(
                f"{ctx.locate(ref, st)}: ZeroPadding2D pads {found}, expected {expected}.",
                f"ZeroPadding2D(({expected[0][0]}, {expected[1][0]})).",
            )
        ctx.fail(
            f"{ctx.locate(ref, st)}: {ref.type_name} has {key}={found!r}, expected {key}={expected!r}.",
            f"create it as {_layer_text(ref)}.",
        )


def _conv_failure(ctx: _Context, ref: _Node, st: _Node, key, expected, found):
    stage, block = ctx.stage_block(ref)
    match = _NAME_PATTERN.match(ref.name)
    branch = match.group(4) if match else None
    where = ctx.locate(ref, st)
    if key == "filters":
        role = _ROLE_OF_BRANCH.get(branch)
        if ctx.mode == "model" and block:
            convs = [ctx.ref_node(f"res{block}_branch2{k}") for k in "abc"]
            stage_filters = [c.settings["filters"] for c in convs if c is not None]
            ctx.fail(
                f"Wrong filter count in stage {stage}: {where} has {found} filters, expected {expected}"
                + (f" ({role} of stage {stage})" if role else "") + ".",
                f"stage {stage} uses filters {stage_filters}.",
            )
        if role and ctx.mode == "block":
            F = list(ctx.case.filters)
            mixed = found in F
            ctx.fail(
                f"{where} has {found} filters, expected {expected} ({role}, with filters = {F}).",
                ("did you mix up F1, F2 and F3? " if mixed else "")
                + "The first 1x1 conv has F1 filters, the fxf conv F2, the last 1x1 conv F3"
                + (" and the shortcut's conv F3 too." if ctx.fn_name == "convolutional_block" else "."),
            )
        ctx.fail(f"{where} has {found} filters, expected {expected}.", f"create it as {_layer_text(ref)}.")
    if key == "kernel_size":
        if branch == "2b":
            f = ctx.case.f if ctx.mode == "block" else expected[0]
            ctx.fail(
                f"{where} has kernel_size {found}, expected {expected} = (f, f), with f={f} in this case.",
                "the middle conv is f x f: use kernel_size=(f, f), with the argument f, not a fixed 3.",
            )
        if branch:
            ctx.fail(
                f"{where} has kernel_size {found}, expected {expected}: this conv is 1x1.",
                "the first and last convs of the main path, and the shortcut's conv, are 1x1 convs.",
            )
        ctx.fail(f"{where} has kernel_size {found}, expected {expected}.", f"create it as {_layer_text(ref)}.")
    if key == "strides":
        _stride_failure(ctx, ref, st, expected, found, branch, block)
    if key == "padding":
        if branch == "2b":
            ctx.fail(
                f"{where} has padding {found!r}, expected {expected!r}.",
                "the fxf conv uses padding='same' so that it keeps the height and width, and the main path "
                "can be added to the shortcut.",
            )
        ctx.fail(f"{where} has padding {found!r}, expected {expected!r}.", f"create it as {_layer_text(ref)}.")
    if key == "activation":
        ctx.fail(
            f"{where} has activation {found!r}, expected none ({expected!r}).",
            "keep the conv linear: the ReLU comes after the BatchNormalization, as a layer of its own.",
        )
    if key == "use_bias":
        ctx.fail(
            f"{where} has use_bias={found}, expected use_bias={expected}.",
            "the course's convs keep their bias (use_bias=True, Conv2D's default).",
        )
    ctx.fail(f"{where}: Conv2D has {key}={found!r}, expected {key}={expected!r}.", f"create it as {_layer_text(ref)}.")


def _stride_failure(ctx: _Context, ref, st, expected, found, branch, block):
    where = ctx.locate(ref, st)
    s_expected = expected[0] if len(set(expected)) == 1 else expected
    if branch == "2a" and block:
        st_2b = ctx.student_of(ctx.ref_node(f"res{block}_branch2b"))
        st_1 = ctx.student_of(ctx.ref_node(f"res{block}_branch1"))
        if found == (1, 1) and expected != (1, 1) and st_2b is not None and st_2b.settings["strides"] == expected:
            yours = "" if st_2b.name == f"res{block}_branch2b" else f", yours is named '{st_2b.name}'"
            ctx.fail(
                f"{where}: the stride s={s_expected} is on 'res{block}_branch2b' (the fxf conv{yours}) but the "
                f"course's ResNet v1 puts it on the first 1x1 conv 'res{block}_branch2a'; moving it to the fxf "
                "conv is ResNet v1.5.",
                "use strides=(s, s) on the first 1x1 conv and strides=(1, 1) on the fxf conv.",
            )
        if st_1 is not None and st_1.settings["strides"] == found:
            if ctx.mode == "model":
                stage = ctx.stage_block(ref)[0]
                numbers, strides = _stage_strides(ctx)
                ctx.fail(
                    f"Wrong stride in stage {stage}: the convolutional block res{block} uses s={found[0]}, "
                    f"expected s={s_expected} ({where} has strides {found}).",
                    f"the convolutional blocks of stages {numbers} have s = {strides}; pass s to "
                    "convolutional_block.",
                )
            ctx.fail(
                f"{where} and the shortcut conv have strides {found}, expected {expected}: the block "
                f"doesn't use s={s_expected}.",
                "use strides=(s, s), with the argument s, on the first 1x1 conv and on the shortcut's conv.",
            )
    if branch == "2b":
        ctx.fail(
            f"{where} has strides {found}, expected {expected}: in ResNet v1 the fxf conv has stride 1.",
            "the stride s of the convolutional block goes on the first 1x1 conv (and the shortcut's conv).",
        )
    if branch == "1":
        ctx.fail(
            f"{where}: the shortcut's conv has strides {found}, expected {expected} = (s, s).",
            "the shortcut must downsample like the main path: Conv2D(F3, (1, 1), strides=(s, s)).",
        )
    if branch == "2a" and expected != (1, 1):
        ctx.fail(
            f"{where} has strides {found}, expected {expected} = (s, s).",
            "the convolutional block downsamples with its first 1x1 conv, strides=(s, s), and with the "
            "shortcut's 1x1 conv, strides=(s, s).",
        )
    if branch == "2a" or branch == "2c":
        ctx.fail(
            f"{where} has strides {found}, expected {expected}.",
            "only the convolutional block's first 1x1 conv and shortcut conv have stride s; the others "
            "(and every conv of the identity block) have stride 1.",
        )
    ctx.fail(f"{where} has strides {found}, expected {expected}.", f"create it as {_layer_text(ref)}.")


def _stage_strides(ctx: _Context):
    """('2, 3, 4, 5', '1, 2, 2, 2'): the stages and their convolutional blocks' strides."""
    stages, strides = [], []
    for node in ctx.R.nodes:
        match = _NAME_PATTERN.match(node.name)
        if node.kind == "conv" and match and match.group(4) == "1":
            stages.append(match.group(2))
            strides.append(str(node.settings["strides"][0]))
    return ", ".join(stages), ", ".join(strides)


# -- structure (missing, extra or misplaced layers) --


def _structure_failure(ctx: _Context, opcodes, position: int) -> None:
    R, S = ctx.R, ctx.S
    tag, i1, i2, j1, j2 = opcodes[position]
    if ctx.truncated and j2 >= len(S.nodes):
        raise _NoDiagnosis()
    deleted = R.nodes[i1:i2] if tag in ("delete", "replace") else []
    inserted = S.nodes[j1:j2] if tag in ("insert", "replace") else []

    # A ReLU between the main path and the Add, and none after the Add.
    for node in inserted[:1]:
        if node.kind == "relu" and any(S.nodes[c].kind == "add" for c in node.consumers):
            add = next(S.nodes[c] for c in node.consumers if S.nodes[c].kind == "add")
            after = [S.nodes[c] for c in add.consumers]
            ref_add = _ref_of(ctx, add)
            ref_name = ref_add.name if ref_add is not None else add.name
            if not any(c.kind == "relu" for c in after):
                ctx.fail(
                    f"The Add '{ref_name}' isn't followed by a ReLU, but a ReLU "
                    f"('{node.name}', {ctx.student_where(node)}) sits before the Add: "
                    "the ReLU must come after the Add, on the sum.",
                    "end the main path with BatchNormalization, then X = Add()([X, X_shortcut]) and "
                    "X = Activation('relu')(X).",
                )
            ctx.fail(
                f"An extra ReLU ('{node.name}', {ctx.student_where(node)}) sits before the Add '{ref_name}': "
                "the branches end with BatchNormalization (or, for the identity shortcut, X itself).",
                "remove it: the only ReLU at the end of the block is the one after the Add.",
            )
    # A missing final ReLU.
    for node in deleted[:1] if tag == "delete" else []:
        if node.kind == "relu" and node.inputs and R.nodes[node.inputs[0]].kind == "add":
            add = R.nodes[node.inputs[0]]
            ctx.fail(
                f"{ctx.locate(node)} is missing: the Add '{add.name}' must be followed by a ReLU, and your "
                f"block {'ends with the Add' if ctx.mode == 'block' else 'goes on after the Add'} without one "
                "(missing final ReLU).",
                "after X = Add()([X, X_shortcut]), apply X = Activation('relu')(X).",
            )
    # The shortcut of a convolutional block.
    names = {node.name for node in deleted}
    for node in deleted[:1]:
        match = _NAME_PATTERN.match(node.name)
        if not (match and match.group(4) == "1"):
            continue
        block = match.group(2) + match.group(3)
        if node.kind == "conv":
            bn_missing = f"bn{block}_branch1" in names
            ctx.fail(
                f"{ctx.locate(node)} is missing: the shortcut of the convolutional block has no projection"
                + ("" if bn_missing else " conv")
                + f"; expected {_layer_text(node)} named '{node.name}'"
                + (f" and BatchNormalization named 'bn{block}_branch1'" if bn_missing else "")
                + " on the shortcut.",
                "in the convolutional block the shortcut is X_shortcut = Conv2D(F3, (1, 1), strides=(s, s))"
                "(X_shortcut) followed by BatchNormalization(axis=3), unlike the identity block's, which adds "
                "X unchanged.",
            )
        if node.kind == "bn":
            ctx.fail(
                f"{ctx.locate(node)} is missing: the shortcut has no BatchNormalization after its conv "
                f"'res{block}_branch1'.",
                "the shortcut's projection is Conv2D(F3, (1, 1), strides=(s, s)) followed by "
                "BatchNormalization(axis=3).",
            )
    # Two layers in the wrong order.
    if (
        i1 + 1 < len(R.nodes) and j1 + 1 < len(S.nodes)
        and R.nodes[i1].token == S.nodes[j1 + 1].token and R.nodes[i1 + 1].token == S.nodes[j1].token
        and R.nodes[i1].token != R.nodes[i1 + 1].token
    ):
        first, second = R.nodes[i1], R.nodes[i1 + 1]
        ctx.fail(
            f"{ctx.locate(first)}: the layers are in the wrong order around here: expected "
            f"{_layer_text(first)} then {_layer_text(second)}, found them the other way round.",
            "each conv is followed by BatchNormalization, then (except the last one before the Add) ReLU.",
        )
    before = R.nodes[R.nodes[i1].inputs[0]] if i1 < len(R.nodes) and R.nodes[i1].inputs else None
    if tag == "delete" or (tag == "replace" and deleted):
        node = deleted[0]
        found = S.nodes[j1] if j1 < len(S.nodes) else None
        found_text = f"found {_named(found)} ({ctx.student_where(found)})" if found is not None else "found nothing"
        if node.name == "pool1" or node.kind == "maxpool":
            ctx.fail(
                f"{ctx.locate(node)} is missing: the stem has no max-pool; expected {_layer_text(node)} named "
                f"'{node.name}' after '{R.nodes[node.inputs[0]].name}', {found_text}.",
                "the stem is ZeroPadding2D((3, 3)), Conv2D(64, (7, 7), strides=(2, 2)), BatchNormalization, "
                "ReLU, MaxPooling2D((3, 3), strides=(2, 2)).",
            )
        if node.name == "conv1_pad" or node.kind == "pad":
            ctx.fail(
                f"{ctx.locate(node)} is missing: the stem has no zero-padding; expected {_layer_text(node)} "
                f"named '{node.name}' before the first conv, {found_text}.",
                "start the stem with X = ZeroPadding2D((3, 3))(X_input).",
            )
        previous = f" after {_named(before)}" if before is not None else ""
        if tag == "replace":
            ctx.fail(
                f"{ctx.locate(node)}: expected {_layer_text(node)}{previous}, {found_text}.",
                _kind_hint(node),
            )
        ctx.fail(f"{ctx.locate(node)} is missing: expected {_layer_text(node)}{previous}, {found_text}.",
                 _kind_hint(node))
    node = inserted[0]
    expected_here = R.nodes[i1] if i1 < len(R.nodes) else None
    expected_text = (
        f"the reference has {_named(expected_here)} there" if expected_here is not None
        else "the reference ends there"
    )
    previous = S.nodes[node.inputs[0]] if node.inputs else None
    after = f" after {_named(previous)}" if previous is not None else ""
    ctx.fail(
        f"Unexpected layer {_named(node)} ({ctx.student_where(node)}){after}: {expected_text}.",
        "remove it, or compare the order of your layers with the reference's.",
    )


def _ref_of(ctx: _Context, st: _Node):
    for i, j in ctx.mapping.items():
        if j == st.index:
            return ctx.R.nodes[i]
    return None


def _kind_hint(node: _Node) -> str:
    if node.kind == "bn":
        return "every conv is followed by BatchNormalization(axis=3)."
    if node.kind == "relu" and _NAME_PATTERN.match(node.name) and _NAME_PATTERN.match(node.name).group(4) is None:
        return "the block ends with a plain ReLU after the Add: X = Activation('relu')(X)."
    if node.kind == "relu":
        return "the first two convs of the main path are each followed by BatchNormalization and a ReLU."
    if node.kind == "conv":
        return "the main path has three convs: 1x1 (F1), f x f (F2), 1x1 (F3)."
    if node.kind == "flatten":
        return "Flatten turns the pooled feature map into a vector for the Dense layer."
    if node.kind == "avgpool":
        return "the head is AveragePooling2D((2, 2)), Flatten, Dense(classes, activation='softmax')."
    return f"add {_layer_text(node)} there."


# -- names, parameters, wiring --


def _check_name(ctx: _Context, ref: _Node, st: _Node) -> None:
    if ref.kind not in _STRICT_NAMES or st.name == ref.name:
        return
    where = f"{ctx.position(ref)}, {ctx.where(ref)}"
    text = f"{_layer_text(ref)} ({where}): expected the name '{ref.name}', found '{st.name}'"
    if st.auto_named:
        text += " (an automatic name: the layer was created without name=)"
        hint = f"create it with name='{ref.name}'."
    else:
        hint = "check the spelling."
    match_ref, match_st = _NAME_PATTERN.match(ref.name), _NAME_PATTERN.match(st.name)
    if match_ref and match_st and match_ref.group(2, 3) != match_st.group(2, 3):
        hint = (
            f"build the names from the stage and block arguments (here stage={match_ref.group(2)}, "
            f"block={match_ref.group(3)!r}): 'res' + str(stage) + block + '_branch2a', "
            "'bn' + str(stage) + block + '_branch2a' ..."
        )
    elif match_ref:
        hint += (
            " The names are res{stage}{block}_branch2a/2b/2c for the main path's convs, "
            "bn{stage}{block}_branch2a/2b/2c for their batch norms, and _branch1 for the shortcut's."
        )
    ctx.fail(text + ".", hint)


def _check_params(ctx: _Context, pairs) -> None:
    expected, found = ctx.R.count_params(), ctx.S.count_params()
    if expected == found:
        return
    for ref, st in pairs:
        e, f = _node_params(ref), _node_params(st)
        if e != f:
            ctx.fail(
                f"{ctx.locate(ref, st)} has {f[0]:,} trainable and {f[1]:,} non-trainable parameters, "
                f"expected {e[0]:,} and {e[1]:,}.",
                "check the layer's settings (use_bias, center, scale) and that it is trainable.",
            )
    what = "block" if ctx.mode == "block" else "model"
    ctx.fail(
        f"Your {what} has {found[0]:,} parameters ({found[1]:,} trainable, {found[2]:,} non-trainable), "
        f"expected {expected[0]:,} ({expected[1]:,} trainable, {expected[2]:,} non-trainable).",
        "a layer's weights may be shared or frozen (trainable=False).",
    )


def _check_wiring(ctx: _Context, ref: _Node, st: _Node) -> None:
    inverse = {j: i for i, j in ctx.mapping.items()}
    found = [inverse.get(j) for j in st.inputs]
    expected = list(ref.inputs)
    same = sorted(found, key=str) == sorted(expected, key=str) if ref.kind == "add" else found == expected
    if same:
        return

    def text(i):
        return _named(ctx.R.nodes[i]) if i is not None else "a layer of yours"

    if ref.kind == "add":
        found_names = " and ".join(_named_student(ctx, j) for j in st.inputs)
        expected_names = " and ".join(text(i) for i in expected)
        hint = (
            "save the block's input first (X_shortcut = X), run the main path on X, then "
            "X = Add()([X, X_shortcut])."
        )
        ctx.fail(
            f"The Add '{ref.name}' ({ctx.position(ref)}) adds {found_names}, expected {expected_names}.",
            hint,
        )
    ctx.fail(
        f"{ctx.locate(ref, st)} takes its input from {', '.join(_named_student(ctx, j) for j in st.inputs)}, "
        f"expected from {', '.join(text(i) for i in expected)}.",
        "each layer is applied to the output of the layer before it: X = Layer(...)(X).",
    )


def _named_student(ctx: _Context, j: int) -> str:
    node = ctx.S.nodes[j]
    return _named(node)


# -- numbers --


def _randomise(graph: _Graph, seed: int = 0) -> None:
    """Random batch-norm statistics and biases, so that inference mode tests them too."""
    rng = np.random.default_rng(seed)
    for node in graph.nodes:
        op = node.weight_op
        if op is None:
            continue
        for variable in op.weights:
            name = variable.name.split("/")[-1]
            shape = tuple(variable.shape)
            if name == "gamma" or name == "moving_variance":
                value = rng.uniform(0.5, 1.5, shape)
            elif name in ("beta", "moving_mean", "bias"):
                value = rng.normal(0.0, 0.2, shape)
            else:
                continue
            variable.assign(value.astype(keras.backend.standardize_dtype(variable.dtype)))


def _check_numbers(ctx: _Context, pairs) -> None:
    _randomise(ctx.R)
    for ref, st in pairs:
        if ref.weight_op is None:
            continue
        weights = ref.weight_op.get_weights()
        try:
            st.weight_op.set_weights(weights)
        except Exception as exc:  # noqa: BLE001
            ctx.fail(
                f"{ctx.locate(ref, st)}: can't copy the reference's weights into your layer: {exc}",
                "compare the layer's settings with the reference's.",
            )
    pairs = [(ref, st) for ref, st in pairs if ref.kind != "input"]
    shape = (2,) + tuple(ctx.reference.inputs[0].shape[1:])
    x = np.random.default_rng(1).normal(0.0, 1.0, shape).astype("float32")
    ref_probe = keras.Model(ctx.reference.inputs[0], [ref.tensor for ref, _ in pairs])
    st_probe = keras.Model(ctx.student.inputs[0], [st.tensor for _, st in pairs])
    for mode, training in (("inference", False), ("training", True)):
        expected = [keras.ops.convert_to_numpy(y) for y in ref_probe(x, training=training)]
        found = [keras.ops.convert_to_numpy(y) for y in st_probe(x, training=training)]
        for (ref, st), e, f in zip(pairs, expected, found):
            tolerance = 1e-4 * max(1.0, float(np.max(np.abs(e))) if e.size else 1.0)
            if e.shape != f.shape or not np.allclose(f, e, rtol=1e-4, atol=tolerance):
                difference = float(np.max(np.abs(f - e))) if e.shape == f.shape else float("nan")
                ctx.fail(
                    f"{ctx.locate(ref, st)} computes other numbers than the reference in {mode} mode "
                    f"(training={training}), with the same weights: largest difference {difference:.3g}.",
                    "its type and settings match the reference's, so look at how it is called (a fixed "
                    "training= argument, a custom function, a Lambda).",
                )
