"""The graded assignments: for each, its notebook, its exercises, the functions the student writes and
the nbgrader test cells (grade ids and points exactly as in ``solutions/``).

The trusted grader works from these specs: which cells of a submission are answers, which cases each
test cell checks (``cases.draw_cases``) and how many points it gives (``verdict.score``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GradeCell:
    """One nbgrader test cell: its grade id and its points."""

    grade_id: str
    points: int


@dataclass(frozen=True)
class ExerciseSpec:
    """One exercise: the answer cell's grade id (its ``name``), the functions it defines and its test cells.

    ``reference`` lists the course's own implementations of this exercise, as "module.name"; an answer
    that imports or calls one of them is a copy of the reference.
    """

    name: str
    functions: tuple
    cells: tuple
    reference: tuple = ()

    @property
    def points(self) -> int:
        return sum(cell.points for cell in self.cells)


@dataclass(frozen=True)
class AssignmentSpec:
    """One assignment: its folder name in ``solutions/``, its notebook's file name and its exercises."""

    name: str
    notebook: str
    exercises: tuple

    @property
    def points(self) -> int:
        return sum(exercise.points for exercise in self.exercises)

    def exercise(self, name: str) -> ExerciseSpec:
        for exercise in self.exercises:
            if exercise.name == name:
                return exercise
        raise KeyError(f"assignment {self.name} has no exercise {name!r}; it has "
                       + ", ".join(e.name for e in self.exercises))

    def cell(self, grade_id: str) -> GradeCell:
        for exercise in self.exercises:
            for cell in exercise.cells:
                if cell.grade_id == grade_id:
                    return cell
        raise KeyError(f"assignment {self.name} has no test cell {grade_id!r}")

    @property
    def test_cell_ids(self) -> tuple:
        return tuple(cell.grade_id for exercise in self.exercises for cell in exercise.cells)


def _exercise(name, *cells, functions=None, reference=()):
    return ExerciseSpec(name, tuple(functions or (name,)), tuple(GradeCell(*c) for c in cells), tuple(reference))


ASSIGNMENTS = {
    spec.name: spec
    for spec in (
        AssignmentSpec("01-identity-block", "identity_block.ipynb", (
            _exercise(
                "identity_block",
                ("test_identity_block", 5), ("hidden_tests_identity_block", 3),
                ("hidden_tests_identity_block_shapes", 2),
                reference=("resnet_course.blocks.identity_block", "resnet_course.identity_block"),
            ),
        )),
        AssignmentSpec("02-convolutional-block", "convolutional_block.ipynb", (
            _exercise(
                "convolutional_block",
                ("test_convolutional_block", 5), ("hidden_tests_convolutional_block", 3),
                ("hidden_tests_convolutional_block_shapes", 2),
                reference=("resnet_course.blocks.convolutional_block", "resnet_course.convolutional_block"),
            ),
        )),
        AssignmentSpec("03-resnet50", "resnet50.ipynb", (
            _exercise(
                "ResNet50",
                ("test_resnet50", 5), ("hidden_tests_resnet50", 3), ("hidden_tests_resnet50_shapes", 2),
                reference=("resnet_course.model.ResNet50", "resnet_course.ResNet50"),
            ),
        )),
        AssignmentSpec("04-signs", "signs.ipynb", (
            _exercise(
                "preprocess",
                ("test_preprocess", 5), ("hidden_tests_preprocess", 3), ("hidden_tests_preprocess_data", 2),
            ),
        )),
        AssignmentSpec("05-cifar10", "cifar10.ipynb", (
            _exercise(
                "small_image_resnet",
                ("test_small_image_resnet", 5), ("hidden_tests_small_image_resnet", 3),
                ("hidden_tests_small_image_resnet_fer", 2),
                reference=("resnet_course.exercises.small_image_reference",),
            ),
        )),
        AssignmentSpec("06-fer2013", "fer2013.ipynb", (
            _exercise(
                "confusion_matrix",
                ("test_confusion_matrix", 5), ("hidden_tests_confusion_matrix", 2),
                reference=("resnet_course.plots.confusion_matrix",),
            ),
            _exercise(
                "most_confused_pair",
                ("test_most_confused_pair", 3),
                reference=("resnet_course.exercises.most_confused_pair_reference",),
            ),
        )),
    )
}


def assignment_spec(name: str) -> AssignmentSpec:
    """The spec of one assignment, by its folder name (e.g. "01-identity-block")."""
    try:
        return ASSIGNMENTS[name]
    except KeyError:
        raise KeyError(f"unknown assignment {name!r}; the assignments are: {', '.join(ASSIGNMENTS)}") from None
