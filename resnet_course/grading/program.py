"""What the grading child process runs, taken from a submitted notebook, and what it must not do.

``build_program`` reads the submission as JSON only (nbformat; nothing in it runs here). Which cells
are answers and which are tests comes from the SOURCE notebook in ``solutions/``, never from the
submission's metadata, which a student can edit: the answer cells are the submission's cells with the
source's answer grade ids (or, when a student removed the id, the cell defining the exercise's
function), the setup and imports are the source's own cells, test cells never run, and from every
other cell only its definitions (imports, functions, classes, assignments without calls) are kept, so
03's pasted blocks or a helper function defined elsewhere still count, and training code doesn't run.

The program is a Python file holding the cells as string literals, so ``static_flags`` and the child
(``collect``) read it with ``ast.literal_eval`` and no cell can pose as another.

``static_flags`` inspects the student's cells with ``ast`` (nothing runs) for what the rules forbid or
the instructor should review: imports or calls of the course's reference implementation, IPython
hooks, code built at run time (exec/eval/compile/__import__ of computed strings), reading other
students' files or the gradebook.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

from resnet_course.grading.assignments import assignment_spec

#: the solutions folder of a source checkout (the course's notebooks with their grade ids)
SOLUTIONS = Path(__file__).resolve().parents[2] / "solutions"
#: the source's locked cells that the program takes from the source itself
SOURCE_CELLS = ("imports",)
#: flags that zero the exercise they are found in
ZEROING = ("reference_use", "hidden_code", "process_control")
#: the grader's public names: a student may import these (to run the checks themselves)
GRADING_PUBLIC = frozenset({"BlockCase", "ModelCase", "IDENTITY_BLOCK_CASES", "CONVOLUTIONAL_BLOCK_CASES",
                            "RESNET50_CASES", "check_identity_block", "check_convolutional_block",
                            "check_resnet50", "PASSED"})


class NotANotebook(ValueError):
    """The submission can't be read as a notebook."""


@dataclass(frozen=True)
class Flag:
    """Something in the student's code the rules forbid or the instructor should see.

    ``kind``: reference_use, hidden_code, process_control, ipython, file_access, native, grader_access or
    syntax_error;
    ``exercise``: the exercise whose answer cell holds it (None: another cell, so every exercise of the
    assignment); ``detail``: what was found, with its line.
    """

    kind: str
    exercise: str | None
    detail: str


def _read_notebook(path):
    import nbformat

    try:
        return nbformat.read(str(path), as_version=4)
    except Exception as error:  # noqa: BLE001 - any unreadable file is "not a notebook"
        raise NotANotebook(f"{path} isn't a readable Jupyter notebook ({type(error).__name__}: {error})") from None


def _grade_id(cell) -> str | None:
    value = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
    return value if isinstance(value, str) else None


def _source_notebook(assignment: str, solutions=None):
    spec = assignment_spec(assignment)
    return _read_notebook(Path(solutions or SOLUTIONS) / spec.name / spec.notebook)


def _python(source: str) -> str:
    """A cell's source without IPython magics and shell lines (they can't run in plain Python)."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def _defines(source: str, names) -> bool:
    try:
        tree = ast.parse(_python(source))
    except SyntaxError:
        return False
    return any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in names for node in tree.body)


def _definitions(source: str) -> str | None:
    """Only the top-level imports, functions, classes and call-free assignments of a cell (None: none)."""
    try:
        tree = ast.parse(_python(source))
    except SyntaxError:
        return None
    kept = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            kept.append(node)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None and not any(
            isinstance(sub, (ast.Call, ast.Lambda, ast.Await)) for sub in ast.walk(node.value)
        ):
            kept.append(node)
    if not kept:
        return None
    lines = _python(source).splitlines()
    chunks = []
    for node in kept:
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        chunks.append("\n".join(lines[first - 1:node.end_lineno]))
    return "\n\n".join(chunks)


def program_cells(assignment: str, submission, *, solutions=None) -> list[dict]:
    """The cells the child runs, in the submission's order: ``{"role", "exercise", "index", "source"}``."""
    spec = assignment_spec(assignment)
    source_nb = _source_notebook(assignment, solutions)
    submitted = _read_notebook(submission)
    by_id = {_grade_id(c): c for c in source_nb.cells if _grade_id(c)}
    answer_ids = {e.name for e in spec.exercises}
    missing = answer_ids - set(by_id)
    if missing:
        raise ValueError(f"the source notebook of {assignment} has no answer cell {sorted(missing)}")
    locked_ids = {i for i, c in by_id.items() if i not in answer_ids}  # setup, imports and test cells
    locked_texts = {c.source.strip() for c in source_nb.cells if _grade_id(c) in locked_ids}
    cells = [{"role": "imports", "exercise": None, "index": -1, "source": _python(by_id[i].source)}
             for i in SOURCE_CELLS if i in by_id]
    found = set()
    for index, cell in enumerate(submitted.cells):
        if cell.get("cell_type") != "code" or not isinstance(cell.get("source"), str):
            continue
        grade_id = _grade_id(cell)
        exercise = grade_id if grade_id in answer_ids and grade_id not in found else None
        if exercise is None:
            exercise = next((e.name for e in spec.exercises if e.name not in found
                             and grade_id not in locked_ids and _defines(cell.source, e.functions)), None)
        if exercise is not None:
            found.add(exercise)
            cells.append({"role": "answer", "exercise": exercise, "index": index, "source": _python(cell.source)})
            continue
        if grade_id in locked_ids or cell.source.strip() in locked_texts:
            continue  # the source's setup, imports and tests: never the submission's copy
        definitions = _definitions(cell.source)
        if definitions:
            cells.append({"role": "definitions", "exercise": None, "index": index, "source": definitions})
    return cells


def build_program(assignment: str, submission_notebook, *, solutions=None) -> str:
    """The Python source of the program the child runs (see the module's docstring). Raises NotANotebook."""
    cells = program_cells(assignment, submission_notebook, solutions=solutions)
    return (
        f"# The cells resnet_course.grading.collect runs for {assignment}, as data: each is exec'd in turn.\n"
        f"ASSIGNMENT = {assignment!r}\n"
        "CELLS = [\n" + "".join(f"    {cell!r},\n" for cell in cells) + "]\n"
    )


# --- static flags ---------------------------------------------------------------------------------

_HOOKS = {"get_ipython", "register_input_transformer", "input_transformers_post", "input_transformers_cleanup",
          "register_transformer", "events", "set_custom_exc", "run_cell"}
#: calls that run code from a string (bare builtins) or import a module named by a string
_DYNAMIC = {"exec": "exec", "eval": "eval", "compile": "compile", "builtins.exec": "exec", "builtins.eval": "eval",
            "builtins.compile": "compile", "__import__": "__import__", "builtins.__import__": "__import__",
            "importlib.import_module": "import_module", "import_module": "import_module"}
#: calls that run code hidden in data
_UNPICKLERS = {"pickle.loads", "pickle.load", "marshal.loads", "marshal.load", "dill.loads", "types.FunctionType",
               "types.CodeType", "cloudpickle.loads"}
_FILE_CALLS = {"open", "Path", "PurePath", "join", "read_text", "read_bytes", "write_text", "write_bytes",
               "listdir", "scandir", "glob", "iglob", "walk", "connect", "chdir", "copy", "copyfile", "copytree",
               "rmtree", "remove", "unlink", "rename", "load", "loadtxt", "read_csv"}
#: Calls that start, signal or kill processes ("process_control": zeroes the exercise, since
#: no exercise needs one and it is how a submission would try to stop the grader or outlive its
#: run) and calls into native code or the process's own limits ("native": listed for review; a
#: crash they cause scores 0 by itself). Matched as exact dotted names or, ending in ".", prefixes.
_PROCESS_CONTROL = ("os.system", "os.popen", "os.fork", "os.forkpty", "os.kill", "os.killpg", "os.exec",
                    "os.spawn", "os.posix_spawn", "os.setsid", "os.setpgrp", "os.setpgid", "signal.pthread_kill",
                    "signal.alarm", "signal.setitimer", "subprocess.", "pty.", "multiprocessing.",
                    "concurrent.futures.ProcessPoolExecutor")
_NATIVE = ("ctypes.", "cffi.", "resource.setrlimit", "resource.prlimit", "signal.signal", "os._exit")
_FORBIDDEN_PATHS = re.compile(r"(^|/)(submitted|autograded|gradebook\.db|nbgrader_config|solutions|feedback)"
                              r"(/|$)|\.\./|^/|^~")


def _matches(name: str, patterns) -> bool:
    """``os.`` names match as prefixes too (os.exec covers os.execv, os.execvpe ...), as do those ending in "."."""
    return any(name == p or (name.startswith(p) and (p.endswith(".") or p.startswith("os."))) for p in patterns)


def static_flags(assignment: str, program_source: str) -> list[Flag]:
    """What the student's cells of a program from ``build_program`` do that the rules forbid or the
    instructor should review; found by reading the code (``ast``), never running it."""
    from resnet_course.grading.collect import read_program

    spec = assignment_spec(assignment)
    flags = []
    for cell in read_program(program_source):
        if cell.get("role") == "imports":
            continue  # the source's own cell
        exercise = cell.get("exercise")
        try:
            tree = ast.parse(cell["source"])
        except SyntaxError as error:
            flags.append(Flag("syntax_error", exercise, f"cell {cell.get('index')}: {error.msg} (line {error.lineno})"))
            continue
        flags += _cell_flags(spec, tree, exercise, cell["source"])
    return flags


def _cell_flags(spec, tree, exercise, source) -> list[Flag]:
    references = {ref: e.name for e in spec.exercises for ref in e.reference}
    owner = exercise  # a flag in an answer cell belongs to that exercise; elsewhere, to all (None)
    aliases = {}  # local name -> "module.name" it was imported as
    flags = []

    def line(node):
        return f"line {node.lineno}: {ast.get_source_segment(source, node) or ''}"[:300]

    def reference_hit(dotted: str, node):
        for ref, ref_exercise in references.items():
            if dotted == ref or dotted.startswith(ref + "."):
                flags.append(Flag("reference_use", owner if owner is not None else ref_exercise,
                                  f"uses the course's reference {ref} ({line(node)})"))
                return True
        parts = dotted.split(".")
        if parts[:2] == ["resnet_course", "grading"] and len(parts) > 2 and not (set(parts[2:]) & GRADING_PUBLIC):
            # the grader's internals hold the references (checks.BLOCK_REFERENCES ...)
            flags.append(Flag("reference_use", owner, f"uses the grader's internals {dotted} ({line(node)})"))
            return True
        return False

    for node in ast.walk(tree):  # first the names imports bind, wherever they are
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                reference_hit(alias.name, node)
                if alias.name.startswith("resnet_course.grading") or alias.name.startswith("nbgrader"):
                    flags.append(Flag("grader_access", owner, f"imports {alias.name} ({line(node)})"))
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                reference_hit(f"{node.module}.{alias.name}", node)
        elif isinstance(node, ast.Attribute):
            dotted = _dotted(node, aliases)
            if dotted and dotted.startswith("resnet_course."):
                reference_hit(dotted, node)
            if node.attr == "__dict__" and dotted and dotted.startswith("resnet_course"):
                flags.append(Flag("hidden_code", owner, f"reads {dotted} ({line(node)})"))
            if node.attr in _HOOKS:
                flags.append(Flag("ipython", owner, f"uses IPython's {node.attr} ({line(node)})"))
        elif isinstance(node, ast.Name) and node.id in _HOOKS:
            flags.append(Flag("ipython", owner, f"uses IPython's {node.id} ({line(node)})"))
        elif isinstance(node, ast.Call):
            name = _dotted(node.func, aliases) or ""
            short = name.rsplit(".", 1)[-1]
            if name in ("getattr", "vars") and node.args:
                target = _dotted(node.args[0], aliases) or ""
                if target.startswith("resnet_course"):
                    key = node.args[1] if name == "getattr" and len(node.args) > 1 else None
                    if isinstance(key, ast.Constant) and isinstance(key.value, str):
                        reference_hit(f"{target}.{key.value}", node)
                    else:
                        flags.append(Flag("hidden_code", owner, f"looks up a name of {target} computed at run "
                                                                f"time ({line(node)})"))
            dynamic = _DYNAMIC.get(name)
            if dynamic:
                literal = node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
                if dynamic in ("__import__", "import_module") and literal:
                    # what is taken from the module is out of sight: importing a reference's module counts
                    module = node.args[0].value
                    held = [ref for ref in references if ref.rsplit(".", 1)[0] == module != "resnet_course"]
                    reference_hit(held[0] if held else module, node)
                elif not literal:
                    flags.append(Flag("hidden_code", owner, f"runs code built at run time with {dynamic}() "
                                                            f"({line(node)})"))
                else:
                    _flags_of_literal(spec, node.args[0].value, owner, flags)
            if name in _UNPICKLERS:
                flags.append(Flag("hidden_code", owner, f"runs code hidden in data with {name}() ({line(node)})"))
            if short in _FILE_CALLS:
                for argument in node.args:
                    if isinstance(argument, ast.Constant) and isinstance(argument.value, str) and (
                            argument.value == ".." or _FORBIDDEN_PATHS.search(argument.value)):
                        flags.append(Flag("file_access", owner, f"reaches {argument.value!r} ({line(node)})"))
                        break
            if _matches(name, _PROCESS_CONTROL):
                flags.append(Flag("process_control", owner, f"starts, signals or kills processes with {name}() "
                                                             f"({line(node)})"))
            elif _matches(name, _NATIVE):
                flags.append(Flag("native", owner, f"calls {name}() ({line(node)})"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if "gradebook.db" in node.value or re.search(r"(^|/)submitted/", node.value):
                flags.append(Flag("file_access", owner, f"names {node.value[:80]!r} ({line(node)})"))
            elif node.value.startswith("resnet_course.") and not _in_import_call(node, tree):
                held = [ref for ref in references if node.value in (ref, ref.rsplit(".", 1)[0])]
                if held:  # e.g. sys.modules["resnet_course.blocks"]
                    reference_hit(held[0], node)
    return flags


def _in_import_call(constant, tree) -> bool:
    """Is this string the module argument of __import__/import_module (already checked there)?"""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and node.args[0] is constant:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            return name in ("__import__", "import_module")
    return False


def _flags_of_literal(spec, text, owner, flags):
    """exec/eval of a literal string: its code is read like the cell's own."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return
    flags += _cell_flags(spec, tree, owner, text)


def _dotted(node, aliases) -> str | None:
    """"resnet_course.blocks.identity_block" for ``rc.blocks.identity_block`` after ``import resnet_course as rc``."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    head = aliases.get(node.id, node.id)
    return ".".join([head, *reversed(parts)])
