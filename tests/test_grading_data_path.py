"""Trusted grading's data path, resnet_course.grading.{assignments,cases,program,collect,allowlist,verdict}.

The child process runs for real here (``python -m resnet_course.grading.collect`` in a subprocess,
without the runner's sandbox); the verdicts on what it hands back must be those of the notebook's checks.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from resnet_course.grading.assignments import ASSIGNMENTS
from resnet_course.grading.cases import draw_cases
from resnet_course.grading.program import build_program, static_flags

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def run_collect(program: str, cases: dict, work: Path) -> Path:
    """The child's side, in a subprocess: returns its OUTDIR."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "program.py").write_text(program)
    (work / "cases.json").write_text(json.dumps(cases))
    outdir = work / "out"
    subprocess.run([sys.executable, "-m", "resnet_course.grading.collect", str(work / "program.py"),
                    str(work / "cases.json"), str(outdir)], cwd=work, capture_output=True, timeout=900)
    return outdir


def notebook_path(folder: str, assignment: str) -> Path:
    return ROOT / folder / assignment / ASSIGNMENTS[assignment].notebook


# --- collect -> score on the solutions and on the release --------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("assignment", list(ASSIGNMENTS))
def test_solutions_score_full_marks_and_the_release_zero(assignment, tmp_path):
    from resnet_course.grading.verdict import score

    cases = draw_cases(assignment, 11)
    program = build_program(assignment, notebook_path("solutions", assignment))
    assert static_flags(assignment, program) == []
    results = score(assignment, cases, run_collect(program, cases, tmp_path / "solution"))
    assert [r.grade_id for r in results] == list(ASSIGNMENTS[assignment].test_cell_ids)
    assert all(r.passed and r.points == r.max_points for r in results), [r.message for r in results]
    assert sum(r.points for r in results) == ASSIGNMENTS[assignment].points == 10

    release = build_program(assignment, notebook_path("notebooks", assignment))
    results = score(assignment, cases, run_collect(release, cases, tmp_path / "release"))
    assert all(r.points == 0 and not r.passed for r in results)
    assert all("NotImplementedError" in r.message for r in results), [r.message for r in results]


def test_a_missing_handback_scores_zero_with_a_reason(tmp_path):
    from resnet_course.grading.verdict import score

    cases = draw_cases("01-identity-block", 1)
    results = score("01-identity-block", cases, tmp_path)
    assert [r.points for r in results] == [0, 0, 0]
    assert all(r.message.startswith("Not graded: the grading process of your notebook stopped") for r in results)
    (tmp_path / "manifest.json").write_text("{not json")
    assert score("01-identity-block", cases, tmp_path)[0].message == (
        "Not graded: the grading process handed back garbled results.")


# --- styles and mistakes: the same verdict as the direct checks --------------------------------------

BLOCK_OPTIONS = [
    dict(), dict(relu="activation"), dict(relu="function"), dict(relu="ops"), dict(add="add"), dict(add="swap"),
    dict(add="plus"), dict(add="ops"), dict(tuples=True), dict(relu_names="custom"),
    dict(relu_names="none", relu="activation"), dict(bn_negative_axis=True, padding_upper=True),
    dict(final_relu=False), dict(relu_before_add=True), dict(bn_axis=1), dict(padding_2b="valid"),
    dict(filter_order=(1, 0, 2)), dict(kernel_2b=3), dict(skip_bn="2b"), dict(names="none"),
    dict(names="misspelt"), dict(names="hardcoded"), dict(bn_relu_swapped=True), dict(use_bias=False),
    dict(conv_activation="relu"), dict(shortcut_from="after_2a"), dict(relu6=True), dict(return_none=True),
    dict(undefined_name=True),
]
CONV_OPTIONS = [
    dict(), dict(relu="activation", add="swap", tuples=True), dict(add="plus", relu="function", relu_names="none"),
    dict(stride_on="2b"), dict(projection=False), dict(shortcut_bn=False), dict(shortcut_stride=1),
    dict(final_relu=False),
]
RESNET_OPTIONS = [
    dict(), dict(softmax="activation"), dict(strides=(1, 1, 2, 2)), dict(max_pool=False), dict(return_tensor=True),
]


def _student_program(definitions: list[str]) -> str:
    """A program whose cells are tests/student_mistakes.py and one function per style."""
    source = (TESTS / "student_mistakes.py").read_text()
    cells = [{"role": "definitions", "exercise": None, "index": 0, "source": source},
             {"role": "definitions", "exercise": None, "index": 1, "source": "\n".join(definitions)}]
    return "CELLS = [\n" + "".join(f"    {cell!r},\n" for cell in cells) + "]\n"


def _direct_verdict(check, fn, **kwargs):
    try:
        check(fn, **kwargs)
    except AssertionError as failure:
        return str(failure)
    return None


def _assert_collect_agrees(definitions, cells, direct, tmp_path, compared: slice) -> None:
    """Run the definitions through collect, judge each cell, and compare with the direct verdicts:
    the same pass or fail, and the same ``compared`` lines of the message (the rest holds automatic
    layer names and file names, which differ between the two processes)."""
    from resnet_course.grading.verdict import judge_cell, read_manifest

    outdir = run_collect(_student_program(definitions), {"assignment": None, "seed": 0, "cells": cells}, tmp_path)
    manifest = read_manifest(outdir)
    for name, cell in cells.items():
        found = judge_cell(name, cell, manifest, outdir)
        assert (found is None) == (direct[name] is None), (name, found, direct[name])
        if found is not None:
            assert found.splitlines()[compared] == direct[name].splitlines()[compared], (name, found, direct[name])


@pytest.mark.slow
def test_block_styles_and_mistakes_get_the_direct_checks_verdicts(tmp_path):
    """Every style and mistake of tests/student_mistakes.py: the same verdict (and, as nothing in them
    is custom, the same message) through collect -> score as from the notebook's check."""
    from resnet_course.grading import check_convolutional_block, check_identity_block
    from resnet_course.grading.cases import CONVOLUTIONAL_BLOCK_CASES, IDENTITY_BLOCK_CASES, _as_dict

    sys.path.insert(0, str(TESTS))
    from student_mistakes import student_convolutional_block, student_identity_block

    definitions, cells, direct = [], {}, {}
    for kind, options, cases, make, check in (
        ("identity_block", BLOCK_OPTIONS, IDENTITY_BLOCK_CASES, student_identity_block, check_identity_block),
        ("convolutional_block", CONV_OPTIONS, CONVOLUTIONAL_BLOCK_CASES, student_convolutional_block,
         check_convolutional_block),
    ):
        for number, option in enumerate(options):
            name = f"{kind}_{number}"
            definitions.append(f"{name} = student_{kind}(**{option!r})")
            cells[name] = {"check": kind, "function": name, "cases": [_as_dict(c) for c in cases]}
            direct[name] = _direct_verdict(check, make(**option))
    _assert_collect_agrees(definitions, cells, direct, tmp_path, slice(0, 1))


@pytest.mark.slow
def test_resnet50_styles_and_mistakes_get_the_direct_checks_verdicts(tmp_path):
    from resnet_course.grading import check_resnet50
    from resnet_course.grading.cases import RESNET50_CASES, _as_dict

    sys.path.insert(0, str(TESTS))
    from student_mistakes import student_resnet50

    definitions, cells, direct = [], {}, {}
    for number, option in enumerate(RESNET_OPTIONS):
        name = f"ResNet50_{number}"
        definitions.append(f"{name} = student_resnet50(**{option!r})")
        cells[name] = {"check": "resnet50", "function": name, "cases": [_as_dict(RESNET50_CASES[1])]}
        direct[name] = _direct_verdict(check_resnet50, student_resnet50(**option), cases=[RESNET50_CASES[1]])
    _assert_collect_agrees(definitions, cells, direct, tmp_path, slice(1, 2))


@pytest.mark.slow
def test_custom_layers_and_lambdas_are_refused_with_a_message_naming_them(tmp_path):
    from resnet_course.grading.cases import IDENTITY_BLOCK_CASES, _as_dict
    from resnet_course.grading.verdict import judge_cell, read_manifest

    definitions = [
        "f_lambda = student_identity_block(relu='lambda')",
        "f_custom = student_identity_block(conv_layer=DoubledConv2D)",
    ]
    cells = {name: {"check": "identity_block", "function": name, "cases": [_as_dict(IDENTITY_BLOCK_CASES[0])]}
             for name in ("f_lambda", "f_custom")}
    outdir = run_collect(_student_program(definitions), {"cells": cells}, tmp_path)
    manifest = read_manifest(outdir)
    lam = judge_cell("f_lambda", cells["f_lambda"], manifest, outdir)
    assert "layer 'res1a_branch2a_relu' is a Lambda with a Python lambda function" in lam
    assert "so it can be graded" in lam
    custom = judge_cell("f_custom", cells["f_custom"], manifest, outdir)
    assert "layer 'res1a_branch2b' is a custom layer (class 'DoubledConv2D' defined in your code)" in custom
