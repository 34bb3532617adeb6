"""The trusted grader's fast parts: the package's API, the assignment specs, drawn cases, the program
taken from a notebook, static flags and the allowlist of model configs."""

from __future__ import annotations

import ast
import base64
import json
import re
from pathlib import Path

import nbformat
import pytest

from resnet_course.grading.assignments import ASSIGNMENTS, assignment_spec
from resnet_course.grading.cases import draw_cases
from resnet_course.grading.program import ZEROING, NotANotebook, build_program, static_flags

ROOT = Path(__file__).resolve().parents[1]


def test_public_api_is_importable_as_before():
    from resnet_course import grading
    from resnet_course.grading import (  # noqa: F401
        CONVOLUTIONAL_BLOCK_CASES,
        IDENTITY_BLOCK_CASES,
        PASSED,
        RESNET50_CASES,
        BlockCase,
        ModelCase,
        check_convolutional_block,
        check_identity_block,
        check_resnet50,
    )

    assert PASSED == "All tests passed."
    assert set(grading.__all__) <= set(dir(grading))
    with pytest.raises(AttributeError):
        grading.no_such_name  # noqa: B018


def test_no_module_of_the_package_is_over_500_lines():
    for path in (ROOT / "resnet_course" / "grading").glob("*.py"):
        assert len(path.read_text().splitlines()) <= 500, path


def _test_cells(notebook: Path) -> list[tuple[str, int]]:
    nb = nbformat.read(str(notebook), as_version=4)
    found = []
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade"):
            found.append((meta["grade_id"], meta["points"]))
    return found


@pytest.mark.parametrize("name", list(ASSIGNMENTS))
def test_specs_match_the_notebooks_test_cells(name):
    spec = assignment_spec(name)
    expected = _test_cells(ROOT / "solutions" / name / spec.notebook)
    assert [(c.grade_id, c.points) for e in spec.exercises for c in e.cells] == expected


def test_unknown_assignment_is_named():
    with pytest.raises(KeyError, match="unknown assignment '07-x'"):
        assignment_spec("07-x")


@pytest.mark.parametrize("name", list(ASSIGNMENTS))
def test_draw_cases_is_deterministic_varied_and_keeps_the_visible_cases(name):
    first, again, other = draw_cases(name, 1), draw_cases(name, 1), draw_cases(name, 2)
    assert first == again
    json.dumps(first)  # serialisable
    assert set(first["cells"]) == set(assignment_spec(name).test_cell_ids)
    visible = [g for g in first["cells"] if g.startswith("test_") and g != "test_most_confused_pair"]
    assert all(first["cells"][g] == other["cells"][g] for g in visible)
    hidden = [g for g in first["cells"] if first["cells"][g]["cases"] and g not in visible]
    assert any(first["cells"][g] != other["cells"][g] for g in hidden)
    seeds = {json.dumps(draw_cases(name, seed)["cells"], sort_keys=True) for seed in range(6)}
    assert len(seeds) == 6


def test_drawn_block_cases_are_valid_for_each_block():
    for seed in range(20):
        for case in draw_cases("01-identity-block", seed)["cells"]["hidden_tests_identity_block"]["cases"]:
            assert case["filters"][2] == case["input_shape"][2] and case["s"] is None
        for case in draw_cases("02-convolutional-block", seed)["cells"]["hidden_tests_convolutional_block"]["cases"]:
            assert case["s"] in (1, 2, 3, 4)


# --- build_program -----------------------------------------------------------------------------


def _cells_of(program: str) -> list[dict]:
    from resnet_course.grading.collect import read_program

    return read_program(program)


def test_program_holds_the_answer_and_never_a_test_cell():
    program = build_program("01-identity-block", ROOT / "solutions/01-identity-block/identity_block.ipynb")
    cells = _cells_of(program)
    assert [c["role"] for c in cells] == ["imports", "answer", "definitions"][: len(cells)]
    assert "def identity_block" in next(c["source"] for c in cells if c["role"] == "answer")
    assert not any("check_identity_block(" in c["source"] for c in cells)
    ast.parse(program)


def test_program_follows_the_source_grade_ids_not_the_submissions_metadata(tmp_path):
    nb = nbformat.read(str(ROOT / "solutions/01-identity-block/identity_block.ipynb"), as_version=4)
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade_id") == "test_identity_block":
            meta.update(grade=False, solution=True, grade_id="identity_block")  # a test posing as the answer
            cell.source = "def identity_block(X, f, filters, stage, block):\n    return X\n" + cell.source
        elif meta.get("grade_id") == "identity_block":
            cell.metadata["nbgrader"] = {}  # the real answer, its metadata stripped
    path = tmp_path / "identity_block.ipynb"
    nbformat.write(nb, str(path))
    cells = _cells_of(build_program("01-identity-block", path))
    answers = [c for c in cells if c["role"] == "answer"]
    assert len(answers) == 1 and "### BEGIN SOLUTION" in answers[0]["source"]
    assert not any("check_identity_block(" in c["source"] for c in cells)


def test_other_cells_give_only_their_definitions():
    cells = _cells_of(build_program("04-signs", ROOT / "solutions/04-signs/signs.ipynb"))
    text = "\n".join(c["source"] for c in cells if c["role"] == "definitions")
    assert "training.train(" not in text and "load_signs()" not in text
    assert "from PIL import Image" in text


def test_not_a_notebook_is_a_clear_error(tmp_path):
    path = tmp_path / "identity_block.ipynb"
    path.write_text("not json")
    with pytest.raises(NotANotebook, match="isn't a readable Jupyter notebook"):
        build_program("01-identity-block", path)


# --- static flags ----------------------------------------------------------------------------------


def _program(answer: str, other: str = "") -> str:
    cells = [{"role": "answer", "exercise": "identity_block", "index": 3, "source": answer}]
    if other:
        cells.append({"role": "definitions", "exercise": None, "index": 5, "source": other})
    return "CELLS = " + repr(cells) + "\n"


@pytest.mark.parametrize("answer", [
    "from resnet_course.blocks import identity_block as ib\ndef identity_block(*a):\n    return ib(*a)",
    "import resnet_course\ndef identity_block(*a):\n    return resnet_course.identity_block(*a)",
    "import resnet_course.blocks as b\ndef identity_block(*a):\n    return b.identity_block(*a)",
    "import importlib\nidentity_block = importlib.import_module('resnet_course.blocks').identity_block",
])
def test_reference_use_is_flagged_on_its_exercise(answer):
    flags = static_flags("01-identity-block", _program(answer))
    assert any(f.kind == "reference_use" and f.exercise == "identity_block" for f in flags), flags


def test_reference_blocks_are_allowed_in_03_but_not_its_resnet50():
    pasted = "from resnet_course import convolutional_block, identity_block"
    cells = [{"role": "definitions", "exercise": None, "index": 6, "source": pasted},
             {"role": "answer", "exercise": "ResNet50", "index": 9,
              "source": "from resnet_course.model import ResNet50 as R\ndef ResNet50(**k):\n    return R(**k)"}]
    flags = static_flags("03-resnet50", "CELLS = " + repr(cells))
    assert [(f.kind, f.exercise) for f in flags] == [("reference_use", "ResNet50")]
    assert static_flags("03-resnet50", "CELLS = " + repr(cells[:1])) == []


def test_ipython_and_encoded_exec_are_flagged():
    encoded = base64.b64encode(b"from resnet_course.blocks import identity_block").decode()
    flags = static_flags("01-identity-block", _program(
        "def identity_block(X, f, filters, stage, block):\n    return X",
        f"import base64\nexec(base64.b64decode('{encoded}'))\nip = get_ipython()\n"
        "ip.input_transformers_post.append(lambda lines: lines)\nopen('../../gradebook.db', 'rb')",
    ))
    kinds = {f.kind for f in flags}
    assert {"hidden_code", "ipython", "file_access"} <= kinds, flags
    assert all(f.exercise is None for f in flags)


def test_exec_of_a_literal_is_read_like_code():
    flags = static_flags("01-identity-block", _program("exec('from resnet_course.blocks import identity_block')"))
    assert [f.kind for f in flags] == ["reference_use"]


def test_reference_copy_zeroes_the_exercise_with_the_message(tmp_path):
    from resnet_course.grading.verdict import score

    flags = static_flags("01-identity-block", _program("from resnet_course.blocks import identity_block"))
    results = score("01-identity-block", draw_cases("01-identity-block", 0), tmp_path, flags=flags)
    assert [r.points for r in results] == [0, 0, 0]
    assert all(r.message.startswith("Scored 0: your answer uses the course's reference") for r in results)


# --- the allowlist -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def block_config():
    import keras

    from resnet_course import identity_block

    X = keras.Input((4, 4, 6))
    return json.loads(keras.Model(X, identity_block(X, 2, [2, 4, 6], 1, "a")).to_json())


def test_allowlist_loads_keras_built_ins(block_config):
    from resnet_course.grading.allowlist import load_model

    assert len(load_model(json.dumps(block_config)).layers) == len(block_config["config"]["layers"])


def test_allowlist_refuses_another_module_without_importing_it(block_config, monkeypatch):
    import sys

    from resnet_course.grading.allowlist import UngradableModel, load_model

    config = json.loads(json.dumps(block_config))
    layer = config["config"]["layers"][1]
    layer.update(module="evil_module_that_does_not_exist", class_name="Conv2D")
    with pytest.raises(UngradableModel, match=r"layer 'res1a_branch2a' is a custom layer \(class 'Conv2D' from "
                                              r"module 'evil_module_that_does_not_exist'\)"):
        load_model(json.dumps(config))
    assert "evil_module_that_does_not_exist" not in sys.modules
    layer.update(module="os", class_name="system")
    with pytest.raises(UngradableModel, match="layer 'res1a_branch2a' is a custom layer"):
        load_model(json.dumps(config))


def test_allowlist_refuses_a_lambda_naming_it():
    import keras

    from resnet_course.grading.allowlist import UngradableModel, load_model

    X = keras.Input((4, 4, 3))
    model = keras.Model(X, keras.layers.Lambda(lambda t: keras.ops.maximum(t, 0.0), name="my_relu")(X))
    with pytest.raises(UngradableModel, match=re.escape("layer 'my_relu' is a Lambda with a Python lambda function")):
        load_model(model.to_json())
    model = keras.Model(X, keras.layers.Lambda(keras.activations.relu, name="named_fn")(X))
    with pytest.raises(UngradableModel, match="layer 'named_fn' is a Lambda calling the function 'relu'"):
        load_model(model.to_json())


def test_allowlist_refuses_a_file_reading_layer_and_garbage():
    from resnet_course.grading.allowlist import UngradableModel, check_config, load_model

    with pytest.raises(UngradableModel, match="layer 'loader' is a custom layer"):
        check_config({"module": "keras.layers", "class_name": "TFSMLayer", "config": {"name": "loader"}})
    with pytest.raises(UngradableModel, match="isn't valid JSON"):
        load_model("{")


@pytest.mark.parametrize("answer", [
    "import resnet_course\nidentity_block = getattr(resnet_course, 'identity_' + 'block')",
    "import resnet_course.blocks\nidentity_block = getattr(resnet_course.blocks, 'identity_block')",
    "import sys\nidentity_block = sys.modules['resnet_course.blocks'].identity_block",
    "from resnet_course.grading.checks import BLOCK_REFERENCES\nidentity_block = BLOCK_REFERENCES['identity_block']",
    "import resnet_course\nidentity_block = resnet_course.__dict__['identity_block']",
])
def test_indirect_reference_use_zeroes_the_exercise(answer):

    flags = static_flags("01-identity-block", _program(answer))
    assert any(f.kind in ZEROING for f in flags), flags


def test_using_the_public_checks_is_not_flagged():
    answer = ("from resnet_course.grading import BlockCase, check_identity_block\n"
              "def identity_block(X, f, filters, stage, block):\n    return X\n")
    assert static_flags("01-identity-block", _program(answer)) == []


def test_grading_modules_import_each_other_without_cycles():
    """grading -> model is one-way, and the package's modules form no cycle (top-level imports)."""
    package = ROOT / "resnet_course" / "grading"
    graph = {}
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text())
        targets = set()
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module.startswith("resnet_course.grading."):
                    targets.add(node.module.rsplit(".", 1)[1])
                elif node.module == "resnet_course.grading":
                    targets.update(alias.name for alias in node.names)
        graph[path.stem] = targets & {p.stem for p in package.glob("*.py")}
    for module in ("model", "blocks"):
        source = (ROOT / "resnet_course" / f"{module}.py").read_text()
        assert not re.search(r"^(from|import) resnet_course.grading", source, re.M), module

    def visit(node, trail):
        assert node not in trail, " -> ".join([*trail, node])
        for target in graph.get(node, ()):
            visit(target, [*trail, node])

    for module in graph:
        visit(module, [])


@pytest.mark.slow
def test_the_child_side_does_not_import_the_reference():
    import subprocess
    import sys

    code = ("import sys, resnet_course.grading.collect, resnet_course.grading.calls, resnet_course.grading.cases;"
            "print(sorted(m for m in sys.modules if m.startswith('resnet_course')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "resnet_course.blocks" not in out and "resnet_course.model" not in out, out
    assert "resnet_course.grading.checks" not in out, out


def test_allowlist_loads_resnet50_and_refuses_models_far_too_big():
    import keras

    from resnet_course.grading.allowlist import UngradableModel, load_model
    from resnet_course.model import ResNet50

    assert load_model(ResNet50(input_shape=(64, 64, 3), classes=6).to_json()).count_params() == 23_600_006
    X = keras.Input((4, 4, 3))
    wide = keras.Model(X, keras.layers.Dense(100_000, name="wide")(keras.layers.Flatten()(X)))
    with pytest.raises(UngradableModel, match="layer 'wide' has units=100000, far beyond"):
        load_model(wide.to_json())
    small = keras.layers.Conv2D(8, 3, padding="same", name="c1")(X)
    config = json.loads(keras.Model(X, keras.layers.Conv2D(8, 3, padding="same", name="c2")(small)).to_json())
    for layer in config["config"]["layers"][1:]:  # the same model with 8,000 filters of 9x9: 5 billion weights
        layer["config"].update(filters=8000, kernel_size=[9, 9])
    config["config"]["layers"][2]["build_config"]["input_shape"][-1] = 8000
    with pytest.raises(UngradableModel, match="far more than the exercise's"):
        load_model(json.dumps(config))
    big = keras.Model(X, keras.layers.ZeroPadding2D(4000, name="pad")(X))
    with pytest.raises(UngradableModel, match="layer 'pad' outputs shape"):
        load_model(big.to_json())


def test_reaching_other_files_and_starting_processes_are_flagged():
    other = ("import os, subprocess, sqlite3\n"
             "peers = os.listdir(os.path.join('..', '..'))\n"
             "db = sqlite3.connect('/course/gradebook.db')\n"
             "subprocess.Popen(['sleep', '1000'], start_new_session=True)\n"
             "os.system('kill -9 1')\n")
    kinds = [f.kind for f in static_flags("01-identity-block", _program("def identity_block(*a):\n    pass", other))]
    assert kinds.count("file_access") >= 2 and kinds.count("process_control") == 2, kinds


def test_processes_zero_the_exercise_and_native_code_is_listed():
    answer = ("import os, signal\nfrom subprocess import Popen as P\nimport ctypes as c\n"
              "def identity_block(X, f, filters, stage, block):\n"
              "    os.kill(os.getppid(), signal.SIGKILL)\n    P(['sleep', '1'])\n    os.execvp('sleep', ['sleep'])\n"
              "    c.string_at(0)\n    return max(X, X)\n")
    flags = static_flags("01-identity-block", _program(answer))
    found = [(f.kind, f.detail.split(" (")[0]) for f in flags if f.kind in ("process_control", "native")]
    assert found == [("process_control", "starts, signals or kills processes with os.kill()"),
                     ("process_control", "starts, signals or kills processes with subprocess.Popen()"),
                     ("process_control", "starts, signals or kills processes with os.execvp()"),
                     ("native", "calls ctypes.string_at()")], found
    assert "process_control" in ZEROING and "native" not in ZEROING


def test_ordinary_code_is_not_flagged():
    answer = ("import re\nimport numpy as np\nPATTERN = re.compile(r'res(\\d)')\n"
              "def identity_block(X, f, filters, stage, block):\n"
              "    name = 'res/' + str(stage)\n    name = name.replace('/', '_')\n"
              "    parts = '/'.join([name, block])\n    return X\n")
    assert static_flags("01-identity-block", _program(answer)) == []


def test_unpickling_is_hidden_code():
    flags = static_flags("01-identity-block", _program("import pickle\nidentity_block = pickle.loads(b'...')"))
    assert [f.kind for f in flags] == ["hidden_code"]
