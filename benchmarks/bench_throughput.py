"""Training and inference images/s of several models, measured side by side.

Method (one ``measure`` call = one input shape, batch size and precision):

1. set the global dtype policy (``float32`` or ``mixed_bfloat16``), build every
   model under it, compile it (SGD with momentum, sparse categorical
   crossentropy, ``jit_compile=False``: XLA is several times slower on CPUs),
   then restore the previous policy;
2. warm up: ``warmup`` calls of ``train_on_batch`` and of ``predict_on_batch``
   per model (tracing and oneDNN's first-call setup are excluded);
3. ``rounds`` rounds; in each, every model in turn (the order alternates from
   one round to the next) runs ``train_steps`` calls of
   ``model.train_on_batch(x, y)`` on one fixed in-memory batch, timed together:
   one images/s figure per model per round; then the same for inference with
   ``infer_steps`` calls of ``model.predict_on_batch(x)`` (the compiled predict
   step, without ``model.predict``'s per-call iterator and callbacks);
4. the median over rounds per model; ratios are taken between medians of the
   same round-robin, so background load shared by both cancels out as far as it can.

The defaults (12 rounds of 1 training step, 2 inference steps) alternate the
models as finely as possible: on a shared machine, load changes within seconds,
and many short paired samples with a median are far steadier than a few long ones.

Both calls return NumPy values, so every timed step has finished when its call returns.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from bench_flops import count_flops


@dataclass
class ModelSpec:
    """A model to benchmark: ``build(input_shape, classes) -> (keras.Model, options note)``."""

    name: str
    build: Callable
    label: str = ""
    precision: str | None = None  # build under this policy instead of the measurement's


def build_ours(input_shape, classes, **options):
    """Our ResNet50; where its 2x2 avg_pool head does not fit (32x32 inputs), pooling="global"."""
    from resnet_course.model import ResNet50

    options = dict(options)
    try:
        model = ResNet50(tuple(input_shape), classes, **options)
    except ValueError:
        if "pooling" in options or "stem_pool" in options:
            raise
        options["pooling"] = "global"  # same FLOPs structure as keras.applications (stem_pool=False: 4x)
        model = ResNet50(tuple(input_shape), classes, **options)
    note = ", ".join(f"{k}={v!r}" for k, v in options.items()) or "defaults"
    return model, note


def build_ours_fused_bn(input_shape, classes, **options):
    """Our ResNet50 as the training recipes run it: batch norms fused (resnet_course.fused_batchnorm)
    and, on PyTorch, the layers of resnet_course.torch_kernels (channels-last convolutions and
    pooling, ReLU and Add, all called directly)."""
    import keras

    from resnet_course.training.loop import with_training_layers

    model, note = build_ours(input_shape, classes, **options)
    note = (note + ", " if note != "defaults" else "") + "fused BN"
    if keras.backend.backend() == "torch":
        note += ", torch kernels"
    return with_training_layers(model), note


def build_keras_applications(input_shape, classes):
    import keras

    model = keras.applications.ResNet50(weights=None, input_shape=tuple(input_shape), classes=classes)
    return model, "weights=None"


OURS = ModelSpec("ours", build_ours, "resnet_course.model.ResNet50")
OURS_FUSED = ModelSpec("ours_fused_bn", build_ours_fused_bn, "ours as trained (fused BN; torch kernels)")
THEIRS = ModelSpec("keras_app", build_keras_applications, "keras.applications.ResNet50")


def default_specs() -> list[ModelSpec]:
    return [OURS, THEIRS]


def _compile(model, learning_rate=0.01):
    import keras

    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        jit_compile=False,
    )
    from resnet_course.torch_kernels import match_optimizer_to_kernels

    match_optimizer_to_kernels(model)  # as train() does; nothing unless torch kernels


def _shape(shape) -> str:
    return "x".join(str(n) for n in shape)


def _timed(fn, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return time.perf_counter() - start


def measure(
    specs: Sequence[ModelSpec],
    input_shape=(64, 64, 3),
    batch_size: int = 32,
    classes: int = 6,
    precision: str = "float32",
    *,
    rounds: int = 12,
    train_steps: int = 1,
    infer_steps: int = 2,
    warmup: int = 2,
    inference: bool = True,
    probes: dict | None = None,
    seed: int = 0,
    log=print,
) -> dict:
    """Round-robin training (and inference) throughput of ``specs``; see the module docstring."""
    import keras

    rng = np.random.default_rng(seed)
    x = rng.random((batch_size, *input_shape), dtype=np.float32)
    y = rng.integers(0, classes, size=batch_size).astype("int32")

    previous = keras.mixed_precision.global_policy()
    models, notes = {}, {}
    try:
        for spec in specs:
            keras.mixed_precision.set_global_policy(spec.precision or precision)
            models[spec.name], notes[spec.name] = spec.build(tuple(input_shape), classes)
            _compile(models[spec.name])
    finally:
        keras.mixed_precision.set_global_policy(previous)

    result = {
        "input_shape": list(input_shape),
        "batch_size": batch_size,
        "classes": classes,
        "precision": precision,
        "rounds": rounds,
        "train_steps": train_steps,
        "infer_steps": infer_steps if inference else 0,
        "warmup": warmup,
        "models": {},
        "probes": {name: [] for name in probes or {}},
    }
    for spec in specs:
        flops = count_flops(models[spec.name])
        result["models"][spec.name] = {
            "label": spec.label or spec.name,
            "precision": spec.precision or precision,
            "options": notes[spec.name],
            "params": int(models[spec.name].count_params()),
            "flops": flops.to_dict(),
            "train_ips": [],
            "infer_ips": [],
        }

    start = time.perf_counter()
    for spec in specs:
        model = models[spec.name]
        for _ in range(warmup):
            model.train_on_batch(x, y)
        if inference:
            for _ in range(warmup):
                model.predict_on_batch(x)
    result["warmup_s"] = time.perf_counter() - start

    phases = [("train", train_steps, lambda m: m.train_on_batch(x, y))]
    if inference:
        phases.append(("infer", infer_steps, lambda m: m.predict_on_batch(x)))
    for key, steps, step in phases:
        for r in range(rounds):
            order = list(specs) if r % 2 == 0 else list(reversed(specs))
            for spec in order:
                model = models[spec.name]
                seconds = _timed(lambda: step(model), steps)
                result["models"][spec.name][key + "_ips"].append(steps * batch_size / seconds)
            if key == "train":
                for name, probe in (probes or {}).items():  # e.g. the matmul limit, under the same load
                    result["probes"][name].append(probe())
            log(f"  {precision} {_shape(input_shape)} b{batch_size} {key} round {r + 1}/{rounds}: " + ", ".join(
                f"{spec.name} {result['models'][spec.name][key + '_ips'][-1]:.1f}" for spec in specs) + " img/s"
                + "".join(f", {name} {v[-1]:.0f} GFLOP/s" for name, v in result["probes"].items() if v and key == "train"))

    for entry in result["models"].values():
        for key in ("train_ips", "infer_ips"):
            entry[key + "_median"] = float(np.median(entry[key])) if entry[key] else None
        entry["train_gflops"] = (
            entry["flops"]["training"] * entry["train_ips_median"] / 1e9 if entry["train_ips_median"] else None
        )
        entry["infer_gflops"] = (
            entry["flops"]["matmul"] * entry["infer_ips_median"] / 1e9 if entry["infer_ips_median"] else None
        )

    del models
    keras.backend.clear_session()
    gc.collect()
    return result


@dataclass
class ThroughputPlan:
    """The grid of ``run``: every (input shape, batch) in every precision."""

    configs: Sequence[tuple] = ((64, 64, 3, 32), (32, 32, 3, 64))
    precisions: Sequence[str] = ("float32", "mixed_bfloat16")
    classes: int = 6
    rounds: int = 12
    train_steps: int = 1
    infer_steps: int = 2
    warmup: int = 2
    specs: list = field(default_factory=default_specs)


def precision_specs(specs: Sequence[ModelSpec], precisions: Sequence[str]) -> list[ModelSpec]:
    """Every spec in every precision, as separate models of one measurement (so they alternate)."""
    short = {"float32": "f32", "mixed_bfloat16": "bf16", "mixed_float16": "f16"}
    return [ModelSpec(f"{spec.name}@{short.get(p, p)}", spec.build, f"{spec.label or spec.name} [{p}]", p)
            for spec in specs for p in precisions]


def run(plan: ThroughputPlan, log=print) -> list[dict]:
    results = []
    for *shape, batch in plan.configs:
        for precision in plan.precisions:
            log(f"throughput: {precision} {tuple(shape)} batch {batch}")
            results.append(
                measure(plan.specs, tuple(shape), batch, plan.classes, precision, rounds=plan.rounds,
                        train_steps=plan.train_steps, infer_steps=plan.infer_steps, warmup=plan.warmup, log=log)
            )
    return results
