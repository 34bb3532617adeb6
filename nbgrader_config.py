"""nbgrader's configuration for the course; run every nbgrader command from the repository root.

    solutions/<assignment>/<notebook>.ipynb    the instructors' source (with solutions and hidden tests)
    notebooks/<assignment>/<notebook>.ipynb    the student release (`python scripts/release_notebooks.py`)
    release/<assignment>/                      nbgrader's own release folder (not in git; see below)
    submitted/<student>/<assignment>/          students' submissions (not in git)
    autograded/, feedback/, gradebook.db       made by autograde and generate_feedback (not in git)

An assignment is a folder of solutions/ (01-identity-block, 02-convolutional-block,
03-resnet50, ...): adding a folder adds an assignment, nothing here lists them.
"""

import os

c = get_config()  # noqa: F821 - provided by nbgrader when it loads this file

#: The folder of this file: commands work from the root whatever the current directory.
ROOT = os.path.dirname(os.path.abspath(__file__))

c.CourseDirectory.root = ROOT
c.CourseDirectory.course_id = "resnet-course"
c.CourseDirectory.source_directory = "solutions"
# nbgrader's commands write their release here, never into the committed notebooks/: a
# `generate_assignment --force` deletes the release folder before it writes, so a run that
# fails half-way (alembic missing from PATH, a broken source) would lose the committed
# notebook. scripts/release_notebooks.py regenerates notebooks/ into a temporary folder and
# moves it into place only on success.
c.CourseDirectory.release_directory = "release"
c.CourseDirectory.submitted_directory = "submitted"
c.CourseDirectory.autograded_directory = "autograded"
c.CourseDirectory.feedback_directory = "feedback"
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(ROOT, "gradebook.db")
# Never copy caches or pytest's files from solutions/ into a release.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", ".pytest_cache"]

# The release: solutions and hidden tests removed, outputs cleared, test cells locked.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Executing notebooks (validate, autograde): a generous limit per cell, since the training
# notebooks run for minutes; a cell that runs longer is interrupted, scores zero, and the
# run goes on with the next cell.
c.ExecutePreprocessor.timeout = 600
c.ExecutePreprocessor.interrupt_on_timeout = True

# Submissions from students missing from the gradebook are graded (and the student added).
c.Autograde.create_student = True

# Feedback shows each test's result and the grader's messages, but not the hidden tests' code,
# so the hidden tests stay hidden for the next cohort: ClearHiddenTests takes them out of the
# cells' source, FeedbackView out of the error outputs (a graded cell's error keeps only its
# message, the grader's diagnosis) and wraps long lines, which the page would otherwise clip.
from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor  # noqa: E402
from nbgrader.preprocessors import ClearHiddenTests, GetGrades  # noqa: E402

from resnet_course.feedback import FeedbackView  # noqa: E402

c.GenerateFeedback.preprocessors = [GetGrades, ClearHiddenTests, CSSHTMLHeaderPreprocessor, FeedbackView]
