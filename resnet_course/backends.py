"""Which Keras backend to train on: TensorFlow, JAX or PyTorch, chosen for the machine.

Keras 3 runs the same model on all three; the fastest one depends on the device. ``auto``
picks from ``FASTEST_BACKENDS``, a table measured by ``benchmarks/run.py --only backends``
(the training step of the course's ResNet-50, 64x64x3, batch 32) on each kind of device:

``cpu``
    a CPU without AVX-512's neural-network instructions (most laptops, AMD EPYC up to Zen 3):
    TensorFlow leaves its oneDNN kernels off there, and PyTorch is about twice as fast.
``cpu-avx512``
    a CPU with AVX512_VNNI, AVX512_BF16 or AMX (recent Intel Xeons, AMD Zen 4): TensorFlow's
    oneDNN kernels are on, and TensorFlow in mixed bfloat16 is the fastest.
``gpu``
    an NVIDIA GPU.

The backend is fixed when Keras is first imported in a process, so choose it first:

    >>> from resnet_course.backends import use_backend
    >>> choice = use_backend("auto")      # before anything imports keras
    >>> print(choice)                     # doctest: +SKIP
    Keras backend: torch (auto: the fastest on a CPU without AVX-512 ...)

``resnet-course train --backend auto`` does this for the command line. Nothing here imports
Keras or a framework: only ``/proc/cpuinfo``, the NVIDIA driver's files and installed packages.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = [
    "BACKENDS", "DEVICE_KINDS", "FASTEST_BACKENDS", "BackendChoice", "active_backend",
    "available_backends", "choose_backend", "detect_device_kind", "install_hint", "precision_for",
    "use_backend",
]

BACKENDS = ("tensorflow", "jax", "torch")
DEVICE_KINDS = ("cpu", "cpu-avx512", "gpu")
DEVICE_KIND_ENV = "RESNET_COURSE_DEVICE_KIND"
# The Python package each backend imports as, for "is it installed?".
_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
# CPU flags with which TensorFlow turns its oneDNN kernels on by default (and bf16 pays).
AVX512_AI_FLAGS = frozenset({"avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile"})
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@dataclasses.dataclass(frozen=True)
class Measured:
    """One row of ``FASTEST_BACKENDS``: the backends fastest first, each one's training step
    in seconds (our ResNet-50, 64x64x3, batch 32, in ``precision``), and where it was measured."""

    order: tuple[str, ...]
    step_seconds: dict
    precision: str
    measured_on: str


# From benchmarks/results/backends.json (``benchmarks/run.py --only backends``); a test checks
# that this table and that file agree. The ``cpu`` row is the AVX2-only emulation (--isa avx2:
# oneDNN, ATen and XLA capped at AVX2, TensorFlow's oneDNN off, as TensorFlow does on such CPUs).
FASTEST_BACKENDS = {
    "cpu": Measured(
        order=("torch", "tensorflow", "jax"),
        step_seconds={"torch": 0.729, "tensorflow": 1.906, "jax": 2.010},
        precision="float32",
        measured_on="Intel Xeon (family 6 model 207) capped to AVX2 (--isa avx2), 2026-11-30; "
        "a real 2-core AMD EPYC without AVX-512 gave torch 1.5 s, tensorflow 2.8 s, jax 4.7 s",
    ),
    "cpu-avx512": Measured(
        order=("tensorflow", "torch", "jax"),
        step_seconds={"tensorflow": 0.325, "torch": 0.374, "jax": 1.844},
        precision="mixed_bfloat16",
        measured_on="Intel Xeon (family 6 model 207): AVX-512, AVX512-BF16, AMX, 2026-11-30",
    ),
    # No GPU was lent to measure on: JAX (XLA-compiled steps) is the fastest Keras 3 backend
    # for convolutional networks in Keras' own published GPU benchmarks.
    "gpu": Measured(
        order=("jax", "tensorflow", "torch"),
        step_seconds={},
        precision="mixed_float16",
        measured_on="not measured here (no GPU); from Keras 3's published benchmarks",
    ),
}


@dataclasses.dataclass(frozen=True)
class BackendChoice:
    """The backend a run uses and why; ``to_dict()`` goes into metrics.json."""

    backend: str
    requested: str
    device_kind: str
    reason: str

    def __str__(self) -> str:
        return f"Keras backend: {self.backend} ({self.reason})"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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


def _cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    return cpu_info(cpuinfo)[1]


def gpu_count() -> int:
    """NVIDIA GPUs seen by the driver (its /proc files, else ``nvidia-smi -L``), without
    importing a framework. ``CUDA_VISIBLE_DEVICES=""`` hides them, as it does for the frameworks."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return 0
    driver = Path("/proc/driver/nvidia/gpus")
    if driver.is_dir():
        return len(list(driver.iterdir()))
    if shutil.which("nvidia-smi"):
        try:
            listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return 0
        return sum(line.startswith("GPU ") for line in listing.stdout.splitlines())
    return 0


def detect_device_kind(cpuinfo: str = "/proc/cpuinfo") -> str:
    """``gpu``, ``cpu-avx512`` or ``cpu`` (see the module's docstring).

    ``RESNET_COURSE_DEVICE_KIND`` overrides the detection: benchmarks that emulate a CPU without
    AVX-512 (``benchmarks/run.py --isa avx2``) set it to ``cpu``."""
    forced = os.environ.get(DEVICE_KIND_ENV)
    if forced:
        if forced not in DEVICE_KINDS:
            raise ValueError(f"{DEVICE_KIND_ENV}={forced!r}: choose one of {', '.join(DEVICE_KINDS)}")
        return forced
    if gpu_count():
        return "gpu"
    return "cpu-avx512" if _cpu_flags(cpuinfo) & AVX512_AI_FLAGS else "cpu"


def available_backends() -> list[str]:
    """The backends whose framework is installed, in ``BACKENDS`` order (nothing is imported)."""
    return [name for name in BACKENDS if importlib.util.find_spec(_MODULES[name]) is not None]


def install_hint(backend: str) -> str:
    """How to install ``backend``'s framework with this package."""
    extra = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend]
    return f"pip install 'resnet_course[{extra}]' (or, in a clone, pip install -e '.[{extra}]')"


def active_backend() -> str | None:
    """The backend Keras runs on in this process, or None while Keras is not imported yet."""
    if "keras" not in sys.modules:
        return None
    import keras

    return keras.backend.backend()


def _check_name(name: str) -> str:
    name = {"pytorch": "torch", "tf": "tensorflow"}.get(name, name)
    if name != "auto" and name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: choose auto, {', '.join(BACKENDS)}")
    return name


def choose_backend(requested: str = "auto", *, device_kind: str | None = None,
                   installed: list[str] | None = None) -> BackendChoice:
    """The backend to use for ``requested`` (``auto`` or a backend's name) on this machine.

    ``auto`` takes the fastest installed backend of ``FASTEST_BACKENDS[device_kind]``. A named
    backend that is not installed raises ValueError with the command that installs it."""
    requested = _check_name(requested)
    kind = device_kind or detect_device_kind()
    if kind not in DEVICE_KINDS:
        raise ValueError(f"unknown device kind {kind!r}: one of {', '.join(DEVICE_KINDS)}")
    installed = available_backends() if installed is None else installed
    if requested != "auto":
        if requested not in installed:
            raise ValueError(f"the {requested} backend is not installed: {install_hint(requested)}")
        return BackendChoice(requested, requested, kind, "asked for by name")
    if not installed:
        raise ValueError("no Keras backend is installed: " + install_hint("torch"))
    row = FASTEST_BACKENDS[kind]
    backend = next(name for name in row.order if name in installed)
    if row.step_seconds:
        times = ", ".join(f"{name} {row.step_seconds[name]:.2f} s" for name in row.order
                          if name in row.step_seconds)
        measured = f"training step {times} (benchmarks/run.py --only backends)"
    else:
        measured = row.measured_on
    why = "the fastest" if backend == row.order[0] else f"the fastest installed ({row.order[0]} is not)"
    return BackendChoice(backend, "auto", kind, f"auto: {why} on a {kind} machine; {measured}")


def precision_for(backend: str, device_kind: str | None = None, cpu_flags: set[str] | None = None) -> str:
    """The dtype policy that trains fastest on this device (``benchmarks/run.py --only backends``):
    float16 mixed precision on a GPU; bfloat16 on a CPU with bf16 instructions (TensorFlow's
    step 0.32 s against 0.47 s in float32, PyTorch's 0.37 against 0.51; JAX's two are level,
    1.85 and 1.84 s, and were 2.09 and 2.29 the run before); float32 otherwise. ``backend`` is
    accepted for when they differ."""
    kind = device_kind or detect_device_kind()
    if kind == "gpu":
        return "mixed_float16"
    flags = _cpu_flags() if cpu_flags is None else cpu_flags
    if kind == "cpu-avx512" and flags & BF16_FLAGS and backend in BACKENDS:
        return "mixed_bfloat16"
    return "float32"


def use_backend(requested: str = "auto") -> BackendChoice:
    """Make Keras use ``requested`` (``auto`` or a name) in this process; call it before anything
    imports Keras (the first cell of a notebook, the start of a script).

    Sets ``KERAS_BACKEND``; ``auto`` keeps a ``KERAS_BACKEND`` already set. When Keras is already imported on another backend, raises
    RuntimeError saying how to start over; when it runs on the chosen one already, nothing changes."""
    from_environment = os.environ.get("KERAS_BACKEND")
    if requested == "auto" and from_environment in BACKENDS:
        # An explicit KERAS_BACKEND is the user's choice (CI runs the tests once per backend so).
        choice = dataclasses.replace(choose_backend(from_environment), requested="auto",
                                     reason=f"KERAS_BACKEND={from_environment} is set; unset it for auto")
    else:
        choice = choose_backend(requested)
    running = active_backend()
    if running is None:
        os.environ["KERAS_BACKEND"] = choice.backend
        if choice.backend == "tensorflow":
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        return choice
    if running != choice.backend:
        raise RuntimeError(
            f"Keras is already running on the {running} backend in this process, and the backend "
            f"is fixed when Keras is first imported. To train on {choice.backend}, restart the "
            f"kernel (or the script) and call use_backend({requested!r}) before importing keras "
            f"or resnet_course's models, or set KERAS_BACKEND={choice.backend} before starting."
        )
    return choice


def resolve_for_running_keras(requested: str | None) -> BackendChoice:
    """The choice for a run in a process where Keras is imported already (``training.train``).

    None: the running backend. A name: must be the running one (else ValueError with the fix).
    ``auto``: the running one, with a reason that says when another would have been faster."""
    import keras

    running = keras.backend.backend()
    kind = detect_device_kind()
    if requested is None:
        return BackendChoice(running, "current", kind, "the backend Keras was imported with (KERAS_BACKEND)")
    requested = _check_name(requested)
    if requested == "auto":
        best = choose_backend("auto", device_kind=kind)
        if best.backend == running:
            return best
        return BackendChoice(running, "auto", kind, f"Keras was already imported on {running}; "
                             f"{best.backend} would be faster here: call "
                             f"resnet_course.backends.use_backend('auto') before importing keras")
    if requested != running:
        raise ValueError(
            f"backend={requested!r} asked for, but Keras is running on {running} in this process: "
            f"the backend is fixed when Keras is first imported. Call "
            f"resnet_course.backends.use_backend({requested!r}) first thing (restart the kernel), "
            f"or set KERAS_BACKEND={requested}."
        )
    return BackendChoice(running, requested, kind, "asked for by name")
