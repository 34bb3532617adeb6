"""A time budget for a training run: time a few steps of the model, then train the epochs that fit.

The quick recipes promise minutes, not epochs: a student's laptop without AVX-512 runs the
CIFAR-10 recipe about 1.9x slower than one with AVX512-BF16 (docs/results.md). With ``Recipe.time_budget`` set,
``train`` calls ``measure_training_speed`` on the compiled model and the run's own batches, ``plan_epochs`` turns the
speed into the most epochs (up to the recipe's) whose training and validation fit the budget,
and the learning-rate schedule is then built for those epochs, so a slower CPU gets a shorter
but complete one-cycle run instead of one cut off half-way. While training, ``KeepToBudget``
ends the run earlier if its epochs run slower than planned (later, early on, if they run
faster), on a schedule rebuilt for the new end.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Iterable, Iterator

import keras
import numpy as np

# A validation image costs a forward pass: about a third of a training step's forward,
# backward and update (docs/results.md: inference runs at 2.5-3.5x the training images/s).
VALIDATION_SPEEDUP = 3.0
# A run's epochs go slower than the median of the steps timed before them: 12% on a 2-core
# CPU without AVX-512 (FER-2013 quick: 272 images/s timed, epochs at 240 with validation;
# CIFAR-10 quick: 153 and 135). Plans count on this fraction of the measured speed.
SPEED_MARGIN = 0.88


@dataclasses.dataclass(frozen=True)
class EpochPlan:
    """What a time budget allows on this machine, from the measured training speed."""

    minutes: float
    max_epochs: int
    epochs: int
    images_per_second: float
    seconds_per_epoch: float  # projected: training and validation

    @property
    def projected_seconds(self) -> float:
        return self.epochs * self.seconds_per_epoch

    def to_dict(self) -> dict:
        return dict(dataclasses.asdict(self), projected_seconds=self.projected_seconds)

    def __str__(self) -> str:
        fits = (f"all {self.max_epochs} epochs fit" if self.epochs == self.max_epochs
                else f"{self.epochs} of the recipe's {self.max_epochs} epochs fit")
        note = ("" if self.epochs * self.seconds_per_epoch <= self.minutes * 60 else
                "; one epoch is over the budget, but a run needs at least one")
        return (f"Time budget {self.minutes:g} min: training steps run at {self.images_per_second:.0f} images/s "
                f"here, an epoch's about {1 - SPEED_MARGIN:.0%} slower, so {fits} (about "
                f"{self.projected_seconds / 60:.1f} min with validation{note}).")


def plan_epochs(minutes: float, max_epochs: int, *, n_train: int, n_validation: int,
                images_per_second: float) -> EpochPlan:
    """The most epochs, from 1 to ``max_epochs``, whose training on ``n_train`` images and
    validation on ``n_validation`` fit in ``minutes`` at ``images_per_second`` (training)."""
    if not images_per_second > 0 or not math.isfinite(images_per_second):
        raise ValueError(f"images_per_second must be a positive number, got {images_per_second!r}.")
    if not minutes > 0:
        raise ValueError(f"a time budget must be positive minutes, got {minutes!r}.")
    seconds_per_epoch = (n_train + n_validation / VALIDATION_SPEEDUP) / (images_per_second * SPEED_MARGIN)
    fitting = int(minutes * 60 // seconds_per_epoch) if seconds_per_epoch > 0 else max_epochs
    epochs = max(1, min(max_epochs, fitting))
    return EpochPlan(minutes=float(minutes), max_epochs=int(max_epochs), epochs=epochs,
                     images_per_second=float(images_per_second), seconds_per_epoch=float(seconds_per_epoch))


def training_batches(pipeline) -> Iterator:
    """The batches of a training pipeline, over and over: a ``PyDataset`` (the NumPy engine) by
    index, which leaves its epoch and order as they were; anything else (a ``tf.data.Dataset``)
    by iterating it."""
    indexed = hasattr(pipeline, "__getitem__") and hasattr(pipeline, "__len__")
    while True:
        if indexed:
            for index in range(len(pipeline)):
                yield pipeline[index]
        else:
            yield from pipeline


def measure_training_speed(model, batches: Iterable, *, steps: int = 15, warmup: int = 10) -> float:
    """Training images per second of a compiled ``model`` on ``batches`` of ``(images, labels)``
    (``training_batches`` of the run's own pipeline, so that the augmentation's cost counts), from
    the median time of ``steps`` steps after ``warmup`` untimed ones.

    The warm-up covers tracing, compilation and the first steps' allocations: on a 2-core CPU
    without AVX-512 the CIFAR-10 quick model's first ten steps ran at 100-160 images/s and later
    ones at 150-210. The median ignores a step slowed by another job on a shared host (a mean
    of 15 steps, tried, came out 15% below the epochs' speed); ``SPEED_MARGIN`` covers the rest. The
    model's weights (batch-norm statistics included) are put back afterwards; its optimizer has
    taken steps, so compile a fresh one before training.
    """
    if steps < 1 or warmup < 0:
        raise ValueError(f"steps must be >= 1 and warmup >= 0, got {steps} and {warmup}.")
    batches = iter(batches)
    weights = model.get_weights()
    seconds, images = [], []
    try:
        for step in range(warmup + steps):
            start = time.perf_counter()
            x, y = (np.asarray(part) for part in next(batches)[:2])  # the pipeline's work counts
            model.train_on_batch(x, y)
            if step >= warmup:
                seconds.append(time.perf_counter() - start)
                images.append(len(x))
    finally:
        model.set_weights(weights)
    return float(np.median(images)) / max(float(np.median(seconds)), 1e-9)


# --- keeping to the budget while training ----------------------------------------------------

# Epochs whose times estimate the next ones: the latest few after the first (which carries the
# tracing and the first steps' allocations), averaged, since a host's slow spells cost real time.
# Decisions wait for three: on a shared 2-core host single epochs of one run took 48 to 84 s, and
# two of them shortened a run that the next one lengthened again (docs/results.md).
RECENT_EPOCHS = 8
TIMED_EPOCHS_NEEDED = 3
# A run gets longer only where stretching its schedule raises the next step's learning rate by
# at most a quarter, and never after it was shortened. Early on the cosine is near its peak and
# a longer one hardly changes it (a 12-epoch CIFAR-10 plan stretched to 30 after epoch 4: +9%);
# later it would climb back up (to 17 after epoch 8: 1.9x). A fraction of the epochs would not
# do: the first decision comes after epoch 4, which is past the first quarter of any plan
# shorter than 16 epochs.
MAX_RATE_RISE = 1.25


def epochs_that_still_fit(budget_seconds: float, elapsed_seconds: float, epochs_done: int,
                          max_epochs: int, seconds_per_epoch: float) -> int:
    """The most epochs, from ``epochs_done`` to ``max_epochs``, that the ``budget_seconds`` left
    after ``elapsed_seconds`` hold at ``seconds_per_epoch``."""
    if not seconds_per_epoch > 0 or not math.isfinite(seconds_per_epoch):
        raise ValueError(f"seconds_per_epoch must be a positive number, got {seconds_per_epoch!r}.")
    left = max(budget_seconds - elapsed_seconds, 0.0)
    fitting = int(left // seconds_per_epoch)
    return max(epochs_done, min(max_epochs, epochs_done + fitting))


class KeepToBudget(keras.callbacks.Callback):
    """Keeps a budgeted run to its budget when its epochs run slower or faster than planned.

    The plan times steps before training, and the epochs can then differ: a native TensorFlow
    bfloat16 CIFAR-10 run on an AVX512-BF16 EPYC ran 27% below its timed steps and 2.2 minutes
    over its 30 (docs/results.md). Once three epochs after the first are timed, the mean time of
    the latest ones projects the rest after each epoch. When the planned epochs no longer fit,
    the run ends at those that do; when more fit, up to the plan's ``max_epochs``, and the run was
    never shortened, it ends at the latest of them whose schedule raises the next step's learning
    rate by at most ``MAX_RATE_RISE``, if any. Either way the learning-rate schedule is rebuilt
    for the new end (``reschedule(epochs)``, a schedule or a constant rate) and decays by then,
    instead of the run stopping half-way.
    It stops ``fit`` at an earlier end; for a later one, fit on from where it stopped
    (``initial_epoch``) to ``epochs``, as ``train`` does.

    ``changes`` lists each new end: after which epoch, the estimate, the ends before and after.
    Put it last among the callbacks, so that an epoch's time includes the others' work.
    """

    clock = staticmethod(time.perf_counter)

    def __init__(self, plan: EpochPlan, reschedule: Callable[[int], object], *, verbose: int = 0):
        super().__init__()
        self.plan = plan
        self.reschedule = reschedule
        self.verbose = verbose
        self.epochs = plan.epochs
        self.changes: list[dict] = []
        self.epoch_seconds: list[float] = []

    def on_train_begin(self, logs=None):
        if not hasattr(self, "_start"):  # a run continued by another fit keeps its clock
            self._last = self._start = self.clock()

    def on_epoch_end(self, epoch, logs=None):
        # From one epoch's end to the next: training, validation and the other callbacks' work
        # (a checkpoint saved) all count.
        now = self.clock()
        self.epoch_seconds.append(now - self._last)
        self._last = now
        done = epoch + 1
        if len(self.epoch_seconds) > TIMED_EPOCHS_NEEDED and done < self.epochs:
            self._replan(done, elapsed=now - self._start)
        if done >= self.epochs:
            self.model.stop_training = True

    def _replan(self, done: int, elapsed: float) -> None:
        estimate = float(np.mean(self.epoch_seconds[1:][-RECENT_EPOCHS:]))
        end = epochs_that_still_fit(self.plan.minutes * 60, elapsed, done, self.plan.max_epochs, estimate)
        shortened = any(change["epochs"] < change["previous_epochs"] for change in self.changes)
        if end > self.epochs:
            end = self.epochs if shortened else self._latest_gentle_end(end)
        if end == self.epochs:
            return
        self.changes.append(dict(after_epoch=done, seconds_per_epoch=estimate, elapsed_seconds=elapsed,
                                 epochs=end, previous_epochs=self.epochs))
        if self.verbose:
            print(f"\nEpochs take {estimate:.0f} s here, not the {self.plan.seconds_per_epoch:.0f} s planned: "
                  f"{self._news(done, end)}.")
        self.epochs = end
        if end > done:
            self.model.optimizer.learning_rate = self.reschedule(end)
            self.model.make_train_function(force=True)  # TensorFlow and JAX trace the new schedule

    def _latest_gentle_end(self, end: int) -> int:
        """The latest end, from the current one to ``end``, whose schedule raises the next step's
        learning rate by at most ``MAX_RATE_RISE``."""
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        now = _rate(self.reschedule(self.epochs), step)
        while end > self.epochs and _rate(self.reschedule(end), step) > MAX_RATE_RISE * now:
            end -= 1
        return end

    def _news(self, done: int, end: int) -> str:
        minutes = f"{self.plan.minutes:g} min"
        if end > self.epochs:
            return (f"{minutes} hold {end} epochs, so the run ends after epoch {end} instead of {self.epochs}, "
                    f"its learning-rate schedule stretched to match")
        if end > done:
            return (f"to stay within {minutes} the run ends after epoch {end} instead of {self.epochs}, "
                    f"its learning rate decaying by then")
        return f"to stay within {minutes} the run stops now, after epoch {done} of {self.epochs}: no time is left for another"


def _rate(schedule, step: int) -> float:
    """The learning rate of ``schedule`` (a Keras schedule or a constant) at ``step``."""
    if callable(schedule):
        return float(keras.ops.convert_to_numpy(schedule(step)))
    return float(schedule)
