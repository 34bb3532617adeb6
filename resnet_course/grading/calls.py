"""Calling a student's function on one case and capturing what it gave, as plain data.

The same capture serves the check run in a notebook and the grading child process, which hands it
back as JSON and model configs: the trusted grader words the message from this data alone. Only the
standard library and Keras are imported here, so the child process needs nothing else of the grader.
"""

from __future__ import annotations

import inspect
import os
import re
import sysconfig
import traceback
from dataclasses import asdict, dataclass

import keras

#: the resnet_course package: frames in its files are the grader's or the reference's, not the student's
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_STDLIB_DIR = os.path.abspath(sysconfig.get_paths()["stdlib"])
_LIBRARY_PARTS = ("site-packages", "dist-packages")
#: the longest exception text kept (a student's exception can carry any amount of text)
_MAX_TEXT = 4000


def is_library_file(filename: str) -> bool:
    if filename.startswith("<frozen"):
        return True
    path = os.path.abspath(filename)
    if path.startswith(_PACKAGE_DIR + os.sep):
        return True
    parts = path.split(os.sep)
    if any(part in _LIBRARY_PARTS for part in parts):
        return True
    return path.startswith(_STDLIB_DIR + os.sep)


@dataclass(frozen=True)
class StudentFrame:
    """One frame of the student's own code in a traceback."""

    filename: str
    lineno: int
    name: str
    line: str


@dataclass(frozen=True)
class RaisedError:
    """An exception raised by the student's code: its class names, text and the student's frames."""

    type_name: str
    #: the names of the exception's classes, most derived first (NameError for an UnboundLocalError too)
    kinds: tuple
    text: str
    representation: str
    frames: tuple = ()

    @classmethod
    def from_exception(cls, exc: BaseException) -> "RaisedError":
        frames = tuple(
            StudentFrame(frame.filename, frame.lineno or 0, frame.name, (frame.line or "").strip())
            for frame in traceback.extract_tb(exc.__traceback__)
            if not is_library_file(frame.filename)
        )
        return cls(
            type_name=type(exc).__name__,
            kinds=tuple(klass.__name__ for klass in type(exc).__mro__),
            text=_safe_text(str, exc),
            representation=_safe_text(repr, exc),
            frames=frames,
        )

    def is_a(self, class_name: str) -> bool:
        return class_name in self.kinds

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RaisedError":
        """Read back what a child process wrote; refuses anything but the expected fields and types."""
        frames = tuple(
            StudentFrame(str(f["filename"]), int(f["lineno"]), str(f["name"]), str(f["line"]))
            for f in data.get("frames", ())[-20:]
        )
        return cls(
            type_name=str(data["type_name"])[:200],
            kinds=tuple(str(k)[:200] for k in data.get("kinds", ())[:50]),
            text=str(data.get("text", ""))[:_MAX_TEXT],
            representation=str(data.get("representation", ""))[:_MAX_TEXT],
            frames=frames,
        )


def _safe_text(function, exc) -> str:
    try:
        return function(exc)[:_MAX_TEXT]
    except Exception:  # noqa: BLE001 - an exception whose __str__ raises still gets reported
        return f"<{type(exc).__name__}>"


def failing_call_tensors(exc) -> list:
    """The symbolic tensors passed to the library call that raised (e.g. the Add's inputs)."""
    frames = [frame for frame, _ in traceback.walk_tb(exc.__traceback__)]
    student = [k for k, frame in enumerate(frames) if not is_library_file(frame.f_code.co_filename)]
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


def add_inputs_model(exc, X):
    """``keras.Model(X, [a, b])`` of the two tensors a failing Add was given, or None.

    One model with both outputs, so that the layers the two share stay shared when it is serialised.
    """
    try:
        tensors = failing_call_tensors(exc)
        if len(tensors) != 2:
            return None
        return keras.Model(X, tensors)
    except Exception:  # noqa: BLE001 - the diagnosis is a bonus; the exception is reported anyway
        return None


def partial_model(exc):
    """The student's model built so far, up to the first tensor of the call that raised, or None."""
    try:
        tensors = failing_call_tensors(exc)
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
        return keras.Model(start, tensor)
    except Exception:  # noqa: BLE001 - the diagnosis is a bonus; the exception is reported anyway
        return None


@dataclass
class CallOutcome:
    """What one call of the student's function gave; ``name`` is the function's own name.

    Exactly one of the other fields is set: ``raised`` (with ``diagnosis_model``, the part of the
    model built before the failing call, when there is one), ``returned_type`` (the type of a
    returned value that isn't usable), ``model_error`` (``(type, text)`` of the exception
    ``keras.Model(X, output)`` raised on a block's output) or ``model``.
    """

    name: str
    raised: RaisedError | None = None
    diagnosis_model: object = None
    returned_type: str | None = None
    model_error: tuple | None = None
    model: object = None
    #: with ``returned_type``: the function's lines that still assign None, as the template's
    #: placeholders do (``X = None``), so a None returned because of them is named as such
    placeholders: tuple = ()


#: a line that only assigns None to a name: the exercise templates' placeholders (``X = None``)
_PLACEHOLDER = re.compile(r"^\s*[A-Za-z_]\w*\s*=\s*None\s*(#.*)?$")


def placeholder_lines(fn) -> tuple:
    """The lines of ``fn``'s source that assign None to a name (at most 10), or () without a source."""
    try:
        lines = inspect.getsource(fn).splitlines()
    except (OSError, TypeError):
        return ()
    return tuple(line.strip()[:200] for line in lines if _PLACEHOLDER.match(line))[:10]


# --- calling the student's function -----------------------------------------


def call_block(fn, fn_name, case) -> CallOutcome:
    """Call a block on ``keras.Input(shape=case.input_shape)`` and capture what it gave."""
    name = getattr(fn, "__name__", fn_name)
    extra = () if case.s is None else (case.s,)
    X = keras.Input(shape=tuple(case.input_shape), name="X")
    try:
        output = fn(X, case.f, list(case.filters), case.stage, case.block, *extra)
    except Exception as exc:  # noqa: BLE001 - any error of the student's is reported
        return CallOutcome(name, raised=RaisedError.from_exception(exc), diagnosis_model=add_inputs_model(exc, X))
    if output is None or not keras.backend.is_keras_tensor(output):
        placeholders = placeholder_lines(fn) if output is None else ()
        return CallOutcome(name, returned_type=type(output).__name__, placeholders=placeholders)
    try:
        student = keras.Model(X, output, name="student")
    except Exception as exc:  # noqa: BLE001
        return CallOutcome(name, model_error=(type(exc).__name__, str(exc)))
    return CallOutcome(name, model=student)


def call_resnet50(fn, case) -> CallOutcome:
    """Call ``fn(input_shape=..., classes=...)`` and capture what it gave."""
    name = getattr(fn, "__name__", "ResNet50")
    try:
        student = fn(input_shape=tuple(case.input_shape), classes=case.classes)
    except Exception as exc:  # noqa: BLE001 - any error of the student's is reported
        return CallOutcome(name, raised=RaisedError.from_exception(exc), diagnosis_model=partial_model(exc))
    if not isinstance(student, keras.Model) or not getattr(student, "outputs", None):
        return CallOutcome(name, returned_type=type(student).__name__)
    return CallOutcome(name, model=student)


def call_resnet50_default(fn) -> CallOutcome:
    """Call ``fn()`` with its default arguments (the model the notebook's last hidden test checks)."""
    return call_model(fn, "ResNet50")


def call_model(fn, default_name, *args, **kwargs) -> CallOutcome:
    """Call a function that returns a keras.Model, and capture what it gave."""
    name = getattr(fn, "__name__", default_name)
    try:
        model = fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - any error of the student's is reported
        return CallOutcome(name, raised=RaisedError.from_exception(exc))
    if not isinstance(model, keras.Model) or not getattr(model, "outputs", None):
        return CallOutcome(name, returned_type=type(model).__name__)
    return CallOutcome(name, model=model)
