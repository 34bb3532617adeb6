"""``train``: one recipe from the data to the saved model, metrics, history and plots."""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import json
import time
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

from resnet_course.training.budget import KeepToBudget, measure_training_speed, plan_epochs, training_batches
from resnet_course.training.machine import apply_precision, machine_info, seed_everything
from resnet_course.training.recipes import (
    CHECKPOINT_FILE, CONFUSION_FILE, CURVES_FILE, DATASET_SHAPES, DATASETS, HISTORY_FILE, METRICS_FILE,
    MODEL_FILE, Recipe, recipe,
)
from resnet_course.training.schedules import learning_rate_schedule, make_optimizer


# --- model -------------------------------------------------------------------------


def build_model(r: Recipe, input_shape: Sequence[int] | None = None, classes: int | None = None) -> keras.Model:
    """The recipe's model: raw pixels (0-255) -> Rescaling(1/255) -> ResNet50.

    The ResNet50 is a nested model named ``ResNet50`` whose layers keep the
    course's canonical names; reach it with ``model.get_layer("ResNet50")``.
    Build it under the dtype policy you want (``train`` does). ``fused_batch_norm`` applies
    on TensorFlow and PyTorch, whose fused kernels it calls; ``torch_kernels`` on PyTorch
    (``resnet_course.torch_kernels``). Saving turns them back into Keras' layers.
    A recipe with a ``crop`` gets a model of any height and width (``(None, None, channels)``):
    it trains on the crops and is tested on whole images.
    """
    from keras import layers

    from resnet_course.model import ResNet50

    default_shape, default_classes = DATASET_SHAPES[r.dataset]
    input_shape = tuple(input_shape or default_shape)
    if r.crop:
        input_shape = (None, None, input_shape[-1])
    classes = classes or default_classes
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale", dtype="float32")(inputs)
    resnet = ResNet50(input_shape, classes, **r.model_options())
    resnet = with_training_layers(resnet, fused_batch_norm=r.fused_batch_norm, torch_kernels=r.torch_kernels)
    outputs = resnet(x)
    return keras.Model(inputs, outputs, name=f"resnet_course_{r.dataset}")


def with_training_layers(resnet: keras.Model, *, fused_batch_norm: bool = True,
                         torch_kernels: bool = True) -> keras.Model:
    """``resnet`` as the recipes train it: the running backend's faster kernels for the same
    layers (fused batch norms on TensorFlow and PyTorch, channels-last convolutions and pooling
    on PyTorch), where asked; ``resnet`` itself when none applies."""
    backend = keras.backend.backend()
    fused = fused_batch_norm and backend in ("tensorflow", "torch")
    channels_last = torch_kernels and backend == "torch"
    if not (fused or channels_last):
        return resnet
    from resnet_course.startup import keras_without_tensorflow

    with keras_without_tensorflow():  # cloning serializes configs: Keras would import TensorFlow
        if fused:
            from resnet_course.fused_batchnorm import with_fused_batch_norm

            resnet = with_fused_batch_norm(resnet)
        if channels_last:
            from resnet_course.torch_kernels import with_torch_kernels

            resnet = with_torch_kernels(resnet)
    return resnet


# --- data ----------------------------------------------------------------------------


def load_dataset(dataset: str, data_dir=None):
    """``(x_train, y_train), (x_test, y_test), class_names`` from ``resnet_course.datasets``."""
    from resnet_course import datasets

    if dataset not in DATASETS:
        raise ValueError(f"Unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}.")
    (x_train, y_train), (x_test, y_test), class_names = datasets.load_dataset(dataset, data_dir)
    x_train, x_test = _nhwc(x_train), _nhwc(x_test)
    return (x_train, np.asarray(y_train, dtype="int64")), (x_test, np.asarray(y_test, dtype="int64")), list(class_names)


def _nhwc(x):
    x = np.asarray(x)
    return x[..., None] if x.ndim == 3 else x


def subset(x, y, n: int | None, seed: int):
    """A seeded random subset of ``n`` examples (all of them when n is None or too large)."""
    if n is None or n >= len(y):
        return x, y
    idx = np.sort(np.random.default_rng(seed).permutation(len(y))[:n])
    return x[idx], y[idx]


def make_eval_dataset(x, y, classes: int, batch_size: int):
    """Unshuffled, unaugmented batches of (float32 pixels 0-255, one-hot labels): what the model
    takes, in the pipeline engine of Keras' running backend (``resnet_course.pipelines``)."""
    from resnet_course.pipelines import make_eval_dataset as _make

    return _make(x, y, batch_size=batch_size, normalization="none", one_hot=True, num_classes=classes)


def training_augmentation(r: Recipe):
    """The recipe's training augmentation: the dataset's policy (none without ``augment``),
    with the recipe's ``crop``. A crop's random position is the translation: the policy's
    shifts are turned off (shifted-in black borders and a window on top would double it)."""
    from resnet_course.pipelines import Augmentation, augmentation_for

    policy = augmentation_for(r.dataset) if r.augment else Augmentation()
    if not r.crop:
        return policy
    return dataclasses.replace(policy, max_shift=0.0, crop=r.crop)


def mirror_symmetric(dataset: str) -> bool:
    """True when a mirrored image keeps its class (the dataset's augmentation flips): CIFAR-10, FER-2013."""
    from resnet_course.pipelines import augmentation_for

    return augmentation_for(dataset).horizontal_flip


def predict_probabilities(model, x, y, classes: int, batch_size: int, *, flip_tta: bool = False) -> np.ndarray:
    """The model's class probabilities on ``x``; with ``flip_tta`` the mean of the image's and its mirror's.

    Flip test-time augmentation: the network saw mirrored images in training, so
    averaging over both views costs one more forward pass and usually gains a little
    accuracy. Only for mirror-symmetric datasets (``mirror_symmetric``)."""
    plain, mirrored = _plain_and_mirrored(model, x, y, classes, batch_size, mirrored=flip_tta)
    return (plain + mirrored) / 2 if flip_tta else plain


def _plain_and_mirrored(model, x, y, classes: int, batch_size: int, *, mirrored: bool):
    """The model's probabilities on ``x`` and (when ``mirrored``) on its mirror images, else None."""
    plain = _predict(model, make_eval_dataset(x, y, classes, batch_size))
    if not mirrored:
        return plain, None
    return plain, _predict(model, make_eval_dataset(np.ascontiguousarray(x[:, :, ::-1]), y, classes, batch_size))


def _predict(model, batches) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(model.predict(batches, verbose=0)), dtype="float64")


# --- training ------------------------------------------------------------------------


class _BestValidation(keras.callbacks.Callback):
    """Keeps the weights of the best validation epoch (accuracy, ties broken by loss) and saves them."""

    def __init__(self, path: Path | None):
        super().__init__()
        self.path = path
        self.best = None
        self.best_epoch = None
        self.best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        key = (logs.get("val_accuracy", 0.0), -logs.get("val_loss", 0.0))
        if self.best is None or key > self.best:
            self.best, self.best_epoch = key, epoch + 1
            self.best_weights = self.model.get_weights()
            if self.path is not None:
                save_model(self.model, self.path)


def save_model(model, path) -> None:
    """Save ``model`` without its optimizer state (a third of the size; reload with ``load_model``).

    Fused batch norms are saved as plain ``keras.layers.BatchNormalization``, so the file
    loads with Keras alone; batch norms synchronized for several TensorFlow devices are saved
    unsynchronized (Keras loads ``synchronized=True`` on TensorFlow only)."""
    from resnet_course.startup import keras_without_tensorflow
    from resnet_course.training.devices import unsynchronized_batch_norm

    with unsynchronized_batch_norm(model), keras_without_tensorflow():
        _save(model, path)


def _save(model, path) -> None:
    from resnet_course.layer_swap import with_keras_layers

    model = with_keras_layers(model)
    keras.Model(model.inputs, model.outputs, name=model.name).save(path)


class _EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)
        if logs is not None:
            logs["epoch_seconds"] = self.times[-1]
            lr = self.model.optimizer.learning_rate
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(lr))


def per_class_accuracy(y_true, y_pred, class_names) -> dict:
    """Accuracy on each class's examples, keyed by class name (None for a class with no examples)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    result = {}
    for i, name in enumerate(class_names):
        mask = y_true == i
        result[str(name)] = float(np.mean(y_pred[mask] == i)) if mask.any() else None
    return result


def mean_cross_entropy(probabilities, labels) -> float:
    """Mean cross-entropy of integer ``labels`` under ``probabilities`` (clipped away from 0)."""
    picked = np.asarray(probabilities)[np.arange(len(labels)), np.asarray(labels)]
    return float(-np.log(np.clip(picked, 1e-7, 1.0)).mean())


def compile_model(model, r: Recipe, steps_per_epoch: int, backend: str | None = None) -> None:
    """Compile ``model`` as ``train`` does: a fresh optimizer whose schedule is set for
    ``r.epochs`` of ``steps_per_epoch`` steps, the recipe's loss and an accuracy metric.

    ``backend`` defaults to the one Keras runs on. Benchmarks call this so that they time
    the step that training runs.
    """
    from resnet_course.torch_kernels import match_optimizer_to_kernels

    backend = backend or keras.backend.backend()
    model.compile(
        optimizer=make_optimizer(r, steps_per_epoch),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=r.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        # JAX runs every step XLA-compiled (2.5x faster than without); TensorFlow's XLA was
        # several times slower on CPUs, and Keras' torch.compile path kept recompiling and ran
        # several times slower (docs/backends.md).
        jit_compile=backend == "jax",
    )
    match_optimizer_to_kernels(model)  # nothing unless the model has the torch kernels


def train(dataset: str, profile: str = "quick", out_dir="runs/latest", *, epochs: int | None = None,
          batch_size: int | None = None, data_dir=None, seed: int = 0, verbose=1, backend: str | None = None,
          devices="1", **overrides) -> dict:
    """Train the recipe for ``dataset`` and ``profile`` and write the results to ``out_dir``.

    Arguments:
        dataset: "signs", "cifar10" or "fer2013".
        profile: "quick", "full" or "ci" (``RESNET_COURSE_PROFILE=ci`` forces "ci").
        out_dir: folder for model.keras, best.keras, metrics.json, history.csv,
            learning_curves.png and confusion_matrix.png (created if needed).
        epochs, batch_size: override the recipe's. Epochs given here are trained as they are:
            the recipe's time budget is off unless ``time_budget`` is given too.
        data_dir: the data folder (default: ``RESNET_COURSE_DATA``, else ``datasets/``).
        seed: seeds everything; the same seed gives the same result on a CPU.
        verbose: Keras' verbosity (1: progress bars, 2: a line per epoch, 0: silent).
        backend: None (the backend Keras runs on), "auto" (the same, with a note when another
            would be faster here) or a name, which must be the running one: the backend is fixed
            when Keras is imported (``resnet_course.backends.use_backend`` chooses it first).
        devices: "1" (default), a number or "all": data-parallel training on that many devices
            (GPUs, else CPU devices) on JAX or TensorFlow (``training.devices``); the batch size
            is the global batch. The test predictions run on one device, every image counted.
        **overrides: any other ``Recipe`` field (e.g. ``width=0.5``, ``augment=False``,
            ``time_budget=10``: train the epochs that fit in 10 minutes, see ``training.budget``).

    Returns:
        The metrics written to metrics.json: ``test_accuracy``, ``test_loss``,
        ``train_seconds`` (``model.fit`` only: no data loading or model
        building), ``epochs``, ``best_epoch``, ``best_val_accuracy``,
        ``per_class_accuracy``, ``class_names``, ``recipe`` (with the epochs trained) and more;
        ``time_budget`` (with a budget: the measured speed, the epochs it allows and ``replanned``,
        each new end the run took to keep to it, see ``budget.KeepToBudget``; else None);
        ``test_accuracy_flip_tta`` (CIFAR-10, FER-2013: the image's and its mirror's
        probabilities averaged; None for SIGNS) is reported beside ``test_accuracy``.
    """
    from resnet_course.backends import resolve_for_running_keras

    from resnet_course.training.devices import plan_devices

    choice = resolve_for_running_keras(backend)
    if epochs is not None and overrides.get("time_budget") is None:
        overrides["time_budget"] = 0.0  # epochs asked for are trained, unless a budget is asked for too
    r = recipe(dataset, profile, epochs=epochs, batch_size=batch_size, seed=seed, **overrides)
    # Before any Keras object exists: on TensorFlow the strategy must come first.
    plan = plan_devices(devices, choice.backend)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    # Data: a seeded, stratified validation split of the training data; the test split is used once.
    t0 = time.perf_counter()
    seed_everything(r.seed)  # before tf.data: its shuffle seed depends on the global seed
    (x_train_all, y_train_all), (x_test, y_test), class_names = load_dataset(r.dataset, data_dir)
    x_train_all, y_train_all = subset(x_train_all, y_train_all, r.train_subset, r.seed)
    x_test, y_test = subset(x_test, y_test, r.test_subset, r.seed + 1)
    from resnet_course.pipelines import make_datasets

    classes = len(class_names)
    input_shape = x_train_all.shape[1:]
    batch = min(r.batch_size, len(y_train_all))
    plan.check_batch_size(batch)
    # The shared pipelines: seeded stratified split, the dataset's augmentation (tf.data on
    # TensorFlow, NumPy batches elsewhere), pixels left 0-255 (normalization "none": the
    # model's Rescaling layer scales them).
    data = make_datasets(r.dataset, x_train_all, y_train_all, batch_size=batch,
                         validation_fraction=r.validation_fraction, augment=training_augmentation(r),
                         normalization="none",
                         one_hot=True, seed=r.seed, batch_multiple=plan.batch_multiple)
    n_train, n_val = data.train_size, len(data.y_val)
    steps_per_epoch = data.steps_per_epoch
    load_seconds = time.perf_counter() - t0

    previous_policy = keras.mixed_precision.global_policy()
    try:
        seed_everything(r.seed)
        precision = apply_precision(r.precision, choice.backend)
        budget = None
        with plan.scope():
            model = plan.prepare_model(build_model(r, input_shape, classes))
            if r.time_budget:
                # Time a few steps of this model here, then build the schedule for the epochs that fit.
                compile_model(model, r, steps_per_epoch, choice.backend)
                speed = measure_training_speed(model, training_batches(data.train))
                budget = plan_epochs(r.time_budget, r.epochs, n_train=n_train, n_validation=n_val,
                                     images_per_second=speed)
                r = dataclasses.replace(r, epochs=budget.epochs)
            compile_model(model, r, steps_per_epoch, choice.backend)  # a fresh optimizer
        best = _BestValidation(out / CHECKPOINT_FILE)
        timer = _EpochTimer()
        callbacks = [timer, best]
        keeper = None
        if budget is not None:
            budgeted = r
            keeper = KeepToBudget(budget, lambda end: learning_rate_schedule(
                dataclasses.replace(budgeted, epochs=end), steps_per_epoch), verbose=verbose)
            callbacks.append(keeper)
        if verbose:
            print(choice)
            if budget is not None:
                print(budget)
            if plan.distributed:
                print(f"Data-parallel on {plan.count} devices ({', '.join(plan.names)}) with "
                      f"{plan.strategy_name}; batches of {batch} split among them.")
            print(f"Training {r.dataset} ({r.profile} profile, {precision}): {n_train} train / "
                  f"{n_val} validation / {len(y_test)} test images, {model.count_params():,} parameters, "
                  f"{r.epochs} epochs of {steps_per_epoch} steps.")
        start = time.perf_counter()
        with plan.scope():
            hist = _fit(model, data, r.epochs, callbacks, keeper, verbose)
        train_seconds = time.perf_counter() - start
        r = dataclasses.replace(r, epochs=len(hist.get("loss", [])))  # the epochs trained

        if best.best_weights is not None:
            model.set_weights(best.best_weights)
        save_model(model, out / MODEL_FILE)

        # One pass over the test images, and one over their mirrors where mirroring keeps the class.
        probabilities, mirrored = _plain_and_mirrored(model, x_test, y_test, classes, batch,
                                                      mirrored=mirror_symmetric(r.dataset))
        test_loss = mean_cross_entropy(probabilities, y_test)
        flip_accuracy = None
        if mirrored is not None:
            flip_accuracy = float(np.mean(((probabilities + mirrored) / 2).argmax(axis=1) == y_test))
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)

    y_pred = probabilities.argmax(axis=1)
    _write_history(out / HISTORY_FILE, hist)
    metrics = dict(
        dataset=r.dataset,
        profile=r.profile,
        test_accuracy=float(np.mean(y_pred == y_test)),
        test_loss=test_loss,
        test_accuracy_flip_tta=flip_accuracy,
        train_seconds=train_seconds,
        epochs=len(hist.get("loss", [])),
        best_epoch=best.best_epoch,
        best_val_accuracy=float(best.best[0]) if best.best else None,
        final_val_accuracy=hist.get("val_accuracy", [None])[-1],
        val_accuracy_per_epoch=hist.get("val_accuracy", []),
        seconds_per_epoch=timer.times,
        images_per_second=n_train * len(timer.times) / max(sum(timer.times), 1e-9),
        per_class_accuracy=per_class_accuracy(y_test, y_pred, class_names),
        class_names=[str(c) for c in class_names],
        n_train=int(n_train),
        n_validation=int(n_val),
        n_test=int(len(y_test)),
        input_shape=[int(n) for n in input_shape],
        parameters=int(model.count_params()),
        precision=precision,
        backend=choice.to_dict(),
        devices=plan.to_dict(),
        input_pipeline=data.engine,
        time_budget=dict(budget.to_dict(), replanned=keeper.changes) if budget is not None else None,
        load_seconds=load_seconds,
        recipe=r.to_dict(),
        date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        machine=machine_info(),
    )
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")

    from resnet_course import plots

    fig = plots.plot_learning_curves(hist, title=f"{r.dataset} ({r.profile})")
    fig.savefig(out / CURVES_FILE, dpi=100, bbox_inches="tight")
    plots.close(fig)
    fig = plots.plot_confusion_matrix(y_test, y_pred, class_names, normalize=True,
                                      title=f"{r.dataset} test: {metrics['test_accuracy']:.1%}")
    fig.savefig(out / CONFUSION_FILE, dpi=100, bbox_inches="tight")
    plots.close(fig)
    if verbose:
        flips = f", {flip_accuracy:.2%} with flip test-time augmentation" if flip_accuracy is not None else ""
        print(f"Test accuracy {metrics['test_accuracy']:.2%}{flips} (best validation epoch {best.best_epoch}); "
              f"trained in {train_seconds:.0f} s. Results in {out}/")
    return metrics


def _fit(model, data, epochs: int, callbacks, keeper: KeepToBudget | None, verbose) -> dict:
    """``model.fit`` for ``epochs``, and on to the end that ``keeper`` (if any) moved them to:
    the history of every epoch, as floats. A budget that allows more epochs than planned
    continues the run from where it is (``initial_epoch``), so that the progress bar counts to
    the planned end, not to the recipe's most, which a slow machine never reaches."""
    history: dict[str, list[float]] = {}
    done = 0
    while True:
        fitted = model.fit(data.train, validation_data=data.validation, epochs=epochs, initial_epoch=done,
                           callbacks=callbacks, shuffle=False, verbose=verbose)  # the pipeline shuffles
        for key, values in fitted.history.items():
            history.setdefault(key, []).extend(float(v) for v in values)
        done = len(history.get("loss", []))
        if keeper is None or done >= keeper.epochs or done < epochs:  # done, or stopped by a callback
            return history
        epochs = keeper.epochs


def _write_history(path: Path, history: dict) -> None:
    keys = list(history)
    rows = len(next(iter(history.values()), []))
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", *keys])
        for i in range(rows):
            writer.writerow([i + 1, *(history[k][i] for k in keys)])
