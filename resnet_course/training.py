"""Training recipes for SIGNS, CIFAR-10 and FER-2013, and the functions behind the command line.

A *recipe* (``Recipe``, a frozen dataclass) holds every choice of a training
run: the model options, augmentation, the optimizer, the learning-rate schedule
with its warm-up, label smoothing, batch size, epochs, numeric precision, the
validation split and the seed. ``recipe(dataset, profile, **overrides)`` returns
the course's recipe for a dataset and a profile:

``quick``
    a laptop CPU, minutes (SIGNS) to half an hour (CIFAR-10, FER-2013).
``full``
    a GPU (or a patient CPU): the full-width network and a long schedule.
``ci``
    a small subset (256 training and 128 test images), one epoch, small
    batches: the same code path in a few seconds, for CI. The environment
    variable ``RESNET_COURSE_PROFILE=ci`` selects it whatever profile the
    caller asked for, so the training notebooks run quickly in CI.

``train(dataset, profile, out_dir)`` trains one recipe and writes to
``out_dir``: ``model.keras`` (the model of the best validation epoch, raw
pixel values 0-255 in, probabilities out), ``best.keras`` (the checkpoint written
during training), ``history.csv``, ``metrics.json``, ``learning_curves.png`` and
``confusion_matrix.png``. The test split is used once, at the end.

``evaluate(model_path, dataset)`` and ``predict(model_path, image_paths)``
work on a saved model. The saved model starts with a ``Rescaling(1/255)``
layer, so it takes raw images with pixel values 0-255: no preprocessing to
repeat. The input pipelines (validation split, augmentation, batching) are
``resnet_course.pipelines``', with ``normalization="none"``.

    >>> from resnet_course.training import recipe
    >>> recipe("signs", "quick").optimizer
    'adamw'
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

from resnet_course.model import STEMS

DATASETS = ("signs", "cifar10", "fer2013")
PROFILES = ("quick", "full", "ci")
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
OPTIMIZERS = ("adamw", "sgd", "adam")
SCHEDULES = ("onecycle", "cosine", "constant")
PROFILE_ENV = "RESNET_COURSE_PROFILE"

# Input shape and number of classes of each dataset.
DATASET_SHAPES = {"signs": ((64, 64, 3), 6), "cifar10": ((32, 32, 3), 10), "fer2013": ((48, 48, 1), 7)}

MODEL_FILE = "model.keras"
CHECKPOINT_FILE = "best.keras"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
CURVES_FILE = "learning_curves.png"
CONFUSION_FILE = "confusion_matrix.png"


# --- recipes -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Every choice of one training run. Build one with ``recipe(dataset, profile, **overrides)``.

    Model (see ``resnet_course.model.ResNet50``):
        width: every stage's filters times ``width`` (1.0: the real ResNet-50).
        identity_blocks: identity blocks per stage (ResNet-50: (2, 3, 5, 2)).
        stem_pool: the stem's 3x3 max-pool (off for small images: keeps resolution).
        stem: the stem's convolution, "imagenet" (7x7 stride 2) or "small" (3x3 stride 1).
        pooling: the head's pooling, "avg_pool" or "global".
        bn_momentum: batch-norm momentum (0.9 for short runs; Keras' 0.99 lags behind).
        dropout: dropout before the classifier.
        fused_batch_norm: train with ``resnet_course.fused_batchnorm``'s fused kernel on the
            TensorFlow backend (same layer, same numbers, 1.2-1.5x faster steps on a CPU);
            saved models have plain Keras batch norms either way.
    Data:
        augment: the dataset's augmentation (``resnet_course.pipelines.augmentation_for``:
            shifts and zoom for SIGNS, shifts and horizontal flips for CIFAR-10 and FER-2013).
        validation_fraction: share of the training split held out, per class, for validation.
        train_subset, test_subset: use only this many images (the ci profile).
    Optimization:
        optimizer: "adamw", "sgd" (momentum, Nesterov) or "adam".
        learning_rate: the peak learning rate (after warm-up).
        weight_decay: decoupled weight decay (not applied to biases and batch norms).
        momentum: SGD's momentum.
        schedule: "onecycle" (linear warm-up from lr/25, cosine down to ~0),
            "cosine" (linear warm-up from 0, cosine down to 0) or "constant".
        warmup_epochs: length of the warm-up, in epochs (may be fractional).
        label_smoothing: label smoothing of the cross-entropy.
        batch_size, epochs: as usual.
    Run:
        precision: "auto" (mixed_float16 on a GPU, mixed_bfloat16 on a CPU with
            AVX512-BF16 or AMX, float32 otherwise), or one of those names.
        seed: seeds the weights, the split, the shuffling and the augmentation.
    """

    dataset: str
    profile: str
    # model
    width: float = 1.0
    identity_blocks: tuple[int, ...] = (2, 3, 5, 2)
    stem_pool: bool = True
    stem: str = "imagenet"
    pooling: str = "avg_pool"
    bn_momentum: float = 0.9
    dropout: float = 0.0
    fused_batch_norm: bool = True
    # data
    augment: bool = True
    validation_fraction: float = 0.1
    train_subset: int | None = None
    test_subset: int | None = None
    # optimization
    optimizer: str = "adamw"
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    schedule: str = "onecycle"
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    batch_size: int = 32
    epochs: int = 10
    # run
    precision: str = "auto"
    seed: int = 0

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"Unknown dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}.")
        if self.profile not in PROFILES:
            raise ValueError(f"Unknown profile {self.profile!r}; choose one of {', '.join(PROFILES)}.")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"Unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}.")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"Unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}.")
        if self.stem not in STEMS:
            raise ValueError(f"Unknown stem {self.stem!r}; choose one of {', '.join(STEMS)}.")
        if self.precision not in PRECISIONS:
            raise ValueError(f"Unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}.")
        for name in ("batch_size", "epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}.")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be between 0 and 1, got {self.validation_fraction!r}.")
        if self.width <= 0 or self.learning_rate <= 0 or self.weight_decay < 0 or self.warmup_epochs < 0:
            raise ValueError("width and learning_rate must be positive, weight_decay and warmup_epochs >= 0.")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}.")
        object.__setattr__(self, "identity_blocks", tuple(self.identity_blocks))

    def model_options(self) -> dict:
        """Keyword arguments of ``ResNet50`` for this recipe (filters already scaled)."""
        from resnet_course.model import scaled_filters

        return dict(
            filters=scaled_filters(self.width),
            identity_blocks=self.identity_blocks,
            stem_pool=self.stem_pool,
            stem=self.stem,
            pooling=self.pooling,
            bn_momentum=self.bn_momentum,
            dropout=self.dropout,
            seed=self.seed,
        )

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["identity_blocks"] = list(self.identity_blocks)
        return data


# The course's recipes. Fields not named take the dataclass defaults above.
_RECIPES = {
    # SIGNS: 1080 64x64 photos of 6 hand signs. The real ResNet-50; AdamW with a
    # one-cycle schedule, light augmentation (no flips: left/right hands differ).
    ("signs", "quick"): dict(
        width=0.5, identity_blocks=(1, 1, 1, 1), stem_pool=True, optimizer="adamw", learning_rate=2e-3,
        weight_decay=0.05, schedule="onecycle", warmup_epochs=2, label_smoothing=0.1, batch_size=32, epochs=20,
    ),
    ("signs", "full"): dict(
        width=1.0, stem_pool=True, optimizer="adamw", learning_rate=1e-3, weight_decay=0.05,
        schedule="onecycle", warmup_epochs=3, label_smoothing=0.1, batch_size=32, epochs=60,
    ),
    # CIFAR-10: 50k 32x32 images. Keep the resolution: no stem max-pool, and the 3x3
    # stride-1 stem of CIFAR ResNets, so stage 2 sees all 32x32 positions. The quick
    # profile pays for that with a quarter-width network (the FLOPs of a half-width one
    # with the ImageNet stem, which reached 81.0% in 18 epochs against 82.1% in 14).
    ("cifar10", "quick"): dict(
        width=0.25, identity_blocks=(1, 1, 1, 1), stem_pool=False, stem="small", pooling="global",
        optimizer="sgd", learning_rate=0.2, weight_decay=5e-4, momentum=0.9,
        schedule="onecycle", warmup_epochs=2, label_smoothing=0.1, batch_size=256, epochs=14,
    ),
    ("cifar10", "full"): dict(
        width=1.0, stem_pool=False, stem="small", pooling="global", optimizer="sgd", learning_rate=0.1,
        weight_decay=5e-4, momentum=0.9, schedule="cosine", warmup_epochs=5,
        label_smoothing=0.1, batch_size=128, epochs=200,
    ),
    # FER-2013: 28.7k 48x48 greyscale faces, 7 emotions; PrivateTest is the test split.
    # The quick profile keeps the stem's max-pool (stage 2 sees 11x11): on a CPU, more
    # epochs of a cheaper network beat a few epochs at full resolution.
    ("fer2013", "quick"): dict(
        width=0.5, identity_blocks=(1, 1, 1, 1), stem_pool=True, pooling="global",
        optimizer="sgd", learning_rate=0.1, weight_decay=5e-4, momentum=0.9,
        schedule="onecycle", warmup_epochs=1, label_smoothing=0.1, batch_size=128, epochs=27,
    ),
    ("fer2013", "full"): dict(
        width=1.0, stem_pool=False, pooling="global", dropout=0.3, optimizer="sgd", learning_rate=0.05,
        weight_decay=5e-4, momentum=0.9, schedule="cosine", warmup_epochs=5,
        label_smoothing=0.1, batch_size=128, epochs=150,
    ),
}

# The ci profile: the quick recipe on a small subset, one epoch, small batches.
_CI_OVERRIDES = dict(epochs=1, batch_size=16, train_subset=256, test_subset=128, warmup_epochs=0.5,
                     validation_fraction=0.2)


def active_profile(profile: str) -> str:
    """The profile to use: ``ci`` when ``RESNET_COURSE_PROFILE=ci`` is set, else ``profile``."""
    env = os.environ.get(PROFILE_ENV, "").strip().lower()
    if env and env not in PROFILES:
        raise ValueError(f"{PROFILE_ENV}={env!r} is not a profile; choose one of {', '.join(PROFILES)}.")
    return "ci" if env == "ci" else profile


def recipe(dataset: str, profile: str = "quick", **overrides) -> Recipe:
    """The course's recipe for ``dataset`` and ``profile``, with any field overridden.

    ``RESNET_COURSE_PROFILE=ci`` in the environment turns any profile into ``ci``.
    Overrides equal to None are ignored (handy for optional command-line flags).

        >>> recipe("cifar10", "quick", epochs=3).epochs
        3
    """
    dataset = str(dataset).lower()
    if dataset not in DATASETS:
        raise ValueError(f"Unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}.")
    if profile not in PROFILES:
        raise ValueError(f"Unknown profile {profile!r}; choose one of {', '.join(PROFILES)}.")
    profile = active_profile(profile)
    fields = dict(_RECIPES[(dataset, "quick" if profile == "ci" else profile)])
    if profile == "ci":
        fields.update(_CI_OVERRIDES)
    known = {f.name for f in dataclasses.fields(Recipe)}
    for key, value in overrides.items():
        if key not in known or key in ("dataset", "profile"):
            raise TypeError(f"recipe() got an unknown override {key!r}; fields: {', '.join(sorted(known))}.")
        if value is not None:
            fields[key] = value
    return Recipe(dataset=dataset, profile=profile, **fields)


def recipes_table() -> str:
    """A Markdown table of the course's quick and full recipes (for the README)."""
    columns = ["dataset", "profile", "width", "identity_blocks", "stem_pool", "stem", "optimizer", "learning_rate",
               "weight_decay", "schedule", "warmup_epochs", "label_smoothing", "batch_size", "epochs", "augment"]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for dataset in DATASETS:
        for profile in ("quick", "full"):
            r = Recipe(dataset=dataset, profile=profile, **_RECIPES[(dataset, profile)])
            lines.append("| " + " | ".join(str(getattr(r, c)) for c in columns) + " |")
    return "\n".join(lines)


# --- precision -------------------------------------------------------------------


def cpu_info(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, set[str]]:
    """The CPU's model name and its feature flags, from Linux' ``/proc/cpuinfo``.

    Elsewhere (or unreadable): ``platform``'s processor name and no flags."""
    fields = {}
    try:
        lines = Path(cpuinfo).read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:  # the first CPU's lines are enough
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine()
    return name, set(fields.get("flags", "").split())


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU reports AVX512-BF16 or AMX-BF16 (Linux ``/proc/cpuinfo`` flags)."""
    return bool(cpu_info(cpuinfo)[1] & {"avx512_bf16", "amx_bf16"})


def detect_precision() -> str:
    """mixed_float16 on a GPU, mixed_bfloat16 on a CPU with bf16 instructions, else float32."""
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    return "mixed_bfloat16" if cpu_has_bf16() else "float32"


# --- learning-rate schedule --------------------------------------------------------

@keras.saving.register_keras_serializable(package="resnet_course")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to ``peak_lr`` over ``warmup_steps``, then cosine decay to ``final_lr``.

    ``initial_lr`` is the rate at step 0. The one-cycle schedule is
    ``initial_lr = peak_lr / 25`` and ``final_lr = peak_lr / 1e4``; the cosine
    schedule starts and ends at 0 (well: at ``peak_lr / warmup_steps`` on step 1).
    Steps past ``total_steps`` stay at ``final_lr``.
    """

    def __init__(self, peak_lr, total_steps, warmup_steps=0, initial_lr=0.0, final_lr=0.0, name="WarmupCosine"):
        self.peak_lr = float(peak_lr)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.initial_lr = float(initial_lr)
        self.final_lr = float(final_lr)
        self.name = name

    def __call__(self, step):
        from keras import ops

        step = ops.cast(step, "float32")
        warmup = float(max(self.warmup_steps, 1))
        decay = float(max(self.total_steps - self.warmup_steps, 1))
        warm = self.initial_lr + (self.peak_lr - self.initial_lr) * ops.minimum(step + 1.0, warmup) / warmup
        progress = ops.clip((step - self.warmup_steps) / decay, 0.0, 1.0)
        cosine = self.final_lr + 0.5 * (self.peak_lr - self.final_lr) * (1.0 + ops.cos(math.pi * progress))
        return ops.where(step < self.warmup_steps, warm, cosine)

    def get_config(self):
        return dict(peak_lr=self.peak_lr, total_steps=self.total_steps, warmup_steps=self.warmup_steps,
                    initial_lr=self.initial_lr, final_lr=self.final_lr, name=self.name)


def learning_rate_schedule(r: Recipe, steps_per_epoch: int):
    """The recipe's learning rate: a ``WarmupCosine`` schedule, or a float for "constant"."""
    if r.schedule == "constant":
        return r.learning_rate
    total = max(1, r.epochs * steps_per_epoch)
    warmup = min(total, int(round(r.warmup_epochs * steps_per_epoch)))
    if r.schedule == "onecycle":
        return WarmupCosine(r.learning_rate, total, warmup, initial_lr=r.learning_rate / 25,
                            final_lr=r.learning_rate / 1e4)
    return WarmupCosine(r.learning_rate, total, warmup, initial_lr=0.0, final_lr=0.0)


def make_optimizer(r: Recipe, steps_per_epoch: int):
    """The recipe's optimizer, weight decay off for biases and batch-norm parameters."""
    lr = learning_rate_schedule(r, steps_per_epoch)
    if r.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate=lr, weight_decay=r.weight_decay)
    elif r.optimizer == "adam":
        optimizer = keras.optimizers.Adam(learning_rate=lr)
    else:
        optimizer = keras.optimizers.SGD(learning_rate=lr, momentum=r.momentum, nesterov=True,
                                         weight_decay=r.weight_decay or None)
    if r.weight_decay and r.optimizer != "adam":
        optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    return optimizer


# --- model -------------------------------------------------------------------------


def build_model(r: Recipe, input_shape: Sequence[int] | None = None, classes: int | None = None) -> keras.Model:
    """The recipe's model: raw pixels (0-255) -> Rescaling(1/255) -> ResNet50.

    The ResNet50 is a nested model named ``ResNet50`` whose layers keep the
    course's canonical names; reach it with ``model.get_layer("ResNet50")``.
    Build it under the dtype policy you want (``train`` does).
    """
    from keras import layers

    from resnet_course.model import ResNet50

    default_shape, default_classes = DATASET_SHAPES[r.dataset]
    input_shape = tuple(input_shape or default_shape)
    classes = classes or default_classes
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale", dtype="float32")(inputs)
    resnet = ResNet50(input_shape, classes, **r.model_options())
    if r.fused_batch_norm:
        from resnet_course.fused_batchnorm import with_fused_batch_norm

        resnet = with_fused_batch_norm(resnet)
    outputs = resnet(x)
    return keras.Model(inputs, outputs, name=f"resnet_course_{r.dataset}")


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
    """Unshuffled, unaugmented batches of (float32 pixels 0-255, one-hot labels): what the model takes."""
    from resnet_course.pipelines import make_eval_dataset as _make

    return _make(x, y, batch_size=batch_size, normalization="none", one_hot=True, num_classes=classes)


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
    dataset = make_eval_dataset(x, y, classes, batch_size)
    plain = np.asarray(model.predict(dataset, verbose=0), dtype="float64")
    if not mirrored:
        return plain, None
    import tensorflow as tf

    flipped = dataset.map(lambda images, labels: (tf.reverse(images, axis=[2]), labels))
    return plain, np.asarray(model.predict(flipped, verbose=0), dtype="float64")


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
    loads with Keras alone."""
    from resnet_course.fused_batchnorm import uses_fused_batch_norm, with_keras_batch_norm

    if uses_fused_batch_norm(model):
        model = with_keras_batch_norm(model)
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


def _apply_precision(precision: str) -> str:
    resolved = detect_precision() if precision == "auto" else precision
    keras.mixed_precision.set_global_policy(resolved)
    return resolved


def per_class_accuracy(y_true, y_pred, class_names) -> dict:
    """Accuracy on each class's examples, keyed by class name (None for a class with no examples)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    result = {}
    for i, name in enumerate(class_names):
        mask = y_true == i
        result[str(name)] = float(np.mean(y_pred[mask] == i)) if mask.any() else None
    return result


def machine_info() -> dict:
    """A short description of the machine, for benchmark records."""
    import tensorflow as tf

    cpu = cpu_info()[0]
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return dict(cpu=cpu, cpu_count=os.cpu_count(), gpus=gpus, platform=platform.platform(),
                python=platform.python_version(), tensorflow=tf.__version__, keras=keras.__version__,
                load_average=load)


def train(dataset: str, profile: str = "quick", out_dir="runs/latest", *, epochs: int | None = None,
          batch_size: int | None = None, data_dir=None, seed: int = 0, verbose=1, **overrides) -> dict:
    """Train the recipe for ``dataset`` and ``profile`` and write the results to ``out_dir``.

    Arguments:
        dataset: "signs", "cifar10" or "fer2013".
        profile: "quick", "full" or "ci" (``RESNET_COURSE_PROFILE=ci`` forces "ci").
        out_dir: folder for model.keras, best.keras, metrics.json, history.csv,
            learning_curves.png and confusion_matrix.png (created if needed).
        epochs, batch_size: override the recipe's.
        data_dir: the data folder (default: ``RESNET_COURSE_DATA``, else ``datasets/``).
        seed: seeds everything; the same seed gives the same result on a CPU.
        verbose: Keras' verbosity (1: progress bars, 2: a line per epoch, 0: silent).
        **overrides: any other ``Recipe`` field (e.g. ``width=0.5``, ``augment=False``).

    Returns:
        The metrics written to metrics.json: ``test_accuracy``, ``test_loss``,
        ``train_seconds`` (``model.fit`` only: no data loading or model
        building), ``epochs``, ``best_epoch``, ``best_val_accuracy``,
        ``per_class_accuracy``, ``class_names``, ``recipe`` and more;
        ``test_accuracy_flip_tta`` (CIFAR-10, FER-2013: the image's and its mirror's
        probabilities averaged; None for SIGNS) is reported beside ``test_accuracy``.
    """
    r = recipe(dataset, profile, epochs=epochs, batch_size=batch_size, seed=seed, **overrides)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    # Data: a seeded, stratified validation split of the training data; the test split is used once.
    t0 = time.perf_counter()
    keras.utils.set_random_seed(r.seed)  # before tf.data: its shuffle seed depends on the global seed
    (x_train_all, y_train_all), (x_test, y_test), class_names = load_dataset(r.dataset, data_dir)
    x_train_all, y_train_all = subset(x_train_all, y_train_all, r.train_subset, r.seed)
    x_test, y_test = subset(x_test, y_test, r.test_subset, r.seed + 1)
    from resnet_course.pipelines import make_datasets

    classes = len(class_names)
    input_shape = x_train_all.shape[1:]
    batch = min(r.batch_size, len(y_train_all))
    # The shared pipelines: seeded stratified split, the dataset's augmentation in tf.data,
    # pixels left 0-255 (normalization "none": the model's Rescaling layer scales them).
    data = make_datasets(r.dataset, x_train_all, y_train_all, batch_size=batch,
                         validation_fraction=r.validation_fraction, augment=r.augment, normalization="none",
                         one_hot=True, seed=r.seed)
    n_train, n_val = data.train_size, len(data.y_val)
    steps_per_epoch = data.steps_per_epoch
    load_seconds = time.perf_counter() - t0

    previous_policy = keras.mixed_precision.global_policy()
    try:
        keras.utils.set_random_seed(r.seed)
        precision = _apply_precision(r.precision)
        model = build_model(r, input_shape, classes)
        model.compile(
            optimizer=make_optimizer(r, steps_per_epoch),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=r.label_smoothing),
            metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
            jit_compile=False,  # XLA is several times slower on CPUs
        )
        best = _BestValidation(out / CHECKPOINT_FILE)
        timer = _EpochTimer()
        if verbose:
            print(f"Training {r.dataset} ({r.profile} profile, {precision}): {n_train} train / "
                  f"{n_val} validation / {len(y_test)} test images, {model.count_params():,} parameters, "
                  f"{r.epochs} epochs of {steps_per_epoch} steps.")
        start = time.perf_counter()
        history = model.fit(data.train, validation_data=data.validation, epochs=r.epochs, callbacks=[timer, best],
                            shuffle=False, verbose=verbose)  # the pipeline shuffles
        train_seconds = time.perf_counter() - start

        if best.best_weights is not None:
            model.set_weights(best.best_weights)
        save_model(model, out / MODEL_FILE)

        # One pass over the test images, and one over their mirrors where mirroring keeps the class.
        probabilities, mirrored = _plain_and_mirrored(model, x_test, y_test, classes, batch,
                                                      mirrored=mirror_symmetric(r.dataset))
        test_loss = _cross_entropy(probabilities, y_test)
        flip_accuracy = None
        if mirrored is not None:
            flip_accuracy = float(np.mean(((probabilities + mirrored) / 2).argmax(axis=1) == y_test))
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)

    y_pred = probabilities.argmax(axis=1)
    hist = {k: [float(v) for v in values] for k, values in history.history.items()}
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


def _write_history(path: Path, history: dict) -> None:
    keys = list(history)
    rows = len(next(iter(history.values()), []))
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", *keys])
        for i in range(rows):
            writer.writerow([i + 1, *(history[k][i] for k in keys)])


# --- using a saved model -----------------------------------------------------------------


def load_model(model_path):
    """Load a model saved by ``train`` (clear error for a missing file)."""
    path = Path(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"No model file at {path}: train one with `resnet-course train` first.")
    return keras.saving.load_model(path, compile=False)


def _class_names_beside(model_path, classes: int) -> list[str]:
    """Class names from the metrics.json written next to the model, else "0", "1", ..."""
    metrics = Path(model_path).with_name(METRICS_FILE)
    try:
        names = json.loads(metrics.read_text()).get("class_names")
        if names and len(names) == classes:
            return [str(n) for n in names]
    except (OSError, ValueError):
        pass
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
    if tuple(x_test.shape[1:]) != expected:
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
        test_loss=_cross_entropy(probabilities, y_test),
        flip_tta=bool(flip_tta),
        per_class_accuracy=per_class_accuracy(y_test, y_pred, class_names),
        confusion_matrix=confusion_matrix(y_test, y_pred, len(class_names)).tolist(),
        class_names=[str(c) for c in class_names],
        n_test=int(len(y_test)),
    )


def _cross_entropy(probabilities, labels) -> float:
    """Mean cross-entropy of integer ``labels`` under ``probabilities`` (clipped away from 0)."""
    picked = np.asarray(probabilities)[np.arange(len(labels)), np.asarray(labels)]
    return float(-np.log(np.clip(picked, 1e-7, 1.0)).mean())


def load_images(image_paths, size: tuple[int, int], channels: int) -> np.ndarray:
    """Read images with PIL, convert to RGB or greyscale, resize to ``size`` (h, w): uint8 NHWC."""
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
    return np.stack(images)


def predict(model_path, image_paths, top: int = 3, class_names: Sequence[str] | None = None) -> list:
    """The ``top`` most likely classes of each image, for a model saved by ``train``.

    Images are read with PIL, converted to the model's channels (RGB or grey)
    and resized to its input size; the model rescales pixels itself.

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
    height, width, channels = model.input_shape[1:]
    x = load_images(image_paths, (height, width), channels)
    probabilities = np.asarray(model.predict(x.astype("float32"), verbose=0))
    classes = probabilities.shape[-1]
    names = list(class_names) if class_names is not None else _class_names_beside(model_path, classes)
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
