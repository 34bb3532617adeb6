"""The grader's cases: the calls each check makes, the visible ones, and the hidden ones drawn at grade time."""

from __future__ import annotations

from dataclasses import dataclass


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


