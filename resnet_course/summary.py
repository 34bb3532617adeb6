"""A compact, per-stage summary of a ResNet for the notebooks, with Keras' full summary folded away.

>>> from resnet_course.summary import show_summary
>>> show_summary(model)        # doctest: +SKIP

``model.summary()`` lists ResNet-50's 177 layers: about ten screens in a notebook, with wrapped
shapes and a truncated "Connected to" column. ``stage_summary`` gives one row per part (stem,
stages 2-5, head): its blocks, layers, output shape and parameters; ``show_summary`` shows that
table and puts the full summary in a ``<details>`` element that opens on a click.
"""

from __future__ import annotations

import html
import io
import re

from resnet_course.diagrams import _shape_text, stage_outputs

__all__ = ["show_summary", "stage_summary", "stage_summary_text"]

_STAGE_LAYER = re.compile(r"^(?:res|bn)(\d+)([a-z]+)")


def stage_summary(model) -> list[dict]:
    """One row per part of a ResNet built with the course's names: ``part``, ``blocks``,
    ``layers``, ``output`` (shape) and ``params``. The stem is everything before the first block,
    the head everything after the last one."""
    shapes = dict(stage_outputs(model))  # raises a clear error for a model without blocks
    rows: dict[str, dict] = {}
    seen_block = False
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        match = _STAGE_LAYER.match(layer.name)
        if match:
            seen_block = True
            part = f"stage {match.group(1)}"
        else:
            # an Add or ReLU named freely belongs to the stage of the block before it
            part = (list(rows)[-1] if seen_block and not _is_head(model, layer) else
                    ("head" if seen_block else "stage 1 (stem)"))
        row = rows.setdefault(part, dict(part=part, blocks=set(), layers=0, params=0, output=None))
        row["layers"] += 1
        row["params"] += layer.count_params()
        if match:
            row["blocks"].add(match.group(2))
    for part, row in rows.items():
        row["blocks"] = len(row["blocks"])
        row["output"] = shapes.get(part, tuple(model.outputs[0].shape) if part == "head" else None)
    return list(rows.values())


def _is_head(model, layer) -> bool:
    names = [lay.name for lay in model.layers]
    start = names.index("avg_pool") if "avg_pool" in names else None
    if start is None:
        for index, lay in enumerate(model.layers):
            if type(lay).__name__ in ("GlobalAveragePooling2D", "AveragePooling2D", "Flatten", "Dense"):
                start = index
                break
    return start is not None and names.index(layer.name) >= start


def stage_summary_text(model) -> str:
    """``stage_summary`` as a plain-text table, with the total."""
    rows = stage_summary(model)
    lines = [f"{'part':<15} {'blocks':>6} {'layers':>6}  {'output shape':<20} {'parameters':>12}"]
    for row in rows:
        shape = _shape_text(row["output"]) if row["output"] is not None else ""
        lines.append(f"{row['part']:<15} {row['blocks'] or '':>6} {row['layers']:>6}  {shape:<20} {row['params']:>12,}")
    lines.append(f"{'total':<15} {'':>6} {sum(r['layers'] for r in rows):>6}  {'':<20} {model.count_params():>12,}")
    return "\n".join(lines)


def _full_summary(model) -> str:
    out = io.StringIO()
    model.summary(print_fn=lambda line, line_break=True: out.write(line + ("\n" if line_break else "")),
                  line_length=110)
    return out.getvalue()


class _Summary:
    """The table and the full summary: HTML with the full one folded in a notebook, plain text elsewhere."""

    def __init__(self, table: str, full: str, layers: int):
        self.table, self.full, self.layers = table, full, layers

    def _repr_html_(self) -> str:
        return (
            f"<pre style='font-size: 13px'>{html.escape(self.table)}</pre>"
            f"<details><summary>The full <code>model.summary()</code>: {self.layers} layers "
            "(click to open)</summary>"
            f"<pre style='font-size: 12px; white-space: pre; overflow-x: auto'>{html.escape(self.full)}</pre>"
            "</details>"
        )

    def __repr__(self) -> str:
        return f"{self.table}\n{self.full}"


def show_summary(model) -> None:
    """Show the per-stage table; the full ``model.summary()`` is folded in a <details> below it.

    Outside IPython, prints the table and the full summary."""
    table = stage_summary_text(model)
    try:
        from IPython import get_ipython
        from IPython.display import display
        from IPython.utils.capture import capture_output
    except ImportError:
        get_ipython = None
    if get_ipython is None or get_ipython() is None:
        print(table)
        print(_full_summary(model))
        return
    with capture_output():  # Keras' rich console shows an empty <pre> in a notebook even with print_fn
        full = _full_summary(model)
    display(_Summary(table, full, len(model.layers)))
