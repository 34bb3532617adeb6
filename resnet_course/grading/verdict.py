"""The trusted verdict: scores one submission from the data its grading process handed back.

Nothing the student wrote is imported, run or unpickled here: models are read from their config
JSON after ``allowlist`` has checked every class they name, arrays with ``allow_pickle=False``, the
rest as plain JSON. Each test cell is judged by the same functions the notebook's checks use
(``checks.judge_*``, ``exercises.judge_*``), on the same cases (``cases.draw_cases``), so the
messages are the notebook's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnet_course import exercises
from resnet_course.grading import checks
from resnet_course.grading.allowlist import UngradableModel, load_model
from resnet_course.grading.assignments import assignment_spec
from resnet_course.grading.calls import CallOutcome, RaisedError
from resnet_course.grading.cases import block_case, model_case
from resnet_course.grading.collect import MANIFEST
from resnet_course.grading.program import ZEROING

#: the largest manifest read, in bytes
MAX_MANIFEST_BYTES = 5_000_000


@dataclass(frozen=True)
class CellResult:
    """The verdict on one nbgrader test cell."""

    grade_id: str
    points: float
    max_points: float
    passed: bool
    message: str


class HandbackError(ValueError):
    """What the grading process wrote can't be read: the cell scores 0 with this reason."""


def score(assignment: str, cases: dict, outdir, *, flags=()) -> list[CellResult]:
    """One CellResult per test cell of ``assignment``, in the notebook's order.

    ``cases``: what ``draw_cases`` gave for this run (and what the child was given); ``outdir``: the
    child's OUTDIR; ``flags``: ``program.static_flags`` of the submission: a reference copy or hidden
    code zeroes the exercise it was found in (a flag outside an answer cell zeroes every exercise).
    """
    spec = assignment_spec(assignment)
    outdir = Path(outdir)
    zeroed = {}
    for flag in flags:
        if flag.kind in ZEROING:
            for exercise in spec.exercises:
                if flag.exercise in (None, exercise.name):
                    zeroed.setdefault(exercise.name, _flag_message(flag))
    try:
        manifest = read_manifest(outdir)
        problem = None
    except HandbackError as error:
        manifest, problem = None, str(error)
    results = []
    for exercise in spec.exercises:
        for cell in exercise.cells:
            if exercise.name in zeroed:
                message = zeroed[exercise.name]
            elif manifest is None:
                message = f"Not graded: {problem}"
            else:
                message = judge_cell(cell.grade_id, cases["cells"][cell.grade_id], manifest, outdir)
            passed = message is None
            results.append(CellResult(cell.grade_id, float(cell.points) if passed else 0.0, float(cell.points),
                                      passed, checks.PASSED if passed else message))
    return results


def _flag_message(flag) -> str:
    if flag.kind == "reference_use":
        return (f"Scored 0: your answer {flag.detail}. The exercise is to write it yourself; the course's "
                "reference implementation can't be handed in.")
    if flag.kind == "process_control":
        return (f"Scored 0: your code {flag.detail}. No exercise needs processes of its own, and code that "
                "starts, signals or kills them is how a submission would stop the grader or outlive its run.")
    return (f"Scored 0: your answer {flag.detail}; the grader can't read code built while it runs, so the "
            "answer can't be graded. Write the code out.")


def read_manifest(outdir: Path) -> dict:
    path = outdir / MANIFEST
    if not path.is_file():
        raise HandbackError("the grading process of your notebook stopped before it handed back its results "
                            "(a crash, a time or memory limit, or an exit).")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise HandbackError("the grading process handed back more than the grader reads.")
    try:
        manifest = json.loads(path.read_text())
    except ValueError:
        raise HandbackError("the grading process handed back garbled results.") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("results"), dict):
        raise HandbackError("the grading process handed back garbled results.")
    return manifest


def judge_cell(grade_id: str, cell: dict, manifest: dict, outdir: Path) -> str | None:
    """None if the test cell ``grade_id`` (its cases: ``cell``) passes, else the message; ``manifest``:
    ``read_manifest(outdir)``. Never raises for anything the grading process wrote."""
    function = cell["function"]
    try:
        result = manifest["results"].get(grade_id)
        if not isinstance(result, dict):
            if manifest.get("complete") is False:
                return ("Not graded: the grading process of your notebook stopped before this test finished "
                        "(a crash, a time or memory limit, or an exit).")
            return "Not graded: the grading process handed back no result for this test."
        if "missing" in result:
            return _missing_message(function, manifest)
        calls = result.get("calls")
        if not isinstance(calls, list) or len(calls) != max(1, len(cell["cases"])):
            return "Not graded: the grading process handed back garbled results for this test."
        checks.clear_session()
        _JUDGES[cell["check"]](cell, calls, outdir)
    except AssertionError as failure:
        return str(failure)
    except (HandbackError, UngradableModel) as error:
        return f"{function}: {error}"
    except (KeyError, TypeError, ValueError, OSError, AttributeError, IndexError) as error:
        return f"Not graded: the grading process handed back results the grader can't read ({type(error).__name__})."
    except Exception as error:  # noqa: BLE001 - the grader's own failure on a model it loaded: still a verdict
        return (f"Not graded: the grader failed on the model your code built ({type(error).__name__}: "
                f"{str(error)[:300]}); please tell your instructor.")
    return None


def _missing_message(function, manifest) -> str:
    errors = [c for c in manifest.get("cells", []) if isinstance(c, dict) and c.get("error")]
    text = (f"{function} isn't defined: the grader found no function named {function} in your notebook. "
            "Define it in the exercise's answer cell.")
    for record in errors[:3]:
        error = RaisedError.from_dict(record["error"])
        text += f"\nYour cell {record.get('index')} raised {error.type_name}: {error.text[:300]}"
    return text


# --- reading what the child wrote ---------------------------------------------------------------


def _file(outdir: Path, name) -> Path:
    if not isinstance(name, str) or "/" in name or "\\" in name or name.startswith("."):
        raise HandbackError("the grading process named a file the grader doesn't read.")
    path = outdir / name
    if not path.is_file():
        raise HandbackError(f"the grading process didn't write {name}.")
    return path


def _model(outdir: Path, name) -> object:
    return load_model(_file(outdir, name).read_text())


def _array(outdir: Path, record) -> np.ndarray:
    if not isinstance(record, dict) or "array" not in record:
        reason = record.get("unreadable") if isinstance(record, dict) else None
        raise HandbackError(f"it didn't give back an array of numbers ({reason or 'nothing readable'}).")
    return np.load(_file(outdir, record["array"]), allow_pickle=False)


def _outcome(record: dict, outdir: Path) -> CallOutcome:
    """A CallOutcome from its JSON form; refuses a model the allowlist refuses (UngradableModel)."""
    name = str(record.get("name", ""))[:100]
    if "raised" in record:
        diagnosis = None
        if "diagnosis_model" in record:
            try:
                diagnosis = _model(outdir, record["diagnosis_model"])
            except (HandbackError, UngradableModel):
                diagnosis = None  # the diagnosis is a bonus: the exception is reported anyway
        return CallOutcome(name, raised=RaisedError.from_dict(record["raised"]), diagnosis_model=diagnosis)
    if "returned_type" in record:
        placeholders = record.get("placeholders", ())
        placeholders = tuple(str(line)[:200] for line in placeholders[:10]) if isinstance(placeholders, list) else ()
        return CallOutcome(name, returned_type=str(record["returned_type"])[:100], placeholders=placeholders)
    if "model_error" in record:
        type_name, text = record["model_error"]
        return CallOutcome(name, model_error=(str(type_name)[:100], str(text)[:2000]))
    if "unserialisable" in record:
        raise HandbackError(f"Keras can't describe the model it returned: {str(record['unserialisable'])[:300]}")
    return CallOutcome(name, model=_model(outdir, record["model"]))


# --- the judges, one per kind of check --------------------------------------------------------------


def _judge_blocks(cell, calls, outdir):
    fn_name = cell["check"]
    cases = [block_case(c) for c in cell["cases"]]
    for number, (case, record) in enumerate(zip(cases, calls), 1):
        reference = checks.reference_block(fn_name, case)
        outcome = _outcome_or_fail(record, outdir, f"{fn_name} failed on case {number} of {len(cases)}: "
                                                   f"{case.describe(fn_name)}.")
        checks.judge_block(fn_name, number, len(cases), case, outcome, reference)


def _judge_block_size(cell, calls, outdir):
    fn_name = cell["check"].removesuffix("_size")
    for case_data, record in zip(cell["cases"], calls):
        case = block_case(case_data)
        describe = case.describe(fn_name)
        outcome = _outcome_or_fail(record, outdir, f"{fn_name} failed on {describe}.")
        checks.judge_size(fn_name, outcome, checks.reference_block(fn_name, case), describe)


def _judge_resnet50(cell, calls, outdir):
    cases = [model_case(c) for c in cell["cases"]]
    for number, (case, record) in enumerate(zip(cases, calls), 1):
        reference = checks.reference_resnet50(tuple(case.input_shape), case.classes)
        outcome = _outcome_or_fail(record, outdir, f"ResNet50 failed on case {number} of {len(cases)}: "
                                                   f"{case.describe('ResNet50')}.")
        checks.judge_resnet50(number, len(cases), case, outcome, reference)


def _judge_resnet50_default(cell, calls, outdir):
    outcome = _outcome_or_fail(calls[0], outdir, "ResNet50() failed.")
    checks.judge_default_resnet50(outcome, checks.reference_resnet50((64, 64, 3), 6))


def _outcome_or_fail(record, outdir, header) -> CallOutcome:
    try:
        return _outcome(record, outdir)
    except (HandbackError, UngradableModel) as error:
        raise AssertionError(f"{header}\n{error}") from None


def _raised_fail(exercise, index, total, case, record):
    if "raised" in record:
        error = RaisedError.from_dict(record["raised"])
        raise exercises._fail(exercise, index, total, case, f"it raised {error.type_name}: {error.text}")


def _judge_preprocess(cell, calls, outdir):
    total = len(cell["cases"])
    for index, (data, record) in enumerate(zip(cell["cases"], calls), 1):
        case = exercises.PreprocessCase(**{**data, "shape": tuple(data["shape"])})
        _raised_fail("preprocess", index, total, case, record)
        pair = "returned_type" not in record
        x_out, y_out = (_array(outdir, record["x"]), _array(outdir, record["y"])) if pair else (None, None)
        exercises.judge_preprocess(index, total, case, record.get("returned_type"), x_out, y_out,
                                   _array(outdir, {"array": record["x_after"]}),
                                   _array(outdir, {"array": record["y_after"]}))


def _judge_small_image_resnet(cell, calls, outdir):
    total = len(cell["cases"])
    for index, (data, record) in enumerate(zip(cell["cases"], calls), 1):
        case = exercises.SmallImageCase(tuple(data["input_shape"]), int(data["classes"]))
        _raised_fail("small_image_resnet", index, total, case, record)
        outcome = _outcome_or_fail(record, outdir, f"small_image_resnet failed on case {index} of {total} ({case}):")
        exercises.judge_small_image_resnet(index, total, case, outcome.returned_type, outcome.model)


def _judge_confusion_matrix(cell, calls, outdir):
    total = len(cell["cases"])
    for index, (data, record) in enumerate(zip(cell["cases"], calls), 1):
        case = exercises.ConfusionCase(**data)
        _raised_fail("confusion_matrix", index, total, case, record)
        if record.get("returned_type") == "NoneType":
            result = None
        elif "array" not in record.get("result", {}):
            # not numbers (the child doesn't save such arrays): its shape and dtype tell the judge enough
            result = _stand_in(record.get("result", {}))
        else:
            result = _array(outdir, record["result"])
        exercises.judge_confusion_matrix(index, total, case, result)


def _stand_in(description: dict) -> np.ndarray:
    """An array of the shape and dtype the child described (a broadcast view: no memory for its size)."""
    try:
        dtype = np.dtype(str(description.get("dtype", "object"))[:50])
    except (TypeError, ValueError):
        dtype = np.dtype(object)
    shape = tuple(int(d) for d in description.get("shape", (0,)))[:32]
    return np.broadcast_to(np.empty((), dtype=dtype), shape)


def _judge_most_confused_pair(cell, calls, outdir):
    total = len(cell["cases"])
    for index, (data, record) in enumerate(zip(cell["cases"], calls), 1):
        names = tuple(str(n) for n in data["names"])
        _raised_fail("most_confused_pair", index, total, f"{len(names)} classes {', '.join(names)}", record)
        pair = tuple(str(v) for v in record["pair"]) if "pair" in record else None
        exercises.judge_most_confused_pair(index, total, data["matrix"], names,
                                           _array(outdir, record["matrix_after"]), pair,
                                           str(record.get("returned", ""))[:300])


_JUDGES = {
    "identity_block": _judge_blocks,
    "convolutional_block": _judge_blocks,
    "identity_block_size": _judge_block_size,
    "convolutional_block_size": _judge_block_size,
    "resnet50": _judge_resnet50,
    "resnet50_default": _judge_resnet50_default,
    "preprocess": _judge_preprocess,
    "small_image_resnet": _judge_small_image_resnet,
    "confusion_matrix": _judge_confusion_matrix,
    "most_confused_pair": _judge_most_confused_pair,
}
