"""Using a saved model: ``load_model``, ``evaluate`` on a test split, ``predict`` on image files."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

from resnet_course.training.loop import (
    load_dataset, mean_cross_entropy, mirror_symmetric, per_class_accuracy, predict_probabilities, subset,
)
from resnet_course.training.recipes import _CI_OVERRIDES, DATASETS, METRICS_FILE, active_profile


# --- using a saved model -----------------------------------------------------------------


def load_model(model_path):
    """Load a model saved by ``train`` (clear error for a missing file)."""
    path = Path(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"No model file at {path}: train one with `resnet-course train` first.")
    return keras.saving.load_model(path, compile=False)


def _metrics_beside(model_path) -> dict:
    """The metrics.json that ``train`` wrote next to the model, or {} when there is none."""
    try:
        metrics = json.loads(Path(model_path).with_name(METRICS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return metrics if isinstance(metrics, dict) else {}


def _class_names_beside(metrics: dict, classes: int) -> list[str]:
    """Class names from the model's metrics.json (``_metrics_beside``), else "0", "1", ..."""
    names = metrics.get("class_names")
    if names and len(names) == classes:
        return [str(n) for n in names]
    return [str(i) for i in range(classes)]


def evaluate(model_path, dataset: str, data_dir=None, *, batch_size: int = 64, test_subset: int | None = None,
             flip_tta: bool = False) -> dict:
    """Accuracy of a saved model on ``dataset``'s test split.

    Returns a dict with ``test_accuracy``, ``test_loss``, ``per_class_accuracy``,
    ``confusion_matrix`` (rows: true class), ``class_names``, ``n_test``, ``flip_tta``.
    ``flip_tta=True`` averages each image's and its mirror's probabilities (CIFAR-10,
    FER-2013; not SIGNS, where a mirrored hand is the other hand).
    ``RESNET_COURSE_PROFILE=ci`` evaluates on the ci profile's 128-image subset.
    """
    if dataset not in DATASETS:
        raise ValueError(f"Unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}.")
    if flip_tta and not mirror_symmetric(dataset):
        raise ValueError(f"Flip test-time augmentation does not suit {dataset}: a mirrored image can change its "
                         "class (a mirrored hand sign is the other hand). Evaluate without it.")
    model = load_model(model_path)
    _, (x_test, y_test), class_names = load_dataset(dataset, data_dir)
    if test_subset is None and active_profile("quick") == "ci":
        test_subset = _CI_OVERRIDES["test_subset"]
    x_test, y_test = subset(x_test, y_test, test_subset, 1)
    expected = tuple(model.input_shape[1:])
    if any(want is not None and want != got for want, got in zip(expected, x_test.shape[1:])):
        raise ValueError(f"The model takes {expected} images but {dataset} has {tuple(x_test.shape[1:])}: "
                         f"was it trained on another dataset?")
    if model.output_shape[-1] != len(class_names):
        raise ValueError(f"The model has {model.output_shape[-1]} classes but {dataset} has {len(class_names)}.")
    from resnet_course.plots import confusion_matrix

    probabilities = predict_probabilities(model, x_test, y_test, len(class_names), batch_size, flip_tta=flip_tta)
    y_pred = probabilities.argmax(axis=1)
    return dict(
        dataset=dataset,
        test_accuracy=float(np.mean(y_pred == y_test)),
        test_loss=mean_cross_entropy(probabilities, y_test),
        flip_tta=bool(flip_tta),
        per_class_accuracy=per_class_accuracy(y_test, y_pred, class_names),
        confusion_matrix=confusion_matrix(y_test, y_pred, len(class_names)).tolist(),
        class_names=[str(c) for c in class_names],
        n_test=int(len(y_test)),
    )


def _image_size(model, metrics: dict) -> tuple[int, int] | None:
    """The (height, width) to resize images to: the model's input size; for a model of any
    size (trained on crops), the size it was tested at, from its metrics.json
    (``_metrics_beside``); else None (the images' own size)."""
    height, width = model.input_shape[1:3]
    if height is not None and width is not None:
        return height, width
    try:
        shape = metrics["input_shape"]
        return int(shape[0]), int(shape[1])
    except (KeyError, ValueError, TypeError, IndexError):
        return None


def load_images(image_paths, size: tuple[int, int] | None, channels: int) -> np.ndarray:
    """Read images with PIL, convert to RGB or greyscale, resize to ``size`` (h, w): uint8 NHWC.
    ``size=None`` keeps the images' own size, which must then be the same for all."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image_paths, (str, os.PathLike)):
        image_paths = [image_paths]
    images = []
    for p in image_paths:
        path = Path(p)
        if not path.is_file():
            raise FileNotFoundError(f"No image file at {path}.")
        try:
            with Image.open(path) as image:
                image = image.convert("L" if channels == 1 else "RGB")
                if size is not None:
                    image = image.resize((size[1], size[0]), Image.BILINEAR)
                array = np.asarray(image, dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"Cannot read {path} as an image: {error}") from error
        if channels == 1:
            array = array[..., None]
        elif channels != 3:
            raise ValueError(f"The model takes {channels}-channel images; only 1 (grey) and 3 (RGB) are supported.")
        images.append(array)
    if not images:
        raise ValueError("No image given.")
    sizes = sorted({array.shape[:2] for array in images})
    if len(sizes) > 1:
        raise ValueError(f"The images have different sizes ({', '.join(f'{h}x{w}' for h, w in sizes)}) and the "
                         "model gives none to resize them to: resize them to one size first.")
    return np.stack(images)


def predict(model_path, image_paths, top: int = 3, class_names: Sequence[str] | None = None) -> list:
    """The ``top`` most likely classes of each image, for a model saved by ``train``.

    Images are read with PIL, converted to the model's channels (RGB or grey)
    and resized to its input size (for a model trained on crops, which takes any size: the
    size it was tested at, from the metrics.json beside it); the model rescales pixels itself.

    Returns one list per image of ``(class_name, probability)`` pairs, most
    likely first. Class names come from ``class_names``, else the metrics.json
    next to the model, else the class indices.
    """
    if isinstance(image_paths, (str, os.PathLike)):
        image_paths = [image_paths]
    image_paths = list(image_paths)
    for p in image_paths:  # fail before loading the model
        if not Path(p).is_file():
            raise FileNotFoundError(f"No image file at {p}.")
    model = load_model(model_path)
    metrics = _metrics_beside(model_path)
    channels = model.input_shape[-1]
    x = load_images(image_paths, _image_size(model, metrics), channels)
    probabilities = np.asarray(model.predict(x.astype("float32"), verbose=0))
    classes = probabilities.shape[-1]
    names = list(class_names) if class_names is not None else _class_names_beside(metrics, classes)
    top = max(1, min(int(top), classes))
    results = []
    for row in probabilities:
        order = np.argsort(-row)[:top]
        results.append([(names[i], float(row[i])) for i in order])
    return results


def format_predictions(image_paths, results) -> str:
    """The output of ``resnet-course predict``: one line per image, its top classes with probabilities.

        >>> print(format_predictions(["a.jpg"], [[("2", 0.9712), ("3", 0.0201)]]))
        a.jpg: 2 97.1%, 3 2.0%
    """
    if isinstance(image_paths, (str, os.PathLike)):
        image_paths = [image_paths]
    return "\n".join(f"{path}: " + ", ".join(f"{name} {prob:.1%}" for name, prob in top)
                     for path, top in zip(image_paths, results))
