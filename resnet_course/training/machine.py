"""What the machine offers: the CPU, its bf16 support, the numeric precision to train in."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import keras


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



def apply_precision(precision: str) -> str:
    resolved = detect_precision() if precision == "auto" else precision
    keras.mixed_precision.set_global_policy(resolved)
    return resolved


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
