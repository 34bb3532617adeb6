"""The training recipes: every choice of a run, per dataset and profile (``recipe``, ``Recipe``)."""

from __future__ import annotations

import dataclasses
import os

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
        stem_filters: the stem convolution's filters (64, as ResNet-50's, at any width).
        pooling: the head's pooling, "avg_pool" or "global".
        bn_momentum: batch-norm momentum (0.9 for short runs; Keras' 0.99 lags behind).
        dropout: dropout before the classifier.
        fused_batch_norm: train with ``resnet_course.fused_batchnorm``'s fused kernel on the
            TensorFlow and PyTorch backends (same layer, same numbers, 1.1-1.5x faster steps on
            a CPU); saved models have plain Keras batch norms either way.
        torch_kernels: on the PyTorch backend, train with ``resnet_course.torch_kernels``'
            convolution and max-pooling, which take the channels-last tensor without Keras'
            layout copies, and ReLU and Add, all four (and the fused batch norm) called without
            Keras' per-call bookkeeping (same layers, same numbers); saved models have Keras' layers.
    Data:
        augment: the dataset's augmentation (``resnet_course.pipelines.augmentation_for``:
            shifts and zoom for SIGNS, shifts and horizontal flips for CIFAR-10 and FER-2013).
        crop: train on random ``crop`` x ``crop`` windows of the augmented images, and
            validate and test on whole images (0: train on whole images). The objects keep
            their size and each step sees fewer pixels: CIFAR-10's 24x24 windows of 32x32
            images make a step 1.8x faster. The window's random position replaces the
            dataset's shifts. Needs ``pooling="global"``.
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
        time_budget: minutes of training (``model.fit``) the run must fit in; 0: train exactly
            ``epochs``. With a budget, ``train`` first times a few steps of the model on this
            machine, then trains the most epochs, up to ``epochs``, that fit, with the schedule
            set for those epochs (``resnet_course.training.budget``). The quick profiles have
            one, so a slower CPU trains fewer epochs rather than for longer.
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
    stem_filters: int = 64
    pooling: str = "avg_pool"
    bn_momentum: float = 0.9
    dropout: float = 0.0
    fused_batch_norm: bool = True
    torch_kernels: bool = True
    # data
    augment: bool = True
    crop: int = 0
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
    time_budget: float = 0.0
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
        for name in ("batch_size", "epochs", "stem_filters"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}.")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be between 0 and 1, got {self.validation_fraction!r}.")
        if self.width <= 0 or self.learning_rate <= 0 or self.weight_decay < 0 or self.warmup_epochs < 0:
            raise ValueError("width and learning_rate must be positive, weight_decay and warmup_epochs >= 0.")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}.")
        self._check_crop()
        if isinstance(self.time_budget, bool) or not isinstance(self.time_budget, (int, float)) \
                or not 0 <= self.time_budget < float("inf"):
            raise ValueError(f"time_budget must be minutes of training (a number >= 0; 0: exactly `epochs` "
                             f"epochs), got {self.time_budget!r}.")
        object.__setattr__(self, "identity_blocks", tuple(self.identity_blocks))

    def _check_crop(self) -> None:
        if isinstance(self.crop, bool) or not isinstance(self.crop, int) or self.crop < 0:
            raise ValueError(f"crop must be a window size in pixels (an int >= 0; 0: whole images), got {self.crop!r}.")
        if not self.crop:
            return
        size = min(DATASET_SHAPES[self.dataset][0][:2])
        if self.crop > size:
            raise ValueError(f"crop={self.crop} is larger than {self.dataset}'s {size}x{size} images; "
                             f"use a crop of at most {size}, or 0 for whole images.")
        if self.pooling != "global":
            raise ValueError(f"crop={self.crop} trains on {self.crop}x{self.crop} windows and tests on whole "
                             "images, which needs pooling='global' (the avg_pool head fixes the input size).")

    def model_options(self) -> dict:
        """Keyword arguments of ``ResNet50`` for this recipe (filters already scaled)."""
        from resnet_course.model import scaled_filters

        return dict(
            filters=scaled_filters(self.width),
            identity_blocks=self.identity_blocks,
            stem_pool=self.stem_pool,
            stem=self.stem,
            stem_filters=self.stem_filters,
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
    # SIGNS: 1080 64x64 photos of 6 hand signs. AdamW with a one-cycle schedule, light
    # augmentation (no flips: left/right hands differ). 26 epochs: on a CPU without AVX-512
    # (PyTorch, emulated) 20 gave 97.5% in 196 s and 26 gave 99.2% in 283 s (docs/results.md).
    ("signs", "quick"): dict(
        width=0.5, identity_blocks=(1, 1, 1, 1), stem_pool=True, optimizer="adamw", learning_rate=2e-3,
        weight_decay=0.05, schedule="onecycle", warmup_epochs=2, label_smoothing=0.1, batch_size=32, epochs=26,
        time_budget=5,
    ),
    ("signs", "full"): dict(
        width=1.0, stem_pool=True, optimizer="adamw", learning_rate=1e-3, weight_decay=0.05,
        schedule="onecycle", warmup_epochs=3, label_smoothing=0.1, batch_size=32, epochs=60,
    ),
    # CIFAR-10: 50k 32x32 images. Keep the resolution: no stem max-pool, and the 3x3
    # stride-1 stem of CIFAR ResNets, so stage 2 sees all 32x32 positions. The quick
    # profile pays for that with a quarter-width network (the FLOPs of a half-width one
    # with the ImageNet stem, which reached 81.0% in 18 epochs against 82.1% in 14), and
    # trains on random 24x24 windows: 1.8-1.9x the images a second, which on a CPU without
    # AVX-512 buys more than the whole images teach per epoch (docs/results.md). Its stem has 16
    # filters, not 64: stage 2's first 1x1 convolutions read them at full resolution, and the
    # 64 gave 8-14% fewer images a second for the same accuracy after 6 epochs.
    ("cifar10", "quick"): dict(
        width=0.25, identity_blocks=(1, 1, 1, 1), stem_pool=False, stem="small", stem_filters=16,
        pooling="global", crop=24,
        optimizer="sgd", learning_rate=0.1, weight_decay=5e-4, momentum=0.9,
        schedule="onecycle", warmup_epochs=2, label_smoothing=0.1, batch_size=128, epochs=30,
        time_budget=30,
    ),
    ("cifar10", "full"): dict(
        width=1.0, stem_pool=False, stem="small", pooling="global", optimizer="sgd", learning_rate=0.1,
        weight_decay=5e-4, momentum=0.9, schedule="cosine", warmup_epochs=5,
        label_smoothing=0.1, batch_size=128, epochs=200,
    ),
    # FER-2013: 28.7k 48x48 greyscale faces, 7 emotions; PrivateTest is the test split.
    # The quick profile keeps the stem's max-pool (stage 2 sees 11x11): on a CPU, more
    # epochs of a cheaper network beat a few epochs at full resolution. AdamW, not SGD: SGD at a
    # peak of 0.1 stalled at 36% on PyTorch in float32 (docs/results.md).
    ("fer2013", "quick"): dict(
        width=0.5, identity_blocks=(1, 1, 1, 1), stem_pool=True, pooling="global",
        optimizer="adamw", learning_rate=0.002, weight_decay=0.05,
        schedule="onecycle", warmup_epochs=1, label_smoothing=0.1, batch_size=128, epochs=27,
        time_budget=30,
    ),
    ("fer2013", "full"): dict(
        width=1.0, stem_pool=False, pooling="global", dropout=0.3, optimizer="sgd", learning_rate=0.05,
        weight_decay=5e-4, momentum=0.9, schedule="cosine", warmup_epochs=5,
        label_smoothing=0.1, batch_size=128, epochs=150,
    ),
}

# The ci profile: the quick recipe on a small subset, one epoch, small batches.
_CI_OVERRIDES = dict(epochs=1, batch_size=16, train_subset=256, test_subset=128, warmup_epochs=0.5,
                     validation_fraction=0.2, time_budget=0.0)


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
    columns = ["dataset", "profile", "width", "identity_blocks", "stem_pool", "stem", "stem_filters", "crop",
               "optimizer", "learning_rate", "weight_decay", "schedule", "warmup_epochs", "label_smoothing",
               "batch_size", "epochs", "time_budget", "augment"]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for dataset in DATASETS:
        for profile in ("quick", "full"):
            r = Recipe(dataset=dataset, profile=profile, **_RECIPES[(dataset, profile)])
            lines.append("| " + " | ".join(str(getattr(r, c)) for c in columns) + " |")
    return "\n".join(lines)
