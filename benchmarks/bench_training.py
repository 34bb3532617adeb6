"""Benchmark the training recipes: the figures of the README come from here.

Two modes:

* a full run, the same call as ``resnet-course train`` (``resnet_course.training.train``)::

    RESNET_COURSE_DATA=/path/to/datasets python benchmarks/bench_training.py \\
        --dataset signs --profile quick --out runs/signs-quick

* ``--steps N``: time N training steps of the recipe's model on random data
  (after a few warm-up steps) and report images/s, the projected seconds per
  epoch, the model's forward FLOPs per image (``bench_flops``: multiply-adds of its
  convolutions and dense layer, at the size it trains on) and the training GFLOP/s
  (3x forward x images/s); for profiles too long to run here (``full`` on a CPU)::

    python benchmarks/bench_training.py --dataset cifar10 --profile full --steps 50

Each run appends a row to ``benchmarks/results/training.md`` and a record to
``benchmarks/results/training.json`` (command, date, machine, load average,
test_accuracy, train_seconds, epochs...). ``--set key=value`` overrides any
recipe field (e.g. ``--set width=0.5 --set augment=False``).
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path

from bench_flops import achieved_gflops, count_flops

RESULTS = Path(__file__).resolve().parent / "results"
# Training-set sizes after the default 10% validation split, for the projection of --steps.
TRAIN_SIZES = {"signs": 972, "cifar10": 45000, "fer2013": 25838}


def _parse_overrides(items) -> dict:
    overrides = {}
    for item in items or []:
        key, _, value = item.partition("=")
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value
    return overrides


def throughput(dataset: str, profile: str, steps: int, batch_size=None, warmup: int = 3, **overrides) -> dict:
    """Time ``steps`` training steps of the recipe's model on random data (after ``warmup`` steps)."""
    import keras
    import numpy as np

    from resnet_course import training

    r = training.recipe(dataset, profile, batch_size=batch_size, **overrides)
    shape, classes = training.DATASET_SHAPES[dataset]
    if r.crop:  # the model trains on the crops
        shape = (r.crop, r.crop, shape[-1])
    previous = keras.mixed_precision.global_policy()
    try:
        training.seed_everything(r.seed)
        precision = training.apply_precision(r.precision)
        model = training.build_model(r, shape, classes)
        steps_per_epoch = math.ceil(TRAIN_SIZES[dataset] / r.batch_size)
        training.compile_model(model, r, steps_per_epoch)  # the step train() runs
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, size=(r.batch_size, *shape)).astype("float32")
        y = keras.utils.to_categorical(rng.integers(0, classes, size=r.batch_size), classes)
        for _ in range(warmup):
            model.train_on_batch(x, y)
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y)
        seconds = time.perf_counter() - start
    finally:
        keras.mixed_precision.set_global_policy(previous)
    ips = steps * r.batch_size / seconds
    # Per image, at the size it trains on (a recipe with crops builds a model of any size: count a fixed one).
    from resnet_course.model import ResNet50

    flops = count_flops(ResNet50(shape, classes, **r.model_options()))
    return dict(dataset=dataset, profile=r.profile, mode="throughput", steps=steps, batch_size=r.batch_size,
                precision=precision, parameters=int(model.count_params()), images_per_second=ips,
                forward_mflops=flops.matmul / 1e6, training_gflops_per_second=achieved_gflops(flops.training, ips),
                seconds_per_epoch=TRAIN_SIZES[dataset] / ips,
                projected_train_seconds=TRAIN_SIZES[dataset] / ips * r.epochs, epochs=r.epochs,
                recipe=r.to_dict())


def _append(record: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS / "training.json"
    records = json.loads(json_path.read_text()) if json_path.exists() else []
    records.append(record)
    json_path.write_text(json.dumps(records, indent=2) + "\n")
    md_path = RESULTS / "training.md"
    if not md_path.exists():
        md_path.write_text(
            "# Training benchmarks\n\nAppended by `benchmarks/bench_training.py`. `load` is the 1-minute load "
            "average before/after the run (the machine may be shared).\n\n"
            "| date | dataset | profile | mode | test acc | best val acc | train s | epochs | s/epoch | images/s "
            "| precision | load | machine | command |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
    acc = record.get("test_accuracy")
    val = record.get("best_val_accuracy")
    spe = record.get("seconds_per_epoch")
    if isinstance(spe, list):
        spe = sum(spe) / max(1, len(spe))
    row = [record["date"], record["dataset"], record["profile"], record["mode"],
           f"{acc:.2%}" if acc is not None else "-", f"{val:.2%}" if val is not None else "-",
           f"{record['train_seconds']:.0f}" if record.get("train_seconds") is not None else "-",
           str(record.get("epochs", "-")), f"{spe:.1f}" if spe else "-",
           f"{record['images_per_second']:.1f}" if record.get("images_per_second") else "-",
           record.get("precision", "-") + (f" on {record['backend']['backend']}" if record.get("backend") else ""),
           record.get("load", "-"), record.get("machine_short", "-"),
           f"`{record['command']}`"]
    with open(md_path, "a") as f:
        f.write("| " + " | ".join(row) + " |\n")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, choices=("signs", "cifar10", "fer2013"))
    parser.add_argument("--profile", default="quick", choices=("quick", "full", "ci"))
    parser.add_argument("--out", default=None, help="output folder of the run (default runs/<dataset>-<profile>)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="throughput mode: time this many steps")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe field")
    parser.add_argument("--verbose", type=int, default=2)
    parser.add_argument("--no-record", action="store_true", help="do not append to benchmarks/results")
    parser.add_argument("--backend", default=None, choices=("auto", "tensorflow", "jax", "torch"),
                        help="the Keras backend (default: KERAS_BACKEND, else Keras' default)")
    args = parser.parse_args(argv)
    overrides = _parse_overrides(args.set)
    for key in ("epochs", "batch_size", "seed"):
        if key in overrides:
            # train() takes these as its own arguments; --epochs N turns the time budget off
            # unless --set time_budget=M asks for one too.
            parser.error(f"--set {key}=... is an option of its own: use --{key.replace('_', '-')} "
                         f"{overrides[key]!r}" + (" (and --set time_budget=MINUTES to keep a time budget, "
                                                   "which then trains at most that many epochs)"
                                                   if key == "epochs" else "") + ".")
    command = "python benchmarks/bench_training.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))

    if args.backend:
        from resnet_course.backends import use_backend

        print(use_backend(args.backend))
    from resnet_course import training

    load_before = os.getloadavg()[0]
    if args.steps:
        record = throughput(args.dataset, args.profile, args.steps, args.batch_size, **overrides)
    else:
        out = args.out or f"runs/{args.dataset}-{args.profile}"
        record = training.train(args.dataset, args.profile, out, epochs=args.epochs, batch_size=args.batch_size,
                                data_dir=args.data_dir, seed=args.seed, verbose=args.verbose,
                                backend=args.backend, **overrides)
        record = dict(record, mode="train", out=str(out))
    machine = training.machine_info()
    # Tell an emulated CPU from a real one in the record (benchmarks/emulate_avx2 sets these).
    emulated = os.environ.get("ATEN_CPU_CAPABILITY") == "avx2" and os.environ.get("RESNET_COURSE_DEVICE_KIND") == "cpu"
    if emulated:
        command = "benchmarks/emulate_avx2 " + command
        machine["cpu"] += " (AVX2 emulation: benchmarks/emulate_avx2)"
    import keras

    record.setdefault("backend", {"backend": keras.backend.backend()})
    record.update(command=command, load=f"{load_before:.1f}/{os.getloadavg()[0]:.1f}",
                  machine_short=f"{machine['cpu_count']} cores, {machine['cpu']}" + (
                      f", {machine['gpus']}" if machine["gpus"] else ""))
    record.setdefault("date", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    record.setdefault("machine", machine)
    if not args.no_record:
        _append(record)
    summary = {k: record.get(k) for k in ("dataset", "profile", "mode", "test_accuracy", "best_val_accuracy",
                                          "train_seconds", "epochs", "images_per_second", "seconds_per_epoch",
                                          "precision", "load")}
    summary.update({k: record[k] for k in ("forward_mflops", "training_gflops_per_second") if k in record})
    print(json.dumps(summary, indent=2))
    return record


if __name__ == "__main__":
    main()
