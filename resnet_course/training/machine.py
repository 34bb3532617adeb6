"""What the machine offers: the CPU, its bf16 support, the numeric precision to train in."""

from __future__ import annotations

import os
import platform

import keras

from resnet_course.backends import BF16_FLAGS, cpu_info


# --- precision -------------------------------------------------------------------


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU reports AVX512-BF16 or AMX-BF16 (Linux ``/proc/cpuinfo`` flags)."""
    return bool(cpu_info(cpuinfo)[1] & BF16_FLAGS)


def detect_precision(backend: str | None = None) -> str:
    """The dtype policy that trains fastest for ``backend`` (default: Keras' running backend) on
    this machine: mixed_float16 on a GPU, mixed_bfloat16 on a CPU with bf16 instructions where
    the backend gains from it (``resnet_course.backends.precision_for``), else float32."""
    from resnet_course.backends import precision_for

    return precision_for(backend or keras.backend.backend())


def apply_precision(precision: str, backend: str | None = None) -> str:
    resolved = detect_precision(backend) if precision == "auto" else precision
    keras.mixed_precision.set_global_policy(resolved)
    return resolved


def seed_everything(seed: int) -> None:
    """``keras.utils.set_random_seed(seed)`` (Python, NumPy, Keras, the backend), without importing
    TensorFlow off its backend: Keras would import it only to seed it, for tf.data pipelines,
    and the JAX and PyTorch runs feed NumPy batches instead."""
    from resnet_course.startup import keras_without_tensorflow

    with keras_without_tensorflow():
        keras.utils.set_random_seed(seed)


def framework_versions() -> dict:
    """Keras' version and its running backend's, without importing another framework."""
    import importlib
    import sys

    backend = keras.backend.backend()
    module = sys.modules.get(backend) or importlib.import_module(backend)
    return {"keras": keras.__version__, "backend": backend, backend: getattr(module, "__version__", None)}


def machine_info() -> dict:
    """A short description of the machine, for benchmark records and metrics.json."""
    from resnet_course.backends import detect_device_kind, gpu_count

    cpu = cpu_info()[0]
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return dict(cpu=cpu, cpu_count=os.cpu_count(), device_kind=detect_device_kind(), gpus=gpu_count(),
                platform=platform.platform(), python=platform.python_version(), **framework_versions(),
                load_average=load)
