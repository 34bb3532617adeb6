"""Figures of the course: learning curves, sample images, predictions and confusion matrices.

Every function returns a ``matplotlib.figure.Figure``. In a notebook it shows
itself; in a script save it with ``fig.savefig(path)`` and ``close(fig)``.
This module never forces a matplotlib backend when a display (or a notebook)
is there; with no display and no backend chosen it falls back to Agg.

``confusion_matrix`` is the numpy reference of the notebooks' exercise.
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    """matplotlib.pyplot, with the Agg backend when there is no display and no backend was chosen."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules and "MPLBACKEND" not in os.environ:
        in_notebook = "ipykernel" in sys.modules
        headless = sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
        if headless and not in_notebook:
            matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def close(fig) -> None:
    """Close a figure (free its memory) once saved."""
    _pyplot().close(fig)


# --- confusion matrix ------------------------------------------------------------------


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """Counts ``C[i, j]`` of examples of true class ``i`` predicted as class ``j``, with numpy.

    >>> confusion_matrix([0, 1, 1, 2], [0, 1, 2, 2], 3)
    array([[1, 0, 0],
           [0, 1, 1],
           [0, 0, 1]])
    """
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} labels but y_pred has {y_pred.size}.")
    if num_classes is None:
        num_classes = int(max(y_true.max(initial=-1), y_pred.max(initial=-1)) + 1)
    if y_true.size and (min(y_true.min(), y_pred.min()) < 0 or max(y_true.max(), y_pred.max()) >= num_classes):
        raise ValueError(f"Labels must be integers in [0, {num_classes}).")
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def plot_confusion_matrix(y_true, y_pred, class_names: Sequence[str], normalize: bool = True, *,
                          title: str | None = None, cmap: str = "Blues"):
    """The confusion matrix as a heat map with class names; rows are true classes.

    ``normalize=True`` shows each row as fractions of the true class (the
    diagonal is the per-class accuracy), with the counts in brackets.
    """
    plt = _pyplot()
    counts = confusion_matrix(y_true, y_pred, len(class_names))
    rows = counts.sum(axis=1, keepdims=True)
    values = np.divide(counts, rows, out=np.zeros(counts.shape, dtype=float), where=rows > 0) if normalize else counts
    n = len(class_names)
    size = max(4.0, 0.7 * n + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(values, cmap=cmap, vmin=0, vmax=1 if normalize else max(1, counts.max()))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), labels=[str(c) for c in class_names], rotation=45, ha="right")
    ax.set_yticks(range(n), labels=[str(c) for c in class_names])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    threshold = (values.max() if values.size else 0) / 2
    for i in range(n):
        for j in range(n):
            text = f"{values[i, j]:.2f}\n({counts[i, j]})" if normalize else f"{counts[i, j]}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if values[i, j] > threshold else "black")
    accuracy = np.trace(counts) / max(1, counts.sum())
    ax.set_title(title or f"Confusion matrix (accuracy {accuracy:.1%})")
    fig.tight_layout()
    return fig


# --- learning curves -------------------------------------------------------------------


def _read_history(history_or_csv) -> dict[str, list[float]]:
    """A {metric: [value per epoch]} dict from a Keras History, a dict, a DataFrame or a CSV path."""
    if hasattr(history_or_csv, "history") and isinstance(history_or_csv.history, Mapping):
        history_or_csv = history_or_csv.history
    if isinstance(history_or_csv, (str, os.PathLike)):
        path = Path(history_or_csv)
        if not path.is_file():
            raise FileNotFoundError(f"No history file at {path}.")
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            raise ValueError(f"{path} has no epochs.")
        return {k: [float(row[k]) for row in rows] for k in rows[0] if k != "epoch" and rows[0][k] != ""}
    if hasattr(history_or_csv, "to_dict") and hasattr(history_or_csv, "columns"):  # a pandas DataFrame
        return {str(k): [float(v) for v in history_or_csv[k]] for k in history_or_csv.columns if k != "epoch"}
    if isinstance(history_or_csv, Mapping):
        return {str(k): [float(v) for v in values] for k, values in history_or_csv.items()}
    raise TypeError("plot_learning_curves takes a keras History, a dict of lists, a DataFrame or a CSV path, "
                    f"got {type(history_or_csv).__name__}.")


def best_validation_epoch(history) -> int:
    """The 1-based epoch of the best validation accuracy, ties broken by the lower validation loss.

    The rule ``resnet_course.training`` uses to keep the best model, so the plot marks that epoch.
    """
    accuracy = np.asarray(history["val_accuracy"], dtype=float)
    loss = np.asarray(history.get("val_loss", np.zeros_like(accuracy)), dtype=float)
    return int(np.lexsort((loss, -accuracy))[0]) + 1


def plot_learning_curves(history_or_csv, *, title: str | None = None):
    """Loss and accuracy per epoch, training and validation (and the learning rate when logged).

    Accepts a ``keras.callbacks.History``, its ``.history`` dict, a DataFrame
    or the path of the ``history.csv`` that ``train`` writes.
    """
    plt = _pyplot()
    history = _read_history(history_or_csv)
    panels = [m for m in ("loss", "accuracy") if m in history or f"val_{m}" in history]
    if "learning_rate" in history:
        panels.append("learning_rate")
    if not panels:
        raise ValueError(f"No loss or accuracy in the history (keys: {', '.join(history) or 'none'}).")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], panels):
        for key, label, style in ((metric, "training", "-o"), (f"val_{metric}", "validation", "-s")):
            if key in history:
                values = history[key]
                ax.plot(range(1, len(values) + 1), values, style, markersize=3, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric.replace("_", " "))
        ax.grid(alpha=0.3)
        if metric == "accuracy" and "val_accuracy" in history:
            best = best_validation_epoch(history) - 1
            ax.axvline(best + 1, color="grey", linestyle=":", label=f"best validation (epoch {best + 1})")
        if metric != "learning_rate":
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# --- images ------------------------------------------------------------------------------


def _show(ax, image) -> None:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.dtype != np.uint8 and image.max(initial=0) > 1.0:
        image = np.clip(image, 0, 255).astype(np.uint8)
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255 if image.dtype == np.uint8 else 1)
    ax.set_xticks([])
    ax.set_yticks([])


def _grid(plt, n: int, cols: int | None):
    cols = cols or min(n, 8)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    return fig, axes.ravel()


def _name(class_names, label) -> str:
    label = int(label)
    return str(class_names[label]) if class_names is not None and 0 <= label < len(class_names) else str(label)


def plot_samples(x, y, class_names: Sequence[str] | None = None, n: int = 16, *, cols: int | None = None,
                 seed: int | None = 0, title: str | None = None):
    """A grid of ``n`` images with their labels (a seeded random pick; ``seed=None``: the first ``n``)."""
    plt = _pyplot()
    x, y = np.asarray(x), np.asarray(y).ravel()
    n = min(n, len(x))
    if n == 0:
        raise ValueError("No images to show.")
    idx = np.arange(n) if seed is None else np.sort(np.random.default_rng(seed).choice(len(x), n, replace=False))
    fig, axes = _grid(plt, n, cols)
    for ax, i in zip(axes, idx):
        _show(ax, x[i])
        ax.set_title(_name(class_names, y[i]), fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_predictions(x, y_true, y_pred, class_names: Sequence[str] | None = None, n: int = 16, *,
                     cols: int | None = None, wrong_first: bool = False, title: str | None = None):
    """Images with their predicted labels: right ones in green, wrong ones in red with the true label.

    ``y_pred`` may be class indices or probabilities (one row per image).
    ``wrong_first=True`` shows the mistakes first.
    """
    plt = _pyplot()
    x = np.asarray(x)
    y_true = np.asarray(y_true).ravel()
    y_pred = np.asarray(y_pred)
    if y_pred.ndim == 2:
        y_pred = y_pred.argmax(axis=1)
    y_pred = y_pred.ravel()
    if not len(x) == len(y_true) == len(y_pred):
        raise ValueError(f"x, y_true and y_pred have {len(x)}, {len(y_true)} and {len(y_pred)} entries.")
    order = np.arange(len(x))
    if wrong_first:
        order = np.concatenate([order[y_true != y_pred], order[y_true == y_pred]])
    order = order[: min(n, len(x))]
    if len(order) == 0:
        raise ValueError("No images to show.")
    fig, axes = _grid(plt, len(order), cols)
    for ax, i in zip(axes, order):
        _show(ax, x[i])
        right = y_true[i] == y_pred[i]
        label = _name(class_names, y_pred[i]) if right else f"{_name(class_names, y_pred[i])}\n(true: {_name(class_names, y_true[i])})"
        ax.set_title(label, fontsize=8, color="green" if right else "red")
        if not right:
            for spine in ax.spines.values():
                spine.set_edgecolor("red")
                spine.set_linewidth(2.5)
    wrong = int(np.sum(y_true != y_pred))
    fig.suptitle(title or f"{wrong} wrong of {len(y_true)} ({1 - wrong / len(y_true):.1%} right)", fontsize=10)
    fig.tight_layout()
    return fig
