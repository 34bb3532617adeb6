"""Checkers for the exercises of the training notebooks (04 SIGNS, 05 CIFAR-10, 06 FER-2013).

>>> from resnet_course.exercises import check_preprocess
>>> check_preprocess(preprocess)        # doctest: +SKIP
All tests passed.

Each checker calls the student's function on a few cases, compares the result with the course's
reference, and prints ``All tests passed.``; on the first difference it raises a
``GradingFailure`` (an ``AssertionError`` that IPython shows as its message alone) that names the
case and says what is wrong, with a hint. An exercise still holding its stub gets one line saying so. The notebooks' hidden
tests pass other ``cases``.

* ``check_preprocess``: ``preprocess(x, y, classes)`` -> float32 pixels in [0, 1] and one-hot labels (04);
* ``check_small_image_resnet``: ``small_image_resnet(input_shape, classes)``, ResNet-50 options
  for small images (05);
* ``check_confusion_matrix`` and ``check_most_confused_pair``: computing a confusion matrix and
  reading it (06).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from resnet_course.grading.failure import GradingFailure

__all__ = [
    "PreprocessCase",
    "PREPROCESS_CASES",
    "check_preprocess",
    "SmallImageCase",
    "SMALL_IMAGE_CASES",
    "small_image_reference",
    "check_small_image_resnet",
    "ConfusionCase",
    "CONFUSION_CASES",
    "check_confusion_matrix",
    "MOST_CONFUSED_CASES",
    "most_confused_pair_reference",
    "check_most_confused_pair",
]

PASSED = "All tests passed."


def _fail(exercise: str, index: int, total: int, case, message: str) -> GradingFailure:
    return GradingFailure(f"{exercise} failed on case {index} of {total} ({case}): {message}")


def _call(exercise: str, index: int, total: int, case, fn, *args):
    try:
        return fn(*args)
    except NotImplementedError as error:
        if str(error):  # raised by something the student called, not the exercise's stub
            raise _fail(exercise, index, total, case, f"it raised NotImplementedError: {error}") from error
        raise GradingFailure(
            f"{exercise} isn't written yet: replace `raise NotImplementedError()` in its cell with your "
            "code, run that cell, then run this test again."
        ) from None
    except Exception as error:  # the student's code raised: say where
        raise _fail(exercise, index, total, case, f"it raised {type(error).__name__}: {error}") from error


# --- 04: preprocess ------------------------------------------------------------------------


@dataclass(frozen=True)
class PreprocessCase:
    """``n`` random uint8 images of ``shape`` with labels in [0, classes); ``present``: the labels used."""

    n: int
    shape: tuple[int, int, int]
    classes: int
    present: int | None = None  # labels drawn from [0, present); None: every class
    max_pixel: int = 255  # the brightest pixel of the batch
    seed: int = 0

    def __str__(self) -> str:
        extra = f", labels only 0-{self.present - 1}" if self.present else ""
        extra += f", pixels up to {self.max_pixel}" if self.max_pixel != 255 else ""
        return f"{self.n} images {self.shape}, {self.classes} classes{extra}"

    def make(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        x = rng.integers(0, self.max_pixel + 1, size=(self.n, *self.shape), dtype=np.uint8)
        x.flat[0] = self.max_pixel
        y = rng.integers(0, self.present or self.classes, size=self.n).astype(np.int64)
        return x, y


PREPROCESS_CASES = (
    PreprocessCase(12, (64, 64, 3), 6),
    PreprocessCase(5, (8, 8, 3), 6, seed=1),
)


def check_preprocess(preprocess, cases: Sequence[PreprocessCase] = PREPROCESS_CASES) -> None:
    """``preprocess(x, y, classes)`` must return ``(x / 255 as float32, one-hot y as float32)``."""
    total = len(cases)
    for index, case in enumerate(cases, 1):
        x, y = case.make()
        result = _call("preprocess", index, total, case, preprocess, x, y, case.classes)
        pair = isinstance(result, tuple) and len(result) == 2
        x_out, y_out = (np.asarray(a) for a in result) if pair else (None, None)
        judge_preprocess(index, total, case, None if pair else type(result).__name__, x_out, y_out, x, y)
    print(PASSED)


def judge_preprocess(index, total, case, returned_type, x_out, y_out, x_after, y_after) -> None:
    """Judge one call of ``preprocess`` on ``case.make()``: ``returned_type`` names what it returned
    unless it was a pair, ``x_out, y_out`` the pair as arrays, ``x_after, y_after`` its arguments after
    the call. Raises AssertionError with the message."""
    x, y = case.make()

    def fail(message):
        return _fail("preprocess", index, total, case, message)

    if returned_type is not None:
        raise fail(f"it returned {returned_type}, expected a pair (x, y): `return x, y`.")
    if not (np.array_equal(x, x_after) and np.array_equal(y, y_after)):
        raise fail("it changed its arguments in place; compute new arrays instead.")
    # the images
    if x_out.shape != x.shape:
        raise fail(f"x has shape {x_out.shape}, expected {x.shape}: keep the images' shape.")
    if x_out.dtype != np.float32:
        raise fail(f"x has dtype {x_out.dtype}, expected float32: `x.astype('float32') / 255` "
                   "(float64 doubles the memory and Keras computes in float32 anyway).")
    if x_out.min() < 0 or x_out.max() > 1:
        raise fail(f"x has values from {x_out.min():g} to {x_out.max():g}, expected [0, 1]: divide by 255.")
    if not np.allclose(x_out, x.astype(np.float32) / 255, atol=1e-6):
        hint = ("divide by 255, the largest possible pixel, not by this batch's largest pixel"
                if np.allclose(x_out, x / max(1, x.max()), atol=1e-6) else "expected x / 255")
        raise fail(f"x isn't the pixels divided by 255: {hint}.")
    # the labels
    if y_out.shape != (case.n, case.classes):
        hint = (f" (the labels use only {case.present} of the {case.classes} classes: size the one-hot "
                "vectors with `classes`, not with the largest label)" if case.present else "")
        raise fail(f"y has shape {y_out.shape}, expected ({case.n}, {case.classes}): one row per image, "
                   f"one column per class{hint}.")
    if y_out.dtype != np.float32:
        raise fail(f"y has dtype {y_out.dtype}, expected float32 (the loss compares it with the "
                   "model's float32 probabilities).")
    if not np.array_equal(y_out, np.eye(case.classes, dtype=np.float32)[y]):
        if np.array_equal(np.sort(y_out, axis=1), np.sort(np.eye(case.classes)[y], axis=1)):
            raise fail("every row of y is one-hot, but not always at the label's index: "
                       f"y[i, y_label[i]] must be 1 (argmax gives {y_out.argmax(1)[:6]}..., "
                       f"the labels are {y[:6]}...).")
        raise fail("y isn't one-hot: each row must be all zeros but a 1 at the label's index "
                   "(`np.eye(classes, dtype='float32')[y]`).")


# --- 05: ResNet-50 for small images -------------------------------------------------------------


@dataclass(frozen=True)
class SmallImageCase:
    input_shape: tuple[int, int, int]
    classes: int

    def __str__(self) -> str:
        return f"input_shape={self.input_shape}, classes={self.classes}"


SMALL_IMAGE_CASES = (SmallImageCase((32, 32, 3), 10),)


def small_image_reference(input_shape=(32, 32, 3), classes=10):
    """The course's answer: ResNet-50 without the stem's max-pool, global pooling, BN momentum 0.9."""
    from resnet_course.model import ResNet50

    return ResNet50(input_shape, classes, stem_pool=False, pooling="global", bn_momentum=0.9)


def _last_stage_size(model) -> tuple[int, int]:
    from resnet_course.model import stage_output_names

    shape = model.get_layer(stage_output_names(model)[-1]).output.shape
    return int(shape[1]), int(shape[2])


def check_small_image_resnet(small_image_resnet, cases: Sequence[SmallImageCase] = SMALL_IMAGE_CASES) -> None:
    """``small_image_resnet(input_shape, classes)`` must be the full ResNet-50 with the options for small
    images: no stem max-pool, global average pooling, batch-norm momentum 0.9."""
    import keras

    total = len(cases)
    for index, case in enumerate(cases, 1):
        model = _call("small_image_resnet", index, total, case, small_image_resnet, case.input_shape, case.classes)
        if not isinstance(model, keras.Model):
            judge_small_image_resnet(index, total, case, type(model).__name__, None)
        judge_small_image_resnet(index, total, case, None, model)
    print(PASSED)


def judge_small_image_resnet(index, total, case, returned_type, model) -> None:
    """Judge the model ``small_image_resnet`` returned for ``case`` (``returned_type``: the type of a
    returned value that isn't a keras.Model). Raises AssertionError with the message."""
    import keras
    from keras import layers

    def fail(message):
        return _fail("small_image_resnet", index, total, case, message)

    if returned_type is not None:
        raise fail(f"it returned {returned_type}, expected a keras.Model (what ResNet50 returns).")
    reference = small_image_reference(case.input_shape, case.classes)
    if tuple(model.input_shape) != (None, *case.input_shape):
        raise fail(f"the model takes {tuple(model.input_shape)}, expected {(None, *case.input_shape)}: "
                   "pass input_shape on.")
    if tuple(model.output_shape) != (None, case.classes):
        raise fail(f"the model outputs {tuple(model.output_shape)}, expected {(None, case.classes)}: "
                   "pass classes on.")
    names = {layer.name for layer in model.layers}
    if "pool1" in names:
        size = _last_stage_size(model)
        raise fail(f"the stem still has its max-pool (layer pool1), so stage 5 sees only {size[0]}x{size[1]} "
                   "positions: pass stem_pool=False.")
    if model.count_params() != reference.count_params():
        raise fail(f"{model.count_params():,} parameters, expected {reference.count_params():,} (the full "
                   "ResNet-50): keep the default filters and identity_blocks, change only the options "
                   "the exercise names.")
    head = model.get_layer("avg_pool") if "avg_pool" in names else None
    if head is None or not isinstance(head, layers.GlobalAveragePooling2D):
        raise fail(f"the head pools with {type(head).__name__}: pass pooling='global' (global average "
                   "pooling averages all of stage 5's positions, whatever the input size).")
    if sorted(names) != sorted(layer.name for layer in reference.layers):
        raise fail("its layers aren't those of the reference: missing "
                   f"{sorted(set(l.name for l in reference.layers) - names)[:5]}, extra "
                   f"{sorted(names - set(l.name for l in reference.layers))[:5]}.")
    if _last_stage_size(model) != _last_stage_size(reference):
        raise fail(f"stage 5 is {_last_stage_size(model)}, expected {_last_stage_size(reference)}.")
    momenta = sorted({round(float(l.momentum), 6) for l in model.layers
                      if isinstance(l, layers.BatchNormalization)})
    if momenta != [0.9]:
        raise fail(f"the batch norms' momentum is {momenta}, expected 0.9: pass bn_momentum=0.9 (with "
                   "Keras' 0.99 the moving statistics lag behind the weights in a short run).")
    # convert_to_numpy, not np.asarray: on PyTorch the output is a tensor numpy can't read directly
    probabilities = keras.ops.convert_to_numpy(model(np.zeros((2, *case.input_shape), "float32"), training=False))
    if not np.allclose(probabilities.sum(axis=1), 1, atol=1e-3):
        raise fail("the outputs don't sum to 1: keep the softmax classifier.")


# --- 06: the confusion matrix -----------------------------------------------------------------


@dataclass(frozen=True)
class ConfusionCase:
    n: int
    classes: int
    present: int | None = None  # labels drawn from [0, present); None: every class
    as_lists: bool = False
    seed: int = 0

    def __str__(self) -> str:
        extra = f", labels only 0-{self.present - 1}" if self.present else ""
        extra += ", Python lists" if self.as_lists else ""
        return f"{self.n} labels, {self.classes} classes{extra}"

    def make(self):
        rng = np.random.default_rng(self.seed)
        high = self.present or self.classes
        y_true = rng.integers(0, high, size=self.n)
        # mostly right, some mistakes, more of them towards the next class: an asymmetric matrix
        y_pred = np.where(rng.random(self.n) < 0.6, y_true, (y_true + rng.integers(1, 3, size=self.n)) % high)
        if self.as_lists:
            return [int(v) for v in y_true], [int(v) for v in y_pred]
        return y_true, y_pred


CONFUSION_CASES = (
    ConfusionCase(200, 7),
    ConfusionCase(4, 3, seed=1),
)


def check_confusion_matrix(confusion_matrix, cases: Sequence[ConfusionCase] = CONFUSION_CASES) -> None:
    """``confusion_matrix(y_true, y_pred, num_classes)``: counts C[i, j] of true class i predicted as j."""
    total = len(cases)
    for index, case in enumerate(cases, 1):
        y_true, y_pred = case.make()
        result = _call("confusion_matrix", index, total, case, confusion_matrix, y_true, y_pred, case.classes)
        judge_confusion_matrix(index, total, case, None if result is None else np.asarray(result))
    print(PASSED)


def judge_confusion_matrix(index, total, case, result) -> None:
    """Judge the matrix ``confusion_matrix`` returned for ``case`` (None: it returned None)."""
    from resnet_course.plots import confusion_matrix as reference

    def fail(message):
        return _fail("confusion_matrix", index, total, case, message)

    y_true, y_pred = case.make()
    expected = reference(y_true, y_pred, case.classes)
    if result is None:
        raise fail("it returned None: return the matrix.")
    if result.shape != expected.shape:
        hint = (" (the labels don't use every class: size it with num_classes, not with the largest label)"
                if case.present else "")
        raise fail(f"the matrix has shape {result.shape}, expected {expected.shape}{hint}.")
    if not (np.issubdtype(result.dtype, np.number) or result.dtype == bool):
        raise fail(f"the matrix has dtype {result.dtype}: it must hold counts, integers (e.g. dtype=int).")
    if not np.issubdtype(result.dtype, np.number) or not np.array_equal(result, expected):
        if np.array_equal(result, expected.T):
            raise fail("rows and columns are swapped: C[i, j] counts examples of TRUE class i "
                       "PREDICTED as class j.")
        if result.sum() != expected.sum():
            raise fail(f"its entries add up to {result.sum()}, expected {expected.sum()}, one count per "
                       "example.")
        raise fail(f"wrong counts:\n{result}\nexpected\n{expected}")
    if not np.issubdtype(result.dtype, np.integer):
        raise fail(f"the matrix has dtype {result.dtype}: counts are integers (e.g. dtype=int).")


def most_confused_pair_reference(cm, class_names):
    """The (true class, predicted class) names of the largest off-diagonal entry; the first one on ties."""
    cm = np.array(cm, dtype=float)
    np.fill_diagonal(cm, -np.inf)
    i, j = np.unravel_index(np.argmax(cm), cm.shape)
    return str(class_names[i]), str(class_names[j])


#: (matrix, class names) pairs; a matrix is a list of rows.
MOST_CONFUSED_CASES = (
    ([[50, 2, 1], [9, 40, 3], [0, 4, 45]], ("cat", "dog", "fox")),
    ([[5, 1, 0, 0], [0, 9, 0, 7], [0, 0, 8, 0], [2, 0, 0, 1]], ("a", "b", "c", "d")),
)


def check_most_confused_pair(most_confused_pair, cases=MOST_CONFUSED_CASES) -> None:
    """``most_confused_pair(cm, class_names)`` -> (true class name, predicted class name) of the largest
    off-diagonal count."""
    total = len(cases)
    for index, (cm, names) in enumerate(cases, 1):
        matrix = np.asarray(cm)
        case = f"{len(names)} classes {', '.join(names)}"
        result = _call("most_confused_pair", index, total, case, most_confused_pair, matrix, list(names))
        pair = tuple(str(r) for r in result) if isinstance(result, tuple) and len(result) == 2 else None
        judge_most_confused_pair(index, total, cm, names, matrix, pair, repr(result))
    print(PASSED)


def judge_most_confused_pair(index, total, cm, names, matrix_after, pair, returned) -> None:
    """Judge what ``most_confused_pair(cm, names)`` gave: ``pair`` the two names as strings, or None
    when it didn't return a pair (``returned``: the repr of what it returned); ``matrix_after``: the
    matrix after the call."""
    matrix = np.asarray(cm)
    case = f"{len(names)} classes {', '.join(names)}"

    def fail(message):
        return _fail("most_confused_pair", index, total, case, message)

    if not np.array_equal(matrix, matrix_after):
        raise fail("it changed the matrix in place (np.fill_diagonal on cm itself?): work on a copy, cm.copy().")
    expected = most_confused_pair_reference(cm, names)
    if pair is None:
        raise fail(f"it returned {returned}, expected a pair of class names like {expected!r}.")
    result = pair
    if result != expected:
        i, j = np.unravel_index(np.argmax(matrix), matrix.shape)
        if i == j and result == (str(names[i]), str(names[j])):
            raise fail(f"it returned {result!r}, a diagonal entry (the right answers for {names[i]}): "
                       "leave the diagonal out.")
        if result == expected[::-1]:
            raise fail(f"it returned {result!r}, the right classes in the wrong order: rows are the true "
                       f"classes, so the answer is {expected!r}.")
        raise fail(f"it returned {result!r}, expected {expected!r}, the largest count off the diagonal.")
