"""The grading child process: runs a student's program and hands back only data.

    python -m resnet_course.grading.collect PROGRAM.py CASES.json OUTDIR

PROGRAM.py is what ``program.build_program`` wrote: a list of the student's cells as string literals,
read here with ``ast.literal_eval``. Each cell runs in one fresh namespace, guarded (an error is
recorded and the next cell runs). Then each test cell's function is called on the grader's cases
(CASES.json, from ``cases.draw_cases``), and what each call gave is written into OUTDIR: models as
their Keras config JSON (no weights: the grader copies the reference's weights in), arrays as ``.npy``
without pickles, everything else as plain JSON in ``manifest.json``, rewritten (atomically)
after each test cell, so a limit reached in one keeps the results of those before it.

This process is untrusted: the student's code runs in it and may change anything in it. The grader
(``verdict.score``) trusts nothing it wrote; a missing or garbled OUTDIR scores 0 with a reason.
Only the standard library, numpy, Keras, ``calls`` and ``resnet_course.exercises``' case classes are
imported here: not the reference implementation.
"""

from __future__ import annotations

import ast
import json
import linecache
import os
import sys
import time
from pathlib import Path

MANIFEST = "manifest.json"


def read_program(text: str) -> list[dict]:
    """The cells of a program written by ``build_program`` (data only: nothing in it is run here)."""
    tree = ast.parse(text)
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and [getattr(t, "id", None) for t in statement.targets] == ["CELLS"]:
            cells = ast.literal_eval(statement.value)
            if isinstance(cells, list) and all(isinstance(c, dict) and isinstance(c.get("source"), str) for c in cells):
                return cells
    raise ValueError("the program has no CELLS = [...] list of cells")


def run_cells(cells: list[dict]) -> tuple[dict, list[dict]]:
    """Run each cell in one namespace; returns the namespace and one record per cell."""
    from resnet_course.grading.calls import RaisedError

    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    records = []
    for number, cell in enumerate(cells):
        filename = f"<cell {cell.get('index', number)}: {cell.get('role', 'code')}>"
        linecache.cache[filename] = (len(cell["source"]), None, cell["source"].splitlines(True), filename)
        record = {"index": cell.get("index", number), "role": cell.get("role"), "error": None}
        try:
            exec(compile(cell["source"], filename, "exec"), namespace)  # noqa: S102 - the child's purpose
        except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt too: go on
            record["error"] = RaisedError.from_exception(exc).to_dict()
        records.append(record)
    return namespace, records


class Writer:
    """Writes one call's outputs into OUTDIR under names the writer chooses (never the student's)."""

    def __init__(self, outdir: Path):
        self.outdir = outdir
        self.count = 0

    def _name(self, suffix: str) -> str:
        self.count += 1
        return f"{self.count:04d}{suffix}"

    def model(self, model) -> dict:
        name = self._name(".json")
        (self.outdir / name).write_text(model.to_json())
        return {"model": name}

    def array(self, value) -> dict:
        import numpy as np

        try:
            array = np.asarray(value)
        except Exception as exc:  # noqa: BLE001
            return {"unreadable": f"{type(exc).__name__}: {str(exc)[:200]}"}
        if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
            return {"unreadable": f"an array of dtype {array.dtype}", "dtype": str(array.dtype),
                    "shape": list(array.shape)}
        name = self._name(".npy")
        np.save(self.outdir / name, array, allow_pickle=False)
        return {"array": name}


def _outcome_record(outcome, writer: Writer) -> dict:
    """A ``calls.CallOutcome`` as JSON, its models as config files."""
    record = {"name": str(outcome.name)[:100]}
    if outcome.raised is not None:
        record["raised"] = outcome.raised.to_dict()
        if outcome.diagnosis_model is not None:
            try:
                record["diagnosis_model"] = writer.model(outcome.diagnosis_model)["model"]
            except Exception:  # noqa: BLE001 - the diagnosis is a bonus
                pass
    elif outcome.returned_type is not None:
        record["returned_type"] = outcome.returned_type
        if outcome.placeholders:
            record["placeholders"] = list(outcome.placeholders)
    elif outcome.model_error is not None:
        record["model_error"] = list(outcome.model_error)
    else:
        try:
            record.update(writer.model(outcome.model))
        except Exception as exc:  # noqa: BLE001 - a model Keras can't describe
            record["unserialisable"] = f"{type(exc).__name__}: {str(exc)[:500]}"
    return record


def _raised(exc) -> dict:
    from resnet_course.grading.calls import RaisedError

    return {"raised": RaisedError.from_exception(exc).to_dict()}


def _call(fn, *args, **kwargs):
    try:
        return {"value": fn(*args, **kwargs)}
    except Exception as exc:  # noqa: BLE001 - reported
        return _raised(exc)


def collect_call(check: str, fn, case: dict, writer: Writer) -> dict:
    """Call ``fn`` on one case the way the check ``check`` does, and record what it gave."""
    import numpy as np

    from resnet_course.grading import calls
    from resnet_course.grading.cases import block_case, model_case

    if check in ("identity_block", "convolutional_block", "identity_block_size", "convolutional_block_size"):
        block = check.removesuffix("_size")
        return _outcome_record(calls.call_block(fn, block, block_case(case)), writer)
    if check == "resnet50":
        return _outcome_record(calls.call_resnet50(fn, model_case(case)), writer)
    if check == "resnet50_default":
        return _outcome_record(calls.call_resnet50_default(fn), writer)
    if check == "small_image_resnet":
        return _outcome_record(calls.call_model(fn, "small_image_resnet", tuple(case["input_shape"]),
                                                int(case["classes"])), writer)
    if check == "preprocess":
        from resnet_course.exercises import PreprocessCase

        x, y = PreprocessCase(**{**case, "shape": tuple(case["shape"])}).make()
        result = _call(fn, x, y, int(case["classes"]))
        record = {"x_after": writer.array(x)["array"], "y_after": writer.array(y)["array"]}
        if "raised" in result:
            return {**record, **result}
        value = result["value"]
        if not (isinstance(value, tuple) and len(value) == 2):
            return {**record, "returned_type": type(value).__name__}
        return {**record, "x": writer.array(value[0]), "y": writer.array(value[1])}
    if check == "confusion_matrix":
        from resnet_course.exercises import ConfusionCase

        y_true, y_pred = ConfusionCase(**case).make()
        result = _call(fn, y_true, y_pred, int(case["classes"]))
        if "raised" in result:
            return result
        if result["value"] is None:
            return {"returned_type": "NoneType"}
        return {"result": writer.array(result["value"])}
    if check == "most_confused_pair":
        matrix = np.asarray(case["matrix"])
        result = _call(fn, matrix, list(case["names"]))
        record = {"matrix_after": writer.array(matrix)}
        if "raised" in result:
            return {**record, **result}
        value = result["value"]
        if isinstance(value, tuple) and len(value) == 2:
            return {**record, "pair": [str(v)[:200] for v in value]}
        return {**record, "returned": repr(value)[:300]}
    raise ValueError(f"unknown check {check!r}")


def collect(program_path, cases_path, outdir) -> dict:
    """Run the program and every test cell's calls; write OUTDIR/manifest.json. Returns the manifest."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    cells = read_program(Path(program_path).read_text())
    cases = json.loads(Path(cases_path).read_text())
    namespace, records = run_cells(cells)
    writer = Writer(outdir)
    manifest = {"assignment": cases.get("assignment"), "cells": records, "results": {}, "complete": False}
    _write_manifest(outdir, manifest)
    for grade_id, cell in cases["cells"].items():
        fn = namespace.get(cell["function"])
        if not callable(fn):
            manifest["results"][grade_id] = {"missing": cell["function"]}
            continue
        calls = []
        for case in cell["cases"] or [{}]:
            try:
                calls.append(collect_call(cell["check"], fn, case, writer))
            except BaseException as exc:  # noqa: BLE001 - e.g. a SystemExit raised through the grader's code
                calls.append(_raised(exc))
        manifest["results"][grade_id] = {"calls": calls}
        # after each test cell, so that a limit reached in a later one keeps this one's results
        _write_manifest(outdir, manifest)
    manifest.update(complete=True, seconds=round(time.monotonic() - started, 3))
    _write_manifest(outdir, manifest)
    return manifest


def _write_manifest(outdir: Path, manifest: dict) -> None:
    temporary = outdir / (MANIFEST + ".part")
    temporary.write_text(json.dumps(manifest))
    os.replace(temporary, outdir / MANIFEST)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3:
        print("usage: python -m resnet_course.grading.collect PROGRAM.py CASES.json OUTDIR", file=sys.stderr)
        return 2
    collect(*argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
