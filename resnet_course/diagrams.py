"""Diagrams of the course, drawn by our own code: blocks, ResNet-50's stages, text views of a model.

Figures (matplotlib, each function returns a ``matplotlib.figure.Figure``):

* ``draw_skip_connection()``: two layers with and without a skip connection (notebook 01);
* ``draw_identity_block()``: the identity block, main path and identity shortcut (01);
* ``draw_convolutional_block()``: the convolutional block, with its 1x1 projection
  shortcut and the stride (02);
* ``draw_resnet50()``: ResNet-50 stage by stage, with each stage's output shape (03).

Text (plain strings, stable enough to compare in tests):

* ``layer_table(model)``: one line per layer (name, type, output shape);
* ``stage_outputs(model)``: the output shape of the stem and of each stage;
* ``architecture_text(model)``: stem, each stage's blocks, head, with output shapes;
* ``plot_architecture(model)``: ``keras.utils.plot_model`` where pydot and
  graphviz are installed, otherwise it prints ``architecture_text(model)``.

The text views find blocks by the names the grader enforces (convs
``res{stage}{block}_branch2a`` ..., ``avg_pool``), never by the names of
activations and Adds, which students may choose freely.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile

from resnet_course.plots import _pyplot, close  # noqa: F401 - close is part of this module's API

# --- matplotlib -------------------------------------------------------------------------

#: Fill colours of the boxes, by kind of layer.
COLORS = {
    "conv": "#cfe2f3",
    "bn": "#fff2cc",
    "relu": "#f4cccc",
    "add": "#d9ead3",
    "io": "#eeeeee",
    "pool": "#d9d2e9",
    "dense": "#fce5cd",
    "stage": "#cfe2f3",
}


#: The width the notebooks show a figure at: JupyterLab's output area on a 1366-pixel-wide screen
#: with the file browser open is about 930 pixels; a wider PNG is scaled down, and its text with it.
NOTEBOOK_WIDTH_PX = 900
#: The smallest font, in points, of the figures: 8 pt at 100 dpi is 11 pixels, unscaled.
MIN_FONT_PT = 8


def _box(ax, x, y, text, kind, *, width=1.0, height=0.9, fontsize=9, bold=False, note=None):
    """A rounded box centred on (x, y), with an optional note (layer names) underneath."""
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(
        FancyBboxPatch(
            (x - width / 2, y - height / 2),
            width,
            height,
            boxstyle="round,pad=0.02,rounding_size=0.08",
            facecolor=COLORS[kind],
            edgecolor="#cc0000" if bold else "#444444",
            linewidth=2.2 if bold else 1.0,
        )
    )
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, fontweight="bold" if bold else "normal",
            linespacing=1.25)
    if note:
        ax.text(x, y - height / 2 - 0.1, note, ha="center", va="top", fontsize=MIN_FONT_PT, color="#333333",
                family="monospace", linespacing=1.2)


def _arrow(ax, start, end, *, color="#333333"):
    ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle="-|>", color=color, lw=1.2,
                                                          shrinkA=0, shrinkB=0))


def _line(ax, points, *, color="#333333"):
    xs, ys = zip(*points)
    ax.plot(xs, ys, color=color, lw=1.2, solid_capstyle="round")


def _draw_flow(main, *, shortcut=None, title, input_label, output_label, after_add=None,
               skip_label=None, footnote=None, box_w=1.2, box_h=0.9, step=1.5):
    """Draw a left-to-right block: main-path boxes, an Add, what follows it, and a shortcut above.

    ``main``, ``shortcut`` and ``after_add`` are lists of dicts with keys ``text``, ``kind`` and
    optionally ``note`` (layer names) and ``bold``. The figure is ``NOTEBOOK_WIDTH_PX`` wide at
    100 dpi, so a notebook shows it unscaled and its smallest text at 11 pixels.
    """
    from matplotlib.patches import Circle

    plt = _pyplot()
    io_w, small_w = 1.25, 0.9
    after_add = after_add or []
    x_in = 0.0
    x_first = x_in + io_w / 2 + 0.3 + box_w / 2
    xs_main = [x_first + step * i for i in range(len(main))]
    x_add = xs_main[-1] + box_w / 2 + 0.55
    xs_after = [x_add + 0.55 + small_w / 2 + (small_w + 0.4) * i for i in range(len(after_add))]
    x_out = (xs_after[-1] + small_w / 2 if xs_after else x_add) + 0.3 + io_w / 2
    notes = max([spec.get("note", "").count("\n") + 1 for spec in main if spec.get("note")] or [0])
    y_main = 0.0
    y_top = box_h / 2 + 0.3 * notes + 0.2 + (box_h * 0.4 + 0.3 * notes + 0.15 if shortcut else 0.3)
    bottom = -box_h / 2 - 0.3 * notes - 0.25 - (0.45 if footnote else 0.0)
    top = y_top + (box_h * 0.4 + 0.1 if shortcut else 0.4)

    left, right = x_in - io_w / 2 - 0.1, x_out + io_w / 2 + 0.1
    width_in = NOTEBOOK_WIDTH_PX / 100
    fig, ax = plt.subplots(figsize=(width_in, width_in * (top - bottom) / (right - left) + 0.45), dpi=100)
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    ax.set_aspect("equal")
    ax.axis("off")

    _box(ax, x_in, y_main, input_label, "io", width=io_w, height=box_h)
    _box(ax, x_out, y_main, output_label, "io", width=io_w, height=box_h)

    previous = x_in + io_w / 2
    for x, spec in zip(xs_main, main):
        _arrow(ax, (previous, y_main), (x - box_w / 2, y_main))
        _box(ax, x, y_main, spec["text"], spec["kind"], width=box_w, height=box_h, note=spec.get("note"),
             bold=spec.get("bold", False))
        previous = x + box_w / 2

    _arrow(ax, (previous, y_main), (x_add - 0.22, y_main))
    ax.add_patch(Circle((x_add, y_main), 0.22, facecolor=COLORS["add"], edgecolor="#444444"))
    ax.text(x_add, y_main, "+", ha="center", va="center", fontsize=14, fontweight="bold")
    previous = x_add + 0.22
    for x, spec in zip(xs_after, after_add):
        _arrow(ax, (previous, y_main), (x - small_w / 2, y_main))
        _box(ax, x, y_main, spec["text"], spec["kind"], width=small_w, height=0.6)
        previous = x + small_w / 2
    _arrow(ax, (previous, y_main), (x_out - io_w / 2, y_main))

    # The shortcut: up from the input, along the top, down into the Add.
    x_split = x_in + io_w / 2 + 0.15
    skip_color = "#1c4587"
    if shortcut:
        centre = (x_split + x_add) / 2
        xs_short = [centre + step * (i - (len(shortcut) - 1) / 2) for i in range(len(shortcut))]
        _line(ax, [(x_split, y_main), (x_split, y_top)], color=skip_color)
        _arrow(ax, (x_split, y_top), (xs_short[0] - box_w / 2, y_top), color=skip_color)
        for i, (x, spec) in enumerate(zip(xs_short, shortcut)):
            if i:
                _arrow(ax, (xs_short[i - 1] + box_w / 2, y_top), (x - box_w / 2, y_top), color=skip_color)
            _box(ax, x, y_top, spec["text"], spec["kind"], width=box_w, height=box_h * 0.8, note=spec.get("note"),
                 bold=spec.get("bold", False))
        _line(ax, [(xs_short[-1] + box_w / 2, y_top), (x_add, y_top)], color=skip_color)
    else:
        _line(ax, [(x_split, y_main), (x_split, y_top), (x_add, y_top)], color=skip_color)
    _arrow(ax, (x_add, y_top), (x_add, y_main + 0.22), color=skip_color)
    ax.plot([x_split], [y_main], "o", color=skip_color, ms=4)
    if skip_label:
        ax.text(x_split + 0.12, y_top + 0.08, skip_label, ha="left", va="bottom", fontsize=9, color=skip_color,
                style="italic")

    ax.set_title(title, fontsize=10, wrap=True)
    if footnote:
        ax.text((left + right) / 2, bottom + 0.02, footnote, ha="center", va="bottom", fontsize=MIN_FONT_PT + 0.5,
                color="#333333", wrap=True)
    fig.tight_layout(pad=0.3)
    return fig


def _block_names(stage, block, *, shortcut: bool) -> dict[str, str]:
    """The layer names to print under the boxes: real names when stage and block are given."""
    from resnet_course.blocks import layer_names

    if stage is None or block is None:
        stage, block = "{stage}", "{block}"
    return layer_names(stage, block, shortcut=shortcut)


def _main_path(names, *, stride: bool):
    """The main path as three boxes, one per conv with its batch norm (and ReLU), names underneath."""
    first = "Conv2D 1×1, F1\nstride s, valid" if stride else "Conv2D 1×1, F1\nvalid"
    return [
        dict(text=f"{first}\nBatchNorm\nReLU", kind="conv", note=f"{names['conv_2a']}\n{names['bn_2a']}",
             bold=stride),
        dict(text="Conv2D f×f, F2\nsame\nBatchNorm\nReLU", kind="conv", note=f"{names['conv_2b']}\n{names['bn_2b']}"),
        dict(text="Conv2D 1×1, F3\nvalid\nBatchNorm", kind="conv", note=f"{names['conv_2c']}\n{names['bn_2c']}"),
    ]


def _block_title(kind: str, stage, block) -> str:
    return f"{kind} res{stage}{block}" if stage is not None and block is not None else kind


def draw_identity_block(stage=None, block=None):
    """The identity block: 1x1 -> fxf -> 1x1 convs with BN and ReLU, plus the input, then ReLU.

    With ``stage`` and ``block`` (e.g. 2, "b") the boxes carry the layer names to use.
    """
    names = _block_names(stage, block, shortcut=False)
    return _draw_flow(
        _main_path(names, stride=False),
        title=f"{_block_title('Identity block', stage, block)}: the shortcut adds the input unchanged "
              "(shapes must match: F3 = C)",
        input_label="X\n(n_H, n_W, C)",
        output_label="output\n(n_H, n_W,\nF3)",
        after_add=[dict(text="ReLU", kind="relu")],
        skip_label="shortcut: X_shortcut = X (identity)",
        footnote="a[l+2] = ReLU(z[l+2] + a[l]); the conv and batch-norm names are under the boxes",
        box_w=2.0, box_h=1.55, step=2.45,
    )


def draw_convolutional_block(stage=None, block=None):
    """The convolutional block: the identity block's main path with stride s on its first 1x1 conv,
    and a 1x1 conv (stride s, F3 filters) + BN on the shortcut."""
    names = _block_names(stage, block, shortcut=True)
    return _draw_flow(
        _main_path(names, stride=True),
        shortcut=[
            dict(text="Conv2D 1×1, F3\nstride s, valid\nBatchNorm", kind="conv",
                 note=f"{names['conv_1']}\n{names['bn_1']}", bold=True),
        ],
        title=f"{_block_title('Convolutional block', stage, block)}: a 1×1 projection on the shortcut "
              "changes the shape (stride s in red)",
        input_label="X\n(n_H, n_W, C)",
        output_label="output\n(⌈n_H/s⌉,\n⌈n_W/s⌉, F3)",
        after_add=[dict(text="ReLU", kind="relu")],
        skip_label="shortcut: W_s · X",
        footnote="a[l+2] = ReLU(z[l+2] + W_s a[l]): both paths end with shape (⌈n_H/s⌉, ⌈n_W/s⌉, F3)",
        box_w=2.0, box_h=1.55, step=2.45,
    )


def draw_skip_connection():
    """Two layers, plain and with a skip connection: a[l+2] = g(z[l+2] + a[l])."""
    return _draw_flow(
        [
            dict(text="Linear\nz[l+1]", kind="dense"),
            dict(text="ReLU\na[l+1]", kind="relu"),
            dict(text="Linear\nz[l+2]", kind="dense"),
        ],
        after_add=[dict(text="ReLU", kind="relu")],
        title="A skip connection: a[l] jumps over two layers and is added before the last ReLU",
        input_label="a[l]",
        output_label="a[l+2]",
        skip_label="skip connection (shortcut): a[l]",
        footnote="plain: a[l+2] = g(z[l+2])        residual: a[l+2] = g(z[l+2] + a[l])",
    )


# --- ResNet-50, stage by stage ------------------------------------------------------------


def resnet50_plan(input_shape=(64, 64, 3), classes=6) -> list[dict]:
    """ResNet-50's parts in order, each with its layers in words and its output shape.

    Computed with the convolution arithmetic (no model is built):
    ``valid``: floor((n - k) / s) + 1; ``same``: ceil(n / s).
    """
    from resnet_course.model import STAGE_FILTERS, STAGE_IDENTITY_BLOCKS, STAGE_STRIDES

    height, width, channels = input_shape

    def valid(n, k, s):
        return (n - k) // s + 1

    h, w = valid(height + 6, 7, 2), valid(width + 6, 7, 2)
    h, w = valid(h, 3, 2), valid(w, 3, 2)
    plan = [
        dict(name="input", text=f"Input\n{height}×{width}×{channels}", shape=(height, width, channels), kind="io"),
        dict(name="stage 1", text="Stage 1 (stem)\nZeroPad 3\nConv 7×7/2, 64\nBN, ReLU\nMaxPool 3×3/2",
             shape=(h, w, 64), kind="pool"),
    ]
    for index, (filters, identities, stride) in enumerate(zip(STAGE_FILTERS, STAGE_IDENTITY_BLOCKS, STAGE_STRIDES)):
        stage = index + 2
        h, w = math.ceil(h / stride), math.ceil(w / stride)
        plan.append(dict(
            name=f"stage {stage}",
            text=f"Stage {stage}\nconv block s={stride}\n+ {identities} ID blocks\n[{', '.join(map(str, filters))}]",
            shape=(h, w, filters[2]),
            kind="stage",
        ))
    h, w = h // 2, w // 2
    plan.append(dict(name="head", text="AvgPool 2×2\nFlatten", shape=(h * w * STAGE_FILTERS[-1][2],), kind="pool"))
    plan.append(dict(name="output", text=f"Dense {classes}\nsoftmax", shape=(classes,), kind="dense"))
    return plan


def draw_resnet50(input_shape=(64, 64, 3), classes=6):
    """ResNet-50 stage by stage, with the output shape of each part."""
    plt = _pyplot()
    plan = resnet50_plan(input_shape, classes)
    step, box_w, box_h = 2.0, 1.9, 1.75
    width_in = NOTEBOOK_WIDTH_PX / 100  # shown unscaled in a notebook (see NOTEBOOK_WIDTH_PX)
    fig, ax = plt.subplots(figsize=(width_in, 3.1), dpi=100)
    ax.set_xlim(-1.0, step * (len(plan) - 1) + 1.0)
    ax.set_ylim(-1.35, 0.95)
    ax.set_aspect("equal")
    ax.axis("off")
    for i, part in enumerate(plan):
        x = i * step
        _box(ax, x, 0, part["text"], part["kind"], width=box_w, height=box_h, fontsize=MIN_FONT_PT)
        shape = "×".join(map(str, part["shape"]))
        ax.text(x, -box_h / 2 - 0.1, shape, ha="center", va="top", fontsize=MIN_FONT_PT + 1, family="monospace",
                color="#1c4587")
        if i:
            _arrow(ax, ((i - 1) * step + box_w / 2, 0), (x - box_w / 2, 0))
    ax.set_title("ResNet-50 (v1): a stem, four stages of bottleneck blocks (3 + 4 + 6 + 3 = 16 blocks),\n"
                 "a classifier; the output shape of each part in blue", fontsize=10)
    fig.tight_layout(pad=0.3)
    return fig


# --- text views of a model ----------------------------------------------------------------


def _shape_text(shape) -> str:
    shape = tuple(shape)
    return "(" + ", ".join("None" if n is None else str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


def _output_shape(layer) -> tuple:
    return tuple(layer.output.shape)


def layer_table(model) -> str:
    """One line per layer of ``model``: name, type and output shape."""
    rows = [(layer.name, type(layer).__name__, _shape_text(_output_shape(layer))) for layer in model.layers]
    name_width = max(len("layer"), *(len(r[0]) for r in rows))
    type_width = max(len("type"), *(len(r[1]) for r in rows))
    lines = [f"{'layer':<{name_width}}  {'type':<{type_width}}  output shape"]
    lines += [f"{name:<{name_width}}  {kind:<{type_width}}  {shape}" for name, kind, shape in rows]
    return "\n".join(lines)


_BLOCK_CONV = re.compile(r"^res(\d+)([a-z]+)_branch2a$")


def _blocks_of(model) -> list[tuple[int, str]]:
    """(stage, block) of every block of ``model``, in order, found by its first conv's name."""
    found = []
    for layer in model.layers:
        match = _BLOCK_CONV.match(layer.name)
        if match:
            found.append((int(match.group(1)), match.group(2)))
    return found


def _has_layer(model, name: str) -> bool:
    return any(layer.name == name for layer in model.layers)


def _block_outputs(model) -> list[tuple[int, str, tuple]]:
    """(stage, block, output shape) of each block: the shape entering whatever follows the block.

    A block's output is the input of the next block's first conv, or of
    ``avg_pool`` (or the model's output) after the last block, so the Adds'
    and activations' names don't matter.
    """
    blocks = _blocks_of(model)
    outputs = []
    for i, (stage, block) in enumerate(blocks):
        if i + 1 < len(blocks):
            following = model.get_layer(f"res{blocks[i + 1][0]}{blocks[i + 1][1]}_branch2a")
            shape = tuple(following.input.shape)
        elif _has_layer(model, "avg_pool"):
            shape = tuple(model.get_layer("avg_pool").input.shape)
        else:
            shape = tuple(model.outputs[0].shape)
        outputs.append((stage, block, shape))
    return outputs


def stage_outputs(model) -> list[tuple[str, tuple]]:
    """The output shape of the stem and of each stage of a ResNet built with the course's names.

    >>> stage_outputs(ResNet50())[0]          # doctest: +SKIP
    ('stage 1 (stem)', (None, 15, 15, 64))
    """
    blocks = _block_outputs(model)
    if not blocks:
        raise ValueError(
            "No block found in the model: the first conv of each block must be named "
            "res{stage}{block}_branch2a (e.g. res2a_branch2a)."
        )
    first_stage, first_block, _ = blocks[0]
    result = [("stage 1 (stem)", tuple(model.get_layer(f"res{first_stage}{first_block}_branch2a").input.shape))]
    last_of_stage = {}
    for stage, _block, shape in blocks:
        last_of_stage[stage] = shape
    result += [(f"stage {stage}", shape) for stage, shape in last_of_stage.items()]
    return result


def architecture_text(model) -> str:
    """A readable text diagram of a ResNet: the stem, each stage's blocks, the head, with shapes.

    Models that don't use the course's names are listed layer by layer.
    """
    blocks = _block_outputs(model)
    title = (f"{model.name}: input {_shape_text(model.inputs[0].shape)} -> output "
             f"{_shape_text(model.outputs[0].shape)}, {model.count_params():,} parameters")
    if not blocks:
        return title + "\n" + layer_table(model)

    names = [layer.name for layer in model.layers]
    first = names.index(f"res{blocks[0][0]}{blocks[0][1]}_branch2a")
    stem = [layer for layer in model.layers[:first] if type(layer).__name__ != "InputLayer"]
    head_start = names.index("avg_pool") if "avg_pool" in names else len(names)
    head = model.layers[head_start:]

    def describe(layer) -> str:
        config = layer.get_config()
        kind = type(layer).__name__
        if kind == "Conv2D":
            k, s = config["kernel_size"], config["strides"]
            return f"{layer.name} ({config['filters']}, {k[0]}x{k[1]}/{s[0]})"
        if kind in ("MaxPooling2D", "AveragePooling2D"):
            k, s = config["pool_size"], config["strides"]
            return f"{layer.name} ({k[0]}x{k[1]}/{s[0]})"
        if kind == "Dense":
            return f"{layer.name} ({config['units']}, {config.get('activation', 'linear')})"
        return layer.name

    rows = [("stem", " -> ".join(describe(layer) for layer in stem),
             _shape_text(model.get_layer(names[first]).input.shape))]
    previous_stage = None
    for stage, block, shape in blocks:
        conv = model.get_layer(f"res{stage}{block}_branch2a").get_config()
        filters = [model.get_layer(f"res{stage}{block}_branch2{k}").get_config()["filters"] for k in "abc"]
        middle = model.get_layer(f"res{stage}{block}_branch2b").get_config()["kernel_size"]
        if _has_layer(model, f"res{stage}{block}_branch1"):
            kind = f"convolutional block, s={conv['strides'][0]}"
        else:
            kind = "identity block"
        text = f"res{stage}{block}  {kind}, f={middle[0]}, filters {filters}"
        rows.append((f"stage {stage}" if stage != previous_stage else "", text, _shape_text(shape)))
        previous_stage = stage
    if head:
        rows.append(("head", " -> ".join(describe(layer) for layer in head), _shape_text(model.outputs[0].shape)))

    label_width = max(len(r[0]) for r in rows)
    text_width = max(len(r[1]) for r in rows)
    lines = [title]
    lines += [f"{label:<{label_width}}  {text:<{text_width}}  {shape}" for label, text, shape in rows]
    return "\n".join(lines)


def graphviz_available() -> bool:
    """Whether ``keras.utils.plot_model`` can draw here (pydot installed and graphviz's ``dot`` on PATH)."""
    try:
        import pydot  # noqa: F401
    except ImportError:
        return False
    return shutil.which("dot") is not None


def plot_architecture(model, *, dpi: int = 56):
    """Draw ``model`` with ``keras.utils.plot_model`` where graphviz is installed; else print the text diagram.

    Returns an ``IPython.display.Image`` (it shows itself as a cell's last
    value) or ``None`` after printing ``architecture_text(model)``.
    """
    if graphviz_available():
        import keras

        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "model.png")
            try:
                # graphviz's 14-point labels at 56 dpi are 11 pixels high; the names say which block is which
                keras.utils.plot_model(model, to_file=path, show_shapes=True, show_layer_names=True, dpi=dpi)
                with open(path, "rb") as f:
                    data = f.read()
            except Exception as exc:  # noqa: BLE001 - graphviz half-installed: fall back to text
                print(f"(plot_model failed: {type(exc).__name__}: {exc}; here is the text diagram)")
            else:
                from IPython.display import Image

                # unconfined: shown at its own size (scrolling sideways) rather than shrunk to the
                # output area, which would bring its 11-pixel labels under 10 pixels
                return Image(data=data, unconfined=True)
    print(architecture_text(model))
    return None


__all__ = [
    "COLORS",
    "architecture_text",
    "close",
    "draw_convolutional_block",
    "draw_identity_block",
    "draw_resnet50",
    "draw_skip_connection",
    "graphviz_available",
    "layer_table",
    "plot_architecture",
    "resnet50_plan",
    "stage_outputs",
]
