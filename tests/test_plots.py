"""Tests of resnet_course.plots: every function returns a Figure and handles the usual inputs."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from resnet_course import plots  # noqa: E402

NAMES = ["zero", "one", "two"]


def test_confusion_matrix_counts():
    m = plots.confusion_matrix([0, 1, 1, 2, 2, 2], [0, 1, 2, 2, 2, 0], 3)
    assert m.tolist() == [[1, 0, 0], [0, 1, 1], [1, 0, 2]]
    assert m.dtype.kind == "i" and m.sum() == 6
    assert plots.confusion_matrix([0, 1], [1, 1]).shape == (2, 2)  # classes inferred
    assert plots.confusion_matrix([], [], 4).sum() == 0


def test_confusion_matrix_matches_a_loop():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    expected = np.zeros((5, 5), int)
    for t, p in zip(y_true, y_pred):
        expected[t, p] += 1
    assert np.array_equal(plots.confusion_matrix(y_true, y_pred, 5), expected)


def test_confusion_matrix_errors():
    with pytest.raises(ValueError, match="labels"):
        plots.confusion_matrix([0, 1], [0, 1, 1], 2)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        plots.confusion_matrix([0, 3], [0, 1], 2)


@pytest.mark.parametrize("normalize", [True, False])
def test_plot_confusion_matrix(normalize):
    fig = plots.plot_confusion_matrix([0, 1, 2, 2], [0, 2, 2, 2], NAMES, normalize=normalize)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == NAMES
    assert "75.0%" in ax.get_title()
    plots.close(fig)


def test_plot_learning_curves_from_dict_csv_and_history(tmp_path):
    history = {"loss": [1.0, 0.5, 0.3], "accuracy": [0.4, 0.7, 0.9], "val_loss": [1.1, 0.7, 0.6],
               "val_accuracy": [0.3, 0.8, 0.7], "learning_rate": [0.1, 0.05, 0.0]}
    fig = plots.plot_learning_curves(history, title="demo")
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    plots.close(fig)

    csv = tmp_path / "history.csv"
    csv.write_text("epoch,loss,accuracy,val_loss,val_accuracy\n1,1.0,0.4,1.1,0.3\n2,0.5,0.7,0.7,0.8\n")
    fig = plots.plot_learning_curves(csv)
    assert len(fig.axes) == 2
    plots.close(fig)
    fig = plots.plot_learning_curves(str(csv))
    plots.close(fig)

    class FakeHistory:
        pass

    fake = FakeHistory()
    fake.history = {"loss": [1.0, 0.9]}
    fig = plots.plot_learning_curves(fake)
    assert len(fig.axes) == 1
    plots.close(fig)


def test_plot_learning_curves_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        plots.plot_learning_curves(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="No loss or accuracy"):
        plots.plot_learning_curves({"epoch_seconds": [1.0]})
    with pytest.raises(TypeError):
        plots.plot_learning_curves(42)


def test_plot_samples_rgb_and_grey():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(20, 8, 8, 3), dtype=np.uint8)
    y = rng.integers(0, 3, size=20)
    fig = plots.plot_samples(x, y, NAMES, n=10)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 10 and set(titles) <= set(NAMES)
    plots.close(fig)
    grey = rng.random(size=(5, 8, 8, 1))  # floats in [0, 1]
    fig = plots.plot_samples(grey, [0, 1, 2, 0, 1], None, n=30, seed=None)
    assert [ax.get_title() for ax in fig.axes][:5] == ["0", "1", "2", "0", "1"]
    plots.close(fig)


def test_plot_predictions_marks_wrong_ones_in_red():
    x = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    y_true = [0, 1, 2, 0]
    probs = np.eye(3)[[0, 2, 2, 1]]  # probabilities work as well as indices
    fig = plots.plot_predictions(x, y_true, probs, NAMES)
    colours = [matplotlib.colors.to_hex(ax.title.get_color()) for ax in fig.axes[:4]]
    assert colours[0] == colours[2] == matplotlib.colors.to_hex("green")
    assert colours[1] == colours[3] == matplotlib.colors.to_hex("red")
    assert "true: one" in fig.axes[1].get_title()
    assert "2 wrong of 4" in fig._suptitle.get_text()
    plots.close(fig)
    fig = plots.plot_predictions(x, y_true, [0, 2, 2, 1], NAMES, wrong_first=True, n=2)
    assert all("true:" in ax.get_title() for ax in fig.axes[:2])
    plots.close(fig)
    with pytest.raises(ValueError, match="entries"):
        plots.plot_predictions(x, y_true, [0, 1], NAMES)


def test_best_validation_epoch_breaks_ties_by_loss_like_training():
    from resnet_course.plots import best_validation_epoch

    history = {"val_accuracy": [0.5, 0.99, 0.99, 0.9], "val_loss": [1.0, 0.6, 0.4, 0.3]}
    assert best_validation_epoch(history) == 3
    assert best_validation_epoch({"val_accuracy": [0.2, 0.8, 0.7]}) == 2
