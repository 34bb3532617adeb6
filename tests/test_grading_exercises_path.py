"""The training notebooks' exercises (04-06) through trusted grading's data path: right answers and
typical mistakes get, through collect -> score, exactly the message the notebook's check gives."""

from __future__ import annotations

import warnings

import pytest

from resnet_course import exercises
from resnet_course.grading.cases import _as_dict

try:
    from test_grading_data_path import run_collect
except ImportError:  # tests/ imported as a package
    from tests.test_grading_data_path import run_collect

#: the students, as the source of one notebook cell
STUDENTS = '''
import numpy as np
from resnet_course.model import ResNet50


def preprocess_right(x, y, classes):
    return x.astype("float32") / 255, np.eye(classes, dtype="float32")[y]

def preprocess_float64(x, y, classes):
    return x / 255, np.eye(classes, dtype="float32")[y]

def preprocess_batch_max(x, y, classes):
    return x.astype("float32") / x.max(), np.eye(classes, dtype="float32")[y]

def preprocess_largest_label(x, y, classes):
    return x.astype("float32") / 255, np.eye(y.max() + 1, dtype="float32")[y]

def preprocess_single(x, y, classes):
    return x.astype("float32") / 255

def preprocess_in_place(x, y, classes):
    x[...] = 0
    return x.astype("float32"), np.eye(classes, dtype="float32")[y]

def preprocess_raises(x, y, classes):
    return x.astype("float32") / 255, np.eye(classes)[y.reshape(2, -1, 7)]


def cm_right(y_true, y_pred, num_classes):
    cm = np.zeros((num_classes, num_classes), dtype=int)
    for t, p in zip(y_true, y_pred):
        cm[t, p] += 1
    return cm

def cm_swapped(t, p, k):
    return cm_right(p, t, k)

def cm_float(t, p, k):
    return cm_right(t, p, k).astype(float)

def cm_none(t, p, k):
    return None

def cm_strings(t, p, k):
    return [["x"] * k] * k


def pair_right(cm, class_names):
    off = np.array(cm, dtype=float)
    np.fill_diagonal(off, -1)
    i, j = np.unravel_index(np.argmax(off), off.shape)
    return class_names[i], class_names[j]

def pair_diagonal(cm, names):
    i, j = np.unravel_index(np.argmax(cm), np.shape(cm))
    return names[i], names[j]

def pair_reversed(cm, names):
    return pair_right(cm, names)[::-1]

def pair_in_place(cm, names):
    np.fill_diagonal(cm, 0)
    return pair_diagonal(cm, names)

def pair_string(cm, names):
    return "dog"


def small_right(input_shape, classes):
    return ResNet50(input_shape, classes, stem_pool=False, pooling="global", bn_momentum=0.9)

def small_with_pool(input_shape, classes):
    return ResNet50(input_shape, classes, pooling="global", bn_momentum=0.9)

def small_momentum(input_shape, classes):
    return ResNet50(input_shape, classes, stem_pool=False, pooling="global")

def small_tensor(input_shape, classes):
    return small_right(input_shape, classes).outputs[0]
'''

PREPROCESS_CASES = list(exercises.PREPROCESS_CASES) + [exercises.PreprocessCase(20, (48, 48, 1), 7, present=5, seed=2),
                                                        exercises.PreprocessCase(6, (16, 16, 3), 4, max_pixel=200)]
CONFUSION_CASES = list(exercises.CONFUSION_CASES) + [exercises.ConfusionCase(30, 4, as_lists=True, seed=5)]
PAIR_CASES = [{"matrix": m, "names": list(n)} for m, n in exercises.MOST_CONFUSED_CASES]
SMALL_CASES = [exercises.SmallImageCase((28, 28, 1), 5)]

FUNCTIONS = {
    "preprocess": (["preprocess_right", "preprocess_float64", "preprocess_batch_max", "preprocess_largest_label",
                    "preprocess_single", "preprocess_in_place", "preprocess_raises"], PREPROCESS_CASES,
                   exercises.check_preprocess),
    "confusion_matrix": (["cm_right", "cm_swapped", "cm_float", "cm_none", "cm_strings"], CONFUSION_CASES,
                         exercises.check_confusion_matrix),
    "most_confused_pair": (["pair_right", "pair_diagonal", "pair_reversed", "pair_in_place", "pair_string"],
                           PAIR_CASES, exercises.check_most_confused_pair),
    "small_image_resnet": (["small_right", "small_with_pool", "small_momentum", "small_tensor"], SMALL_CASES,
                           exercises.check_small_image_resnet),
}


def _direct(check, fn, cases):
    if check is exercises.check_most_confused_pair:
        cases = [(case["matrix"], tuple(case["names"])) for case in cases]
    try:
        check(fn, cases=cases)
    except AssertionError as failure:
        return str(failure)
    return None


@pytest.mark.slow
def test_exercises_get_the_notebook_checks_messages(tmp_path):
    from resnet_course.grading.verdict import judge_cell, read_manifest

    cells = {}
    for check, (names, cases, _) in FUNCTIONS.items():
        for name in names:
            cells[name] = {"check": check, "function": name, "cases": [_as_dict(c) for c in cases]}
    program = "CELLS = " + repr([{"role": "answer", "exercise": None, "index": 0, "source": STUDENTS}]) + "\n"
    outdir = run_collect(program, {"cells": cells}, tmp_path)
    manifest = read_manifest(outdir)

    namespace = {}
    exec(compile(STUDENTS, "<students>", "exec"), namespace)  # noqa: S102 - the test's own students
    checked = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for check, (names, cases, direct_check) in FUNCTIONS.items():
            for name in names:
                expected = _direct(direct_check, namespace[name], cases)
                found = judge_cell(name, cells[name], manifest, outdir)
                if name.endswith("_right"):
                    assert expected is None and found is None, (name, found)
                else:
                    assert expected is not None, name
                    assert found == expected, (name, found, expected)
                checked += 1
    assert checked == sum(len(names) for names, _, _ in FUNCTIONS.values())
