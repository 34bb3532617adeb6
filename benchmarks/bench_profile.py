"""Where a training step's time goes: the TensorFlow profiler's trace, summed per op type.

    python benchmarks/bench_profile.py --model ours --precision mixed_bfloat16
    python benchmarks/bench_profile.py --model ours_fused_bn --precision float32 --steps 3

Runs ``steps`` ``train_on_batch`` calls (after warm-up) under
``tf.profiler.experimental``, then reads the trace (``*.xplane.pb``) with the protobuf
classes TensorFlow ships, without TensorBoard: every op executed on the ``tf_Compute``
threads of the ``/host:CPU`` plane, its duration summed per op type and per category
(convolutions, batch-norm arithmetic, casts, ReLUs, optimizer, other). An op's duration is
its wall time, spread over the intra-op threads, so shares are shares of op time, which is
close to the step's wall time when the executor runs one op at a time.

py-spy cannot do this: it samples Python threads, and a training step is a single call
into TensorFlow's C++ executor.
"""

from __future__ import annotations

import argparse
import collections
import glob
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

CATEGORIES = ("convolution", "batch norm", "cast", "relu", "add", "optimizer", "pool+dense+loss", "other")


def categorize(op_type: str, name: str) -> str:
    """The category of one executed op, from its type and its name scope."""
    if "Conv" in op_type:
        return "convolution"
    if op_type == "Cast":
        return "cast"
    if op_type.startswith("Relu"):
        return "relu"
    if "BatchNorm" in op_type:
        return "batch norm"
    lowered = name.lower()
    first_scope = lowered.split("/", 1)[0]
    if first_scope.startswith(("sgd", "adam", "momentum")) or op_type.startswith(("Assign", "ResourceApply")):
        return "optimizer"
    if "/bn" in lowered or "bn_conv1" in lowered or "batch_normalization" in lowered:
        return "batch norm"
    if "Pool" in op_type or "MatMul" in op_type or "softmax" in lowered or "loss" in lowered \
            or "crossentropy" in lowered:
        return "pool+dense+loss"
    if op_type in ("AddV2", "AddN", "Add") and "/res" in lowered:
        return "add"
    return "other"


def summarize(logdir) -> dict:
    """``{"by_type": {op: ms}, "by_category": {category: ms}, "count": {op: n}, "total_ms"}`` of a trace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    files = sorted(glob.glob(str(Path(logdir) / "**" / "*.xplane.pb"), recursive=True))
    if not files:
        raise FileNotFoundError(f"no *.xplane.pb under {logdir}")
    space = xplane_pb2.XSpace()
    space.ParseFromString(Path(files[-1]).read_bytes())
    plane = next(p for p in space.planes if p.name == "/host:CPU")
    by_type, by_category, count = collections.Counter(), collections.Counter(), collections.Counter()
    for line in plane.lines:
        if not line.name.startswith("tf_Compute"):
            continue
        for event in line.events:
            meta = plane.event_metadata[event.metadata_id]
            name = meta.name or meta.display_name
            if ":" not in name or "::" in name or name.startswith("EagerLocalExecute"):
                continue  # executor bookkeeping (ExecutorState::Process, thread-pool regions, eager calls)
            op_type = name.rsplit(":", 1)[1]
            ms = event.duration_ps / 1e9
            by_type[op_type] += ms
            count[op_type] += 1
            by_category[categorize(op_type, name)] += ms
    return {"by_type": dict(by_type.most_common()), "by_category": dict(by_category.most_common()),
            "count": dict(count), "total_ms": sum(by_type.values())}


def profile(model, x, y, steps: int = 3, warmup: int = 3, logdir=None) -> dict:
    """Profile ``steps`` ``train_on_batch`` calls of a compiled ``model``; summary plus wall time."""
    import tensorflow as tf

    for _ in range(warmup):
        model.train_on_batch(x, y)
    logdir = logdir or tempfile.mkdtemp(prefix="resnet-profile-")
    tf.profiler.experimental.start(str(logdir))
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    wall = time.perf_counter() - start
    tf.profiler.experimental.stop()
    summary = summarize(logdir)
    summary.update(steps=steps, wall_ms=wall * 1e3, logdir=str(logdir))
    return summary


def format_summary(summary: dict, top: int = 15) -> str:
    total = summary["total_ms"] or 1.0
    steps = summary.get("steps", 1)
    lines = [f"op time {summary['total_ms'] / steps:.0f} ms/step, wall {summary.get('wall_ms', 0) / steps:.0f} "
             f"ms/step", "", "| category | ms/step | share |", "| --- | --- | --- |"]
    lines += [f"| {k} | {v / steps:.0f} | {100 * v / total:.1f}% |" for k, v in summary["by_category"].items()]
    lines += ["", "| op type | ms/step | share | calls/step |", "| --- | --- | --- | --- |"]
    lines += [f"| {k} | {v / steps:.1f} | {100 * v / total:.1f}% | {summary['count'][k] // steps} |"
              for k, v in list(summary["by_type"].items())[:top]]
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description="Profile training steps of ours / keras.applications' ResNet50.")
    p.add_argument("--model", choices=("ours", "ours_fused_bn", "keras_app"), default="ours")
    p.add_argument("--precision", default="float32")
    p.add_argument("--shape", default="64x64x3")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args(argv)

    import keras
    import numpy as np

    import bench_throughput

    build = {"ours": bench_throughput.build_ours, "ours_fused_bn": bench_throughput.build_ours_fused_bn,
             "keras_app": bench_throughput.build_keras_applications}[args.model]
    shape = tuple(int(n) for n in args.shape.split("x"))
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(args.precision)
    try:
        model, _ = build(shape, 6)
        bench_throughput._compile(model)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    rng = np.random.default_rng(0)
    x = rng.random((args.batch, *shape), dtype=np.float32)
    y = rng.integers(0, 6, args.batch)
    summary = profile(model, x, y, steps=args.steps)
    print(f"{args.model} {args.precision} {args.shape} batch {args.batch}")
    print(format_summary(summary))
    return summary


if __name__ == "__main__":
    main()
