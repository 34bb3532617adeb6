"""The course's diagrams: block and architecture figures, and the text views of a model."""

import keras
import matplotlib
import pytest
from keras import layers

from resnet_course import ResNet50, diagrams, identity_block


@pytest.fixture(scope="module")
def resnet50():
    return ResNet50()


def texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


@pytest.mark.parametrize(
    "draw, expected",
    [
        (diagrams.draw_skip_connection, ["a[l]", "a[l+2]", "+"]),
        (diagrams.draw_identity_block, ["res{stage}{block}_branch2a", "bn{stage}{block}_branch2c", "+"]),
        (diagrams.draw_convolutional_block, ["res{stage}{block}_branch1", "bn{stage}{block}_branch1", "+"]),
    ],
)
def test_block_figures(draw, expected):
    fig = draw()
    assert isinstance(fig, matplotlib.figure.Figure)
    found = " ".join(texts(fig))
    for text in expected:
        assert text in found
    diagrams.close(fig)


def test_block_figures_carry_real_names_for_a_block():
    fig = diagrams.draw_convolutional_block(stage=3, block="a")
    found = " ".join(texts(fig))
    assert "res3a_branch2a" in found and "bn3a_branch1" in found
    assert "stride s" in found
    diagrams.close(fig)
    fig = diagrams.draw_identity_block(stage=2, block="b")
    assert "branch1" not in " ".join(texts(fig))  # no projection on the identity block's shortcut
    diagrams.close(fig)


def test_resnet50_plan_matches_the_model(resnet50):
    plan = diagrams.resnet50_plan((64, 64, 3), 6)
    assert [part["name"] for part in plan] == ["input", "stage 1", "stage 2", "stage 3", "stage 4", "stage 5",
                                                "head", "output"]
    stages = {name: shape for name, shape in diagrams.stage_outputs(resnet50)}
    for part in plan[1:6]:
        key = "stage 1 (stem)" if part["name"] == "stage 1" else part["name"]
        assert (None, *part["shape"]) == stages[key]
    assert plan[-1]["shape"] == (6,)
    assert diagrams.resnet50_plan((96, 64, 1), 3)[5]["shape"] == (3, 2, 2048)
    fig = diagrams.draw_resnet50()
    assert any("15×15×256" in t for t in texts(fig))
    diagrams.close(fig)


def test_stage_outputs(resnet50):
    assert diagrams.stage_outputs(resnet50) == [
        ("stage 1 (stem)", (None, 15, 15, 64)),
        ("stage 2", (None, 15, 15, 256)),
        ("stage 3", (None, 8, 8, 512)),
        ("stage 4", (None, 4, 4, 1024)),
        ("stage 5", (None, 2, 2, 2048)),
    ]


def test_architecture_text(resnet50):
    text = diagrams.architecture_text(resnet50)
    lines = text.splitlines()
    assert lines[0] == "ResNet50: input (None, 64, 64, 3) -> output (None, 6), 23,600,006 parameters"
    assert lines[1].startswith("stem") and "conv1 (64, 7x7/2)" in lines[1] and lines[1].endswith("(None, 15, 15, 64)")
    blocks = [line for line in lines if "block" in line]
    assert len(blocks) == 16
    assert sum("convolutional block" in line for line in blocks) == 4
    assert "res3a  convolutional block, s=2, f=3, filters [128, 128, 512]" in text
    assert lines[-1].startswith("head") and "fc6 (6, softmax)" in lines[-1] and lines[-1].endswith("(None, 6)")


def student_block(X, filters, stage, block, s=None):
    """A block written like a student's: only the convs are named; unnamed Activation and Add."""
    base = f"res{stage}{block}_branch"
    shortcut = X
    X = layers.Conv2D(filters[0], 1, strides=s or 1, name=base + "2a")(X)
    X = layers.Activation("relu")(X)
    X = layers.Conv2D(filters[1], 3, padding="same", name=base + "2b")(X)
    X = layers.Activation("relu")(X)
    X = layers.Conv2D(filters[2], 1, name=base + "2c")(X)
    if s is not None:
        shortcut = layers.Conv2D(filters[2], 1, strides=s, name=base + "1")(shortcut)
    return layers.Activation("relu")(layers.Add()([X, shortcut]))


def student_style_resnet(classes=4):
    """A thin ResNet built like a student's, with freely named activations and Adds."""
    X_input = keras.Input((32, 32, 3))
    X = layers.Conv2D(8, 3, strides=2, name="conv1")(X_input)
    X = layers.Activation("relu")(X)
    X = student_block(X, [4, 4, 16], 2, "a", s=1)
    X = student_block(X, [4, 4, 16], 2, "b")
    X = student_block(X, [8, 8, 32], 3, "a", s=2)
    X = layers.AveragePooling2D(2, name="avg_pool")(X)
    X = layers.Flatten(name="flatten")(X)
    X = layers.Dense(classes, activation="softmax", name=f"fc{classes}")(X)
    return keras.Model(X_input, X, name="thin")


def test_text_views_find_blocks_by_conv_names_only():
    model = student_style_resnet()
    assert diagrams.stage_outputs(model) == [
        ("stage 1 (stem)", (None, 15, 15, 8)),
        ("stage 2", (None, 15, 15, 16)),
        ("stage 3", (None, 8, 8, 32)),
    ]
    text = diagrams.architecture_text(model)
    assert "res2a  convolutional block, s=1, f=3, filters [4, 4, 16]" in text
    assert "res2b  identity block, f=3, filters [4, 4, 16]" in text
    assert "res3a  convolutional block, s=2, f=3, filters [8, 8, 32]" in text


def test_text_views_of_a_model_without_blocks():
    X = keras.Input((8,), name="x")
    model = keras.Model(X, layers.Dense(2, name="out")(X), name="tiny")
    text = diagrams.architecture_text(model)
    assert "out" in text and "Dense" in text and "(None, 2)" in text
    with pytest.raises(ValueError, match="res2a_branch2a"):
        diagrams.stage_outputs(model)


def test_layer_table():
    X = keras.Input((5, 5, 4), name="X")
    table = diagrams.layer_table(keras.Model(X, identity_block(X, 3, [2, 2, 4], 2, "b")))
    lines = table.splitlines()
    assert lines[0].split() == ["layer", "type", "output", "shape"]
    assert lines[1].split() == ["X", "InputLayer", "(None,", "5,", "5,", "4)"]
    assert lines[2].split()[:2] == ["res2b_branch2a", "Conv2D"]


def test_plot_architecture_falls_back_to_text(monkeypatch, capsys, resnet50):
    monkeypatch.setattr(diagrams, "graphviz_available", lambda: False)
    assert diagrams.plot_architecture(resnet50) is None
    assert capsys.readouterr().out.strip() == diagrams.architecture_text(resnet50)


@pytest.mark.skipif(not diagrams.graphviz_available(), reason="pydot and graphviz are not installed")
def test_plot_architecture_with_graphviz():
    model = student_style_resnet()
    image = diagrams.plot_architecture(model)
    assert image is not None and image.data[:8] == b"\x89PNG\r\n\x1a\n"
    # graphviz's 14-point labels at the default dpi, shown unscaled: at least 10 pixels high
    import inspect

    dpi = inspect.signature(diagrams.plot_architecture).parameters["dpi"].default
    assert image.unconfined and 14 * dpi / 72 >= 10


# --- readable at the width a notebook shows them ------------------------------------------

#: JupyterLab's output area is about 930 px wide on a 1366-px screen with the file browser open
#: (measured in tests/test_browser.py's set-up); a wider PNG is scaled down to it.
SHOWN_WIDTH_PX = 900
MIN_TEXT_PX = 10


def _shown_text_sizes(fig, shown_width=SHOWN_WIDTH_PX):
    """(text, font size in screen pixels, line height in screen pixels) of every visible text of
    ``fig`` as a notebook shows it: the inline backend saves the PNG at the figure's dpi with
    bbox_inches="tight", and the browser scales it down when it is wider than the output area."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    png_width = fig.get_tightbbox(renderer).width * fig.dpi
    scale = min(1.0, shown_width / png_width)
    sizes = []
    for text in fig.findobj(matplotlib.text.Text):
        if not text.get_visible() or not text.get_text().strip():
            continue
        lines = text.get_text().count("\n") + 1
        line_px = text.get_window_extent(renderer).height / lines * scale
        sizes.append((text.get_text(), text.get_fontsize() * fig.dpi / 72 * scale, line_px))
    return sizes, png_width


NOTEBOOK_FIGURES = {  # as the notebooks call them
    "01 skip connection": lambda: diagrams.draw_skip_connection(),
    "01 identity block": lambda: diagrams.draw_identity_block(stage=2, block="b"),
    "02 convolutional block": lambda: diagrams.draw_convolutional_block(stage=3, block="a"),
    "03 ResNet-50 overview": lambda: diagrams.draw_resnet50(input_shape=(64, 64, 3), classes=6),
    "template names": lambda: diagrams.draw_convolutional_block(),
}


@pytest.mark.parametrize("name", list(NOTEBOOK_FIGURES))
def test_figures_text_is_readable_at_notebook_width(name):
    fig = NOTEBOOK_FIGURES[name]()
    sizes, png_width = _shown_text_sizes(fig)
    diagrams.close(fig)
    assert png_width <= SHOWN_WIDTH_PX + 20, f"{name}: {png_width:.0f} px wide, scaled down in a notebook"
    small = [(text, round(font), round(line)) for text, font, line in sizes
             if font < MIN_TEXT_PX or line < MIN_TEXT_PX]
    assert not small, f"{name}: text under {MIN_TEXT_PX} px at {SHOWN_WIDTH_PX} px wide: {small}"


def test_the_size_check_catches_a_wide_figure():
    """The figures before this check: 14 inches at 100 dpi, 7.5-point text, shown 900 px wide."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(14, 2.7), dpi=100)
    ax.text(0.5, 0.5, "Stage 2\nCONV block s=1", fontsize=7.5)
    sizes, png_width = _shown_text_sizes(fig)
    plt.close(fig)
    assert png_width > 1000  # the axes span most of the 1,400 pixels
    font = next(font for text, font, _ in sizes if text.startswith("Stage 2"))
    assert font < 9  # 7.5 pt = 10.4 px at 100 dpi, scaled by 900 / png_width


@pytest.mark.parametrize("name", ["01 identity block", "02 convolutional block", "03 ResNet-50 overview"])
def test_box_labels_fit_in_their_boxes(name):
    from matplotlib.patches import FancyBboxPatch

    fig = NOTEBOOK_FIGURES[name]()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    boxes = [p.get_window_extent(renderer) for p in ax.patches if isinstance(p, FancyBboxPatch)]
    for text in ax.texts:
        extent = text.get_window_extent(renderer)
        centre = ((extent.x0 + extent.x1) / 2, (extent.y0 + extent.y1) / 2)
        box = next((b for b in boxes if b.contains(*centre)), None)
        if box is not None:
            assert extent.width <= box.width and extent.height <= box.height, (name, text.get_text())
    diagrams.close(fig)


# --- the per-stage summary ------------------------------------------------------------------


def test_stage_summary_adds_up(resnet50):
    from resnet_course.summary import stage_summary, stage_summary_text

    rows = stage_summary(resnet50)
    assert [r["part"] for r in rows] == ["stage 1 (stem)", "stage 2", "stage 3", "stage 4", "stage 5", "head"]
    assert [r["blocks"] for r in rows[1:5]] == [3, 4, 6, 3]
    assert sum(r["params"] for r in rows) == resnet50.count_params() == 23_600_006
    assert sum(r["layers"] for r in rows) == len(resnet50.layers) - 1  # all but the InputLayer
    assert rows[4]["output"] == (None, 2, 2, 2048) and rows[-1]["output"] == (None, 6)
    text = stage_summary_text(resnet50)
    assert "23,600,006" in text and len(text.splitlines()) == 8


def test_show_summary_prints_outside_ipython(resnet50, capsys):
    from resnet_course.summary import show_summary

    show_summary(resnet50)
    out = capsys.readouterr().out
    assert out.startswith("part") and "conv1_pad (ZeroPadding2D)" in out
