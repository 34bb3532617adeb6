"""How the grader words its messages: layer descriptions, where a layer sits, and the failure raised."""

from __future__ import annotations

import re

from resnet_course.grading.failure import GradingFailure
from resnet_course.grading.graph import STRICT_NAMES, Graph, Node

NAME_PATTERN = re.compile(r"^(res|bn)(\d+)([a-z]+)(?:_branch(1|2[abc]))?(_relu)?$")
ROLE_OF_BRANCH = {"2a": "F1", "2b": "F2", "2c": "F3", "1": "F3"}


def shape_text(shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def layer_text(node: Node) -> str:
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


def named(node: Node) -> str:
    if node.kind == "input":
        return "the input X"
    return f"{layer_text(node)} '{node.name}'"


class Failure(GradingFailure):
    """One difference found by the comparison; ``text`` and ``hint`` are the message's parts.

    The diagnosis code catches this class while it looks for the best wording; the checks then raise
    a plain ``GradingFailure`` with the message, so these internal catches never see it."""

    def __init__(self, message, *, text, hint):
        super().__init__(message)
        self.text = text
        self.hint = hint


class NoDiagnosis(Exception):
    """The partial graph of a failed call shows no difference before its end."""


class Context:
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
        self.R = Graph(reference)
        self.S = Graph(student)
        self.ref_by_name = {node.name: node for node in self.R.nodes}
        self.mapping: dict[int, int] = {}
        self.projected_blocks = {
            m.group(2) + m.group(3)
            for node in self.R.nodes
            if node.kind == "conv" and (m := NAME_PATTERN.match(node.name)) and m.group(4) == "1"
        }
        self.st_paths = self._student_paths()

    # -- wording --

    def where(self, ref: Node) -> str:
        """Where the reference layer sits, e.g. 'stage 3, convolutional block res3a, main path'."""
        name = ref.name
        if ref.kind == "input":
            return "the input"
        match = NAME_PATTERN.match(name)
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

    def position(self, ref: Node) -> str:
        graph = self.full or self.R
        index = next((n.index for n in graph.nodes if n.name == ref.name), ref.index) if self.full else ref.index
        return f"layer {index + 1} of {len(graph.nodes)}"

    def locate(self, ref: Node, student: Node | None = None) -> str:
        text = f"Layer '{ref.name}' ({self.position(ref)}, {self.where(ref)}"
        if student is not None and student.name != ref.name and ref.kind in STRICT_NAMES:
            text += f"; yours is named '{student.name}'"
        return text + ")"

    def stage_block(self, ref: Node):
        match = NAME_PATTERN.match(ref.name)
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
            lines.append(f"(Your {what} output has shape {shape_text(found)}; expected {shape_text(expected)}.)")
        raise Failure("\n".join(lines), text=text, hint=hint)

    def _student_paths(self) -> dict[int, str]:
        paths = {}
        for add in self.S.adds():
            main, shortcut, _ = self.S.branches(add)
            for i in main:
                paths.setdefault(i, "main path")
            for i in shortcut:
                paths.setdefault(i, "shortcut")
        return paths

    def student_where(self, node: Node) -> str:
        text = f"your layer {node.index + 1} of {len(self.S.nodes)}"
        if node.index in self.st_paths:
            text += f", {self.st_paths[node.index]}"
        elif node.kind == "add":
            text += ", the Add"
        return text

    def ref_node(self, name: str):
        return self.ref_by_name.get(name)

    def student_of(self, ref: Node | None):
        if ref is None or ref.index not in self.mapping:
            return None
        return self.S.nodes[self.mapping[ref.index]]


