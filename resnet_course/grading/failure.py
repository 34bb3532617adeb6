"""The exception a student sees when a check fails: its message is the whole diagnosis.

It is an ``AssertionError`` (so nbgrader scores the test cell 0 and ``pytest.raises(AssertionError)``
still catches it), and it tells IPython how to show it: the message alone, without the grader's own
frames (IPython's ``_render_traceback_``), in the notebook, nbgrader's Validate and the feedback.
This module imports nothing, so the exercises' checks and the grading child can raise it cheaply.
"""

from __future__ import annotations


class GradingFailure(AssertionError):
    """A failed check, worded for the student: what is wrong, where, and how to fix it."""

    def _render_traceback_(self):
        """What IPython shows instead of a traceback: the diagnosis, its first line in red. When the
        student's own code raised, the message already names their failing line."""
        lines = str(self).splitlines() or [type(self).__name__]
        return ["\x1b[31m" + lines[0] + "\x1b[0m", *lines[1:]]
