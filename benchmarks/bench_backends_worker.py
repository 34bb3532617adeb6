"""One Keras backend's side of the ``backends`` section, run in its own process.

``KERAS_BACKEND`` cannot change inside a process, so ``bench_backends`` starts one of these
per backend (``KERAS_BACKEND`` and the ISA variables set in its environment) and drives them
all round by round. Protocol, one line each way:

* argv[1]: the JSON plan (``bench_backends.worker_plan``);
* the worker builds, compiles and warms up its models, then prints ``@@bench {"ready": ...}``;
* for each ``round N`` line on stdin it times every model once (training, then inference;
  the models' order reverses every other round) and prints ``@@bench {"round": ...}``
  with seconds per step;
* ``quit`` (or the end of stdin) ends it.

Models: ours (``resnet_course.model.ResNet50``) and ``keras.applications.ResNet50(weights=None)``
in every precision; on TensorFlow also ours with fused batch norms (as the training recipes run
it); on torch also a native ``torchvision.models.resnet50`` training loop, NCHW and channels_last.
Everything else in stdout is library noise, which the parent ignores.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
for path in (str(HERE), str(HERE.parent)):
    if path not in sys.path:
        sys.path.append(path)

PROTOCOL = "@@bench "
SHORT = {"float32": "f32", "mixed_bfloat16": "bf16"}


def emit(message: dict) -> None:
    print(PROTOCOL + json.dumps(message), flush=True)


@dataclass
class Runner:
    """One model in one precision: a training step and an inference step, each returning host values."""

    name: str
    model: str  # ours, ours_fused_bn, keras_app, torchvision
    label: str
    precision: str
    train: object
    infer: object
    params: int
    note: str = ""


def keras_runners(plan: dict, x, y) -> list[Runner]:
    import keras

    import bench_throughput
    from resnet_course.torch_kernels import match_optimizer_to_kernels

    backend = keras.backend.backend()
    specs = [bench_throughput.OURS, bench_throughput.THEIRS]
    if backend in ("tensorflow", "torch") and plan["fused_bn"]:
        specs.insert(1, bench_throughput.OURS_FUSED)
    if plan["tiny"]:
        from run import tiny_specs

        specs = tiny_specs()
    jit = backend == "jax"  # Keras' default there; without XLA, JAX runs op by op (2.5x slower)
    runners = []
    previous = keras.mixed_precision.global_policy()
    for precision in plan["precisions"]:
        for spec in specs:
            keras.mixed_precision.set_global_policy(precision)
            try:
                model, note = spec.build(tuple(plan["input_shape"]), plan["classes"])
            finally:
                keras.mixed_precision.set_global_policy(previous)
            model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                          loss="sparse_categorical_crossentropy", jit_compile=jit)
            match_optimizer_to_kernels(model)  # as train() does; nothing unless torch kernels
            runners.append(Runner(
                f"{spec.name}@{SHORT.get(precision, precision)}", spec.name, spec.label or spec.name, precision,
                train=lambda m=model: m.train_on_batch(x, y), infer=lambda m=model: m.predict_on_batch(x),
                params=int(model.count_params()), note=f"{note}, jit_compile={jit}"))
    return runners


def tiny_torch_model(classes: int):
    """A minuscule stand-in for torchvision's ResNet-50 (smoke tests)."""
    import torch

    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, classes))


def torchvision_runners(plan: dict, x_nhwc, y) -> tuple[list[Runner], str | None]:
    """The native PyTorch reference, or (no runners, why) when torchvision cannot be imported."""
    import torch

    if plan["tiny"]:
        build, label = tiny_torch_model, "torch.nn stand-in (tiny)"
    else:
        try:
            import torchvision
        except Exception as exc:  # absent, or built for another torch ("operator torchvision::nms does not exist")
            return [], f"torchvision is not importable ({type(exc).__name__}: {exc}); " \
                       "install the bench extra: pip install -e '.[bench]'"

        def build(classes):
            return torchvision.models.resnet50(num_classes=classes)

        label = f"torchvision.models.resnet50 ({torchvision.__version__})"
    torch.manual_seed(0)
    labels = torch.from_numpy(y).long()
    runners = []
    for precision in plan["precisions"]:
        for layout in ("nchw", "channels_last"):
            model = build(plan["classes"])
            images = torch.from_numpy(x_nhwc).permute(0, 3, 1, 2).contiguous()
            if layout == "channels_last":
                model = model.to(memory_format=torch.channels_last)
                images = images.contiguous(memory_format=torch.channels_last)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            loss_fn = torch.nn.CrossEntropyLoss()

            def autocast(precision=precision):
                if precision == "mixed_bfloat16":
                    return torch.autocast("cpu", dtype=torch.bfloat16)
                return contextlib.nullcontext()

            def train(model=model, images=images, optimizer=optimizer, loss_fn=loss_fn, autocast=autocast):
                model.train()
                optimizer.zero_grad(set_to_none=True)
                with autocast():
                    loss = loss_fn(model(images), labels)
                loss.backward()
                optimizer.step()
                return loss.item()

            def infer(model=model, images=images, autocast=autocast):
                model.eval()
                with torch.inference_mode(), autocast():
                    return model(images).float().numpy()

            runners.append(Runner(f"torchvision_{layout}@{SHORT.get(precision, precision)}", "torchvision",
                                  f"{label}, {layout}", precision, train, infer,
                                  sum(p.numel() for p in model.parameters()), note=layout))
    return runners, None


def versions(backend: str) -> dict:
    import keras

    found = {"keras": keras.__version__, "python": sys.version.split()[0]}
    if backend == "tensorflow":
        import tensorflow as tf

        found["tensorflow"] = tf.__version__
    elif backend == "jax":
        import jax

        found["jax"] = jax.__version__
    elif backend == "torch":
        import torch

        found["torch"] = torch.__version__
        found["torch_threads"] = torch.get_num_threads()
        found["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return found


def timed(fn, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def main(argv=None) -> None:
    plan = json.loads((argv or sys.argv)[1])
    backend = os.environ.get("KERAS_BACKEND")
    if backend != plan["backend"]:
        raise SystemExit(f"KERAS_BACKEND is {backend!r}, the plan says {plan['backend']!r}")
    import numpy as np

    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((plan["batch"], *plan["input_shape"]), dtype=np.float32)
    y = rng.integers(0, plan["classes"], size=plan["batch"]).astype("int32")

    started = time.perf_counter()
    runners = keras_runners(plan, x, y)
    skipped = {}
    if backend == "torch" and plan["torchvision"]:
        native, why = torchvision_runners(plan, x, y)
        runners += native
        if why:
            skipped["torchvision"] = why
    for runner in runners:
        for _ in range(plan["warmup"]):
            runner.train()
            runner.infer()
    emit({"ready": {
        "versions": versions(backend),
        "setup_s": time.perf_counter() - started,
        "skipped": skipped,
        "models": {r.name: {"model": r.model, "label": r.label, "precision": r.precision, "params": r.params,
                            "note": r.note} for r in runners},
    }})
    for line in sys.stdin:
        command = line.split()
        if not command or command[0] == "quit":
            break
        number = int(command[1])
        order = runners if number % 2 == 0 else runners[::-1]
        result = {"train_s": {}, "infer_s": {}}
        for r in order:
            result["train_s"][r.name] = timed(r.train, plan["train_steps"])
        for r in order:
            result["infer_s"][r.name] = timed(r.infer, plan["infer_steps"])
        emit({"round": result})


if __name__ == "__main__":
    main()
