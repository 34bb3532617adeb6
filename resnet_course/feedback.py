"""How nbgrader's feedback HTML shows a test cell's failure: the message alone, long lines wrapped.

nbgrader_config.py runs ``FeedbackView`` last among ``GenerateFeedback``'s preprocessors (after
``ClearHiddenTests`` and ``CSSHTMLHeaderPreprocessor``):

* the error of a graded cell keeps only ``ExceptionName: message``. Its traceback would show the
  cell's code around the failing line, and in a hidden-test cell that is the hidden tests' code
  and cases, which ``ClearHiddenTests`` removes from the cell's source but not from its output;
  the message is the grader's diagnosis, which is what the student needs.
* a CSS rule wraps long lines of outputs and code, which the classic template clips.
"""

from __future__ import annotations

from nbconvert.preprocessors import Preprocessor
from traitlets import Unicode

__all__ = ["FeedbackView", "WRAP_CSS"]

WRAP_CSS = """
div.output_area pre, div.output_subarea pre, div.input_area pre, div.output_text pre {
    white-space: pre-wrap;
    overflow-wrap: anywhere;
}
div.output_area, div.output_subarea { overflow-x: visible; }
"""


class FeedbackView(Preprocessor):
    """Graded cells' errors as their message only; long lines wrapped (see the module's docstring)."""

    css = Unicode(WRAP_CSS, help="CSS added to the feedback page").tag(config=True)

    def preprocess(self, nb, resources):
        nb, resources = super().preprocess(nb, resources)
        inlining = resources.setdefault("inlining", {})
        inlining["css"] = list(inlining.get("css") or []) + [self.css]
        return nb, resources

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("grade"):
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    output["traceback"] = [f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"]
        return cell, resources
