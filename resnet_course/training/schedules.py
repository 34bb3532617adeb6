"""The learning-rate schedules (warm-up, then cosine) and the optimizers of the recipes."""

from __future__ import annotations

import math

import keras

from resnet_course.training.recipes import Recipe


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
