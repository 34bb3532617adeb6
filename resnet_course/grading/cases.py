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




# --- the hidden cases, drawn at grade time ---------------------------------------------------------

#: ResNet-50's filters per stage (2-5), from which the ResNet-like block cases are drawn
_STAGE_FILTERS = {2: (64, 64, 256), 3: (128, 128, 512), 4: (256, 256, 1024), 5: (512, 512, 2048)}
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_CLASS_NAMES = ("cat", "dog", "fox", "owl", "bee", "elk", "yak", "emu", "ant", "cod")


def draw_cases(assignment: str, seed: int) -> dict:
    """The cases of each test cell of ``assignment``: the visible ones as in the notebook, the hidden ones
    drawn from ``seed`` (the same seed gives the same cases). JSON-serialisable:
    ``{"assignment", "seed", "cells": {grade_id: {"check", "function", "cases": [...]}}}``.
    """
    import random

    from resnet_course.grading.assignments import assignment_spec

    spec = assignment_spec(assignment)
    rng = random.Random(f"{assignment}:{int(seed)}")
    cells = _DRAWERS[spec.name](rng)
    assert set(cells) == set(spec.test_cell_ids), (sorted(cells), spec.test_cell_ids)
    return {"assignment": spec.name, "seed": int(seed), "cells": cells}


def _cell(check, function, cases):
    return {"check": check, "function": function, "cases": [_as_dict(case) for case in cases]}


def _as_dict(case):
    from dataclasses import asdict, is_dataclass

    if is_dataclass(case):
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(case).items()}
    return case


def _block_letter(rng, identity: bool) -> str:
    return rng.choice(_LETTERS[1:] if identity else _LETTERS)


def _resnet_like_block(rng, identity: bool) -> BlockCase:
    """A block as ResNet-50 has them: one stage's filters, a stage's feature-map size."""
    stage = rng.randint(2, 5)
    F1, F2, F3 = _STAGE_FILTERS[stage]
    size = rng.randint(3, 16)
    if identity:
        return BlockCase((size, size, F3), 3, (F1, F2, F3), stage, _block_letter(rng, True))
    channels = F3 // 2 if stage > 2 else F1
    return BlockCase((size, size, channels), 3, (F1, F2, F3), stage, "a", s=1 if stage == 2 else 2)


def _small_block(rng, identity: bool) -> BlockCase:
    """A small block with everything drawn: a non-square input, any f, filters, stage, letter and s."""
    height, width = rng.randint(3, 12), rng.randint(3, 12)
    channels = rng.randint(2, 12)
    F1, F2 = rng.randint(1, 12), rng.randint(1, 12)
    F3 = channels if identity else rng.randint(2, 12)
    stage, block, f = rng.randint(1, 9), _block_letter(rng, identity), rng.randint(1, 5)
    return BlockCase((height, width, channels), f, (F1, F2, F3), stage, block, s=None if identity else rng.randint(1, 4))


def _size_block(rng, identity: bool) -> BlockCase:
    """A bigger block, checked by its output's shape and parameter count."""
    stage = rng.randint(2, 4)
    F1, F2, F3 = _STAGE_FILTERS[stage]
    size = rng.choice((28, 32, 40, 48, 56))
    channels = F3 if identity else rng.choice((F1, F3 // 2, F3))
    return BlockCase((size, size, channels), 3, (F1, F2, F3), stage, _block_letter(rng, identity),
                     s=None if identity else rng.choice((1, 2)))


def _blocks(function, identity, visible):
    def draw(rng):
        hidden = [_resnet_like_block(rng, identity), _small_block(rng, identity), _small_block(rng, identity)]
        rng.shuffle(hidden)
        return {
            f"test_{function}": _cell(function, function, visible),
            f"hidden_tests_{function}": _cell(function, function, hidden),
            f"hidden_tests_{function}_shapes": _cell(f"{function}_size", function, [_size_block(rng, identity)]),
        }

    return draw


def _resnet50(rng):
    shape = (rng.choice(range(64, 113, 8)), rng.choice(range(64, 113, 8)), rng.choice((1, 3)))
    return {
        "test_resnet50": _cell("resnet50", "ResNet50", RESNET50_CASES),
        "hidden_tests_resnet50": _cell("resnet50", "ResNet50", [ModelCase(shape, rng.randint(2, 20))]),
        "hidden_tests_resnet50_shapes": _cell("resnet50_default", "ResNet50", []),
    }


def _signs(rng):
    from resnet_course.exercises import PREPROCESS_CASES, PreprocessCase

    classes = rng.randint(3, 10)
    size, channels = rng.choice((8, 16, 24, 32, 48)), rng.choice((1, 3))
    hidden = PreprocessCase(rng.randint(8, 30), (size, size, channels), classes,
                            present=classes - rng.randint(1, 2), seed=rng.randint(0, 10**6))
    dark = PreprocessCase(rng.randint(4, 12), (16, 16, 3), rng.randint(3, 8), max_pixel=rng.randint(100, 250),
                          seed=rng.randint(0, 10**6))
    signs_like = PreprocessCase(rng.randint(10, 20), (64, 64, 3), 6, seed=rng.randint(0, 10**6))
    return {
        "test_preprocess": _cell("preprocess", "preprocess", PREPROCESS_CASES),
        "hidden_tests_preprocess": _cell("preprocess", "preprocess", [hidden]),
        "hidden_tests_preprocess_data": _cell("preprocess", "preprocess", [dark, signs_like]),
    }


def _cifar10(rng):
    from resnet_course.exercises import SMALL_IMAGE_CASES, SmallImageCase

    def draw(channels, sizes):
        size = rng.choice(sizes)
        return SmallImageCase((size, size, channels), rng.randint(2, 12))

    return {
        "test_small_image_resnet": _cell("small_image_resnet", "small_image_resnet", SMALL_IMAGE_CASES),
        "hidden_tests_small_image_resnet": _cell("small_image_resnet", "small_image_resnet",
                                                 [draw(rng.choice((1, 3)), (28, 32, 36, 40))]),
        "hidden_tests_small_image_resnet_fer": _cell("small_image_resnet", "small_image_resnet",
                                                     [draw(1, (44, 48, 52))]),
    }


def _fer2013(rng):
    from resnet_course.exercises import CONFUSION_CASES, MOST_CONFUSED_CASES, ConfusionCase

    classes = rng.randint(4, 8)
    confusion = [
        ConfusionCase(rng.randint(20, 80), classes, present=classes - rng.randint(1, 2), seed=rng.randint(0, 10**6)),
        ConfusionCase(rng.randint(10, 40), rng.randint(3, 7), as_lists=True, seed=rng.randint(0, 10**6)),
    ]
    return {
        "test_confusion_matrix": _cell("confusion_matrix", "confusion_matrix", CONFUSION_CASES),
        "hidden_tests_confusion_matrix": _cell("confusion_matrix", "confusion_matrix", confusion),
        "test_most_confused_pair": _cell(
            "most_confused_pair", "most_confused_pair",
            [{"matrix": m, "names": list(n)} for m, n in MOST_CONFUSED_CASES]
            + [_confusion_matrix_case(rng, floats=True), _confusion_matrix_case(rng, floats=False)],
        ),
    }


def _confusion_matrix_case(rng, *, floats: bool) -> dict:
    """A k x k matrix whose largest off-diagonal entry is unique, with a larger diagonal entry elsewhere."""
    k = rng.randint(3, 7)
    values = rng.sample(range(1, 200), k * k)
    matrix = [[values[i * k + j] for j in range(k)] for i in range(k)]
    i = rng.randrange(k)
    matrix[i][i] = max(values) + rng.randint(1, 50)  # a diagonal entry beats every off-diagonal one
    if floats:
        total = sum(map(sum, matrix))
        matrix = [[round(v / total, 6) for v in row] for row in matrix]
    return {"matrix": matrix, "names": list(rng.sample(_CLASS_NAMES, k))}


_DRAWERS = {
    "01-identity-block": _blocks("identity_block", True, IDENTITY_BLOCK_CASES),
    "02-convolutional-block": _blocks("convolutional_block", False, CONVOLUTIONAL_BLOCK_CASES),
    "03-resnet50": _resnet50,
    "04-signs": _signs,
    "05-cifar10": _cifar10,
    "06-fer2013": _fer2013,
}


def block_case(data: dict) -> BlockCase:
    """A BlockCase from its JSON form (refusing values outside what the grader draws)."""
    s = data.get("s")
    return BlockCase(tuple(int(d) for d in data["input_shape"]), int(data["f"]),
                     tuple(int(f) for f in data["filters"]), int(data["stage"]), str(data["block"]),
                     None if s is None else int(s))


def model_case(data: dict) -> ModelCase:
    return ModelCase(tuple(int(d) for d in data["input_shape"]), int(data["classes"]))
