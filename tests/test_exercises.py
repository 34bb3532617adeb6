"""The training notebooks' checkers: right answers pass, typical mistakes fail with their hint."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from resnet_course import exercises
from resnet_course.grading.failure import GradingFailure
from resnet_course.model import ResNet50
from resnet_course.plots import confusion_matrix as reference_confusion_matrix

HIDDEN_PREPROCESS = [
    exercises.PreprocessCase(20, (48, 48, 1), 7, present=5, seed=2),
    exercises.PreprocessCase(6, (16, 16, 3), 4, max_pixel=200, seed=3),
]


def preprocess(x, y, classes):
    return x.astype("float32") / 255, np.eye(classes, dtype="float32")[y]


def test_preprocess_right_answer_passes(capsys):
    exercises.check_preprocess(preprocess)
    exercises.check_preprocess(preprocess, cases=HIDDEN_PREPROCESS)
    exercises.check_preprocess(lambda x, y, c: (x / np.float32(255), keras.utils.to_categorical(y, c).astype("float32")))
    assert capsys.readouterr().out == "All tests passed.\n" * 3


@pytest.mark.parametrize("wrong, message, cases", [
    (lambda x, y, c: (x / 255, np.eye(c, dtype="float32")[y]), "dtype float64", None),
    (lambda x, y, c: (x.astype("float32"), np.eye(c, dtype="float32")[y]), "expected [0, 1]", None),
    (lambda x, y, c: (x.astype("float32") / x.max(), np.eye(c, dtype="float32")[y]),
     "not by this batch's largest pixel", HIDDEN_PREPROCESS[1:]),
    (lambda x, y, c: (x.astype("float32") / 255, np.eye(y.max() + 1, dtype="float32")[y]),
     "not with the largest label", HIDDEN_PREPROCESS[:1]),
    (lambda x, y, c: (x.astype("float32") / 255, np.eye(c, dtype="float32")[(y + 1) % c]),
     "not always at the label's index", None),
    (lambda x, y, c: (x.astype("float32") / 255, y), "y has shape", None),
    (lambda x, y, c: x.astype("float32") / 255, "expected a pair", None),
])
def test_preprocess_mistakes_fail_with_a_hint(wrong, message, cases):
    with pytest.raises(AssertionError, match="preprocess failed on case") as error:
        exercises.check_preprocess(wrong, **({"cases": cases} if cases else {}))
    assert message in str(error.value)


def test_preprocess_in_place_is_caught():
    def in_place(x, y, classes):
        x[...] = 0
        return x.astype("float32"), np.eye(classes, dtype="float32")[y]

    with pytest.raises(AssertionError, match="in place"):
        exercises.check_preprocess(in_place)


def test_an_unwritten_exercise_gets_one_line():
    def stub(*args):
        raise NotImplementedError()

    for check, name in ((exercises.check_preprocess, "preprocess"),
                        (exercises.check_small_image_resnet, "small_image_resnet"),
                        (exercises.check_confusion_matrix, "confusion_matrix"),
                        (exercises.check_most_confused_pair, "most_confused_pair")):
        with pytest.raises(GradingFailure) as raised:
            check(stub)
        assert str(raised.value).startswith(f"{name} isn't written yet: replace `raise NotImplementedError()`")
        assert raised.value._render_traceback_()[1:] == []  # IPython shows that one line, no traceback


def test_not_implemented_from_elsewhere_is_reported_as_the_students_error():
    def calls_something_unsupported(*args):
        raise NotImplementedError("not supported by this backend")

    with pytest.raises(GradingFailure, match="raised NotImplementedError: not supported by this backend"):
        exercises.check_confusion_matrix(calls_something_unsupported)


def test_small_image_resnet(capsys):
    exercises.check_small_image_resnet(exercises.small_image_reference)
    assert capsys.readouterr().out == "All tests passed.\n"
    mistakes = {
        "stem_pool=False": lambda s, c: ResNet50(s, c, pooling="global", bn_momentum=0.9),
        "pooling='global'": lambda s, c: ResNet50(s, c, stem_pool=False, bn_momentum=0.9),
        "bn_momentum=0.9": lambda s, c: ResNet50(s, c, stem_pool=False, pooling="global"),
        "parameters": lambda s, c: ResNet50(s, c, stem_pool=False, pooling="global", bn_momentum=0.9,
                                            identity_blocks=(1, 1, 1, 1)),
        "pass classes on": lambda s, c: ResNet50(s, 6, stem_pool=False, pooling="global", bn_momentum=0.9),
    }
    for hint, wrong in mistakes.items():
        with pytest.raises(AssertionError, match="small_image_resnet failed") as error:
            exercises.check_small_image_resnet(wrong)
        assert hint in str(error.value), hint


def confusion_matrix(y_true, y_pred, num_classes):
    cm = np.zeros((num_classes, num_classes), dtype=int)
    for t, p in zip(y_true, y_pred):
        cm[t, p] += 1
    return cm


HIDDEN_CONFUSION = [exercises.ConfusionCase(50, 5, present=3, seed=4), exercises.ConfusionCase(30, 4, as_lists=True)]


def test_confusion_matrix(capsys):
    exercises.check_confusion_matrix(confusion_matrix)
    exercises.check_confusion_matrix(confusion_matrix, cases=HIDDEN_CONFUSION)
    assert capsys.readouterr().out == "All tests passed.\n" * 2
    for case in exercises.CONFUSION_CASES + tuple(HIDDEN_CONFUSION):
        y_true, y_pred = case.make()
        assert not np.array_equal(reference_confusion_matrix(y_true, y_pred, case.classes),
                                  reference_confusion_matrix(y_pred, y_true, case.classes)), case
    mistakes = {
        "swapped": lambda t, p, k: confusion_matrix(p, t, k),
        "dtype float64": lambda t, p, k: confusion_matrix(t, p, k).astype(float),
        "wrong counts": lambda t, p, k: np.roll(confusion_matrix(t, p, k), 1, axis=1),
        "add up to": lambda t, p, k: confusion_matrix(t, p, k) + np.eye(k, dtype=int),
        "returned None": lambda t, p, k: None,
    }
    for hint, wrong in mistakes.items():
        with pytest.raises(AssertionError, match="confusion_matrix failed") as error:
            exercises.check_confusion_matrix(wrong)
        assert hint in str(error.value), hint
    with pytest.raises(AssertionError, match="num_classes"):
        exercises.check_confusion_matrix(lambda t, p, k: confusion_matrix(t, p, max(max(t), max(p)) + 1),
                                         cases=HIDDEN_CONFUSION[:1])


def most_confused_pair(cm, class_names):
    off = np.array(cm, dtype=float)
    np.fill_diagonal(off, -1)
    i, j = np.unravel_index(np.argmax(off), off.shape)
    return class_names[i], class_names[j]


def test_most_confused_pair(capsys):
    exercises.check_most_confused_pair(most_confused_pair)
    assert capsys.readouterr().out == "All tests passed.\n"
    assert exercises.most_confused_pair_reference(*exercises.MOST_CONFUSED_CASES[0]) == ("dog", "cat")

    def with_diagonal(cm, names):
        i, j = np.unravel_index(np.argmax(cm), np.shape(cm))
        return names[i], names[j]

    def in_place(cm, names):
        np.fill_diagonal(cm, 0)
        return with_diagonal(cm, names)

    mistakes = {
        "leave the diagonal out": with_diagonal,
        "wrong order": lambda cm, names: most_confused_pair(cm, names)[::-1],
        "in place": in_place,
        "expected a pair": lambda cm, names: "dog",
    }
    for hint, wrong in mistakes.items():
        with pytest.raises(AssertionError, match="most_confused_pair failed") as error:
            exercises.check_most_confused_pair(wrong)
        assert hint in str(error.value), hint
