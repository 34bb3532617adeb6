"""Choosing the Keras backend: the device kinds, the measured table, ``use_backend``, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from resnet_course import backends
from resnet_course.backends import BACKENDS, FASTEST_BACKENDS, choose_backend, precision_for

ROOT = Path(__file__).resolve().parent.parent
BACKENDS_RESULTS = ROOT / "benchmarks" / "results" / "backends.json"


def cpuinfo(tmp_path, flags: str) -> str:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx2 {flags}\n\n")
    return str(path)


def test_device_kind_from_cpu_flags(tmp_path, monkeypatch):
    monkeypatch.setattr(backends, "gpu_count", lambda: 0)
    assert backends.detect_device_kind(cpuinfo(tmp_path, "fma")) == "cpu"
    assert backends.detect_device_kind(cpuinfo(tmp_path, "avx512f avx512_vnni")) == "cpu-avx512"
    assert backends.detect_device_kind(cpuinfo(tmp_path, "avx512f avx512_bf16 amx_bf16")) == "cpu-avx512"
    assert backends.detect_device_kind(str(tmp_path / "missing")) == "cpu"
    monkeypatch.setattr(backends, "gpu_count", lambda: 2)
    assert backends.detect_device_kind(cpuinfo(tmp_path, "fma")) == "gpu"
    monkeypatch.setenv("RESNET_COURSE_DEVICE_KIND", "cpu")  # an emulated CPU without AVX-512
    assert backends.detect_device_kind(cpuinfo(tmp_path, "avx512_bf16")) == "cpu"
    monkeypatch.setenv("RESNET_COURSE_DEVICE_KIND", "tpu")
    with pytest.raises(ValueError, match="RESNET_COURSE_DEVICE_KIND='tpu': choose one of cpu, cpu-avx512, gpu"):
        backends.detect_device_kind()


def test_cuda_visible_devices_empty_hides_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert backends.gpu_count() == 0


@pytest.mark.parametrize("kind", backends.DEVICE_KINDS)
def test_auto_takes_the_fastest_installed_backend_of_the_table(kind):
    row = FASTEST_BACKENDS[kind]
    assert sorted(row.order) == sorted(BACKENDS)
    choice = choose_backend("auto", device_kind=kind, installed=list(BACKENDS))
    assert choice.backend == row.order[0] and choice.requested == "auto" and choice.device_kind == kind
    assert kind in choice.reason and "the fastest" in choice.reason
    # Without the fastest one installed, the next in the table, and the reason says so.
    fallback = choose_backend("auto", device_kind=kind, installed=list(row.order[1:]))
    assert fallback.backend == row.order[1]
    assert f"{row.order[0]} is not" in fallback.reason
    assert json.loads(json.dumps(choice.to_dict()))["backend"] == choice.backend


def test_the_cpu_row_is_pytorch_and_the_avx512_row_tensorflow():
    """The measured facts the README states: without AVX-512's neural-network instructions
    PyTorch trains fastest (TensorFlow's oneDNN is off there); with them, TensorFlow."""
    assert FASTEST_BACKENDS["cpu"].order[0] == "torch"
    assert FASTEST_BACKENDS["cpu-avx512"].order[0] == "tensorflow"
    for kind in ("cpu", "cpu-avx512"):
        times = FASTEST_BACKENDS[kind].step_seconds
        assert list(FASTEST_BACKENDS[kind].order) == sorted(times, key=times.get)


def test_the_table_matches_the_benchmark_results():
    """``FASTEST_BACKENDS`` is what ``benchmarks/run.py --only backends`` measured: the same order
    on every measured kind, step times within 10% of the recorded ones, and precisions that
    train fastest there."""
    if not BACKENDS_RESULTS.exists():
        pytest.skip("benchmarks/results/backends.json not written yet")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from bench_backends import fastest_backends
    finally:
        sys.path.pop(0)
    measured = fastest_backends(json.loads(BACKENDS_RESULTS.read_text()))
    assert measured, "the results name no device kind"
    for kind, result in measured.items():
        row = FASTEST_BACKENDS[kind]
        assert row.order[0] == result["backend"], (kind, result)
        for name, seconds in result["step_seconds"].items():
            assert row.step_seconds[name] == pytest.approx(seconds, rel=0.1), (kind, name)
        flags = {"avx512_bf16"} if kind == "cpu-avx512" else {"avx2"}
        # The precision the table trains in is the backend's fastest, or within 5% of it (a tie
        # on this shared machine: JAX's float32 and bf16 steps are 1-4% apart, either way round).
        for name, by_precision in result["step_seconds_by_precision"].items():
            chosen = precision_for(name, kind, flags)
            assert by_precision[chosen] <= 1.05 * min(by_precision.values()), (kind, name, by_precision)


def test_named_backends_and_their_errors():
    assert choose_backend("jax", installed=["jax"]).backend == "jax"
    assert choose_backend("pytorch", installed=["torch"]).backend == "torch"
    with pytest.raises(ValueError, match=r"the torch backend is not installed: pip install 'resnet_course\[torch\]'"):
        choose_backend("torch", installed=["tensorflow"])
    with pytest.raises(ValueError, match="unknown backend 'mxnet': choose auto, tensorflow, jax, torch"):
        choose_backend("mxnet")
    with pytest.raises(ValueError, match="no Keras backend is installed"):
        choose_backend("auto", device_kind="cpu", installed=[])


def test_precision_per_backend_and_device():
    bf16 = {"avx512_bf16", "amx_bf16"}
    assert precision_for("jax", "gpu") == "mixed_float16"
    assert precision_for("tensorflow", "cpu-avx512", bf16) == "mixed_bfloat16"
    assert precision_for("jax", "cpu-avx512", bf16) == "mixed_bfloat16"
    assert precision_for("torch", "cpu-avx512", bf16) == "mixed_bfloat16"
    assert precision_for("jax", "cpu-avx512", {"avx512_vnni"}) == "float32"  # VNNI without bf16
    assert precision_for("tensorflow", "cpu", {"avx2"}) == "float32"
    assert precision_for("tensorflow", "cpu", bf16) == "float32"  # the kind decides (emulation)


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    environment.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment,
                          timeout=300, cwd=ROOT)


@pytest.mark.slow  # starts Python processes that import Keras
def test_use_backend_sets_keras_backend_before_import_and_refuses_after():
    available = backends.available_backends()
    if len(available) < 2:
        pytest.skip("needs two Keras backends installed")
    first, other = available[0], available[1]
    result = run_python(
        "from resnet_course.backends import use_backend\n"
        f"choice = use_backend({first!r})\n"
        "import keras\n"
        "print(keras.backend.backend(), choice.backend)\n"
        f"assert use_backend({first!r}).backend == {first!r}  # the running one: fine\n"
        "try:\n"
        f"    use_backend({other!r})\n"
        "except RuntimeError as error:\n"
        "    print('refused:', error)\n"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0] == f"{first} {first}"
    assert lines[1].startswith(f"refused: Keras is already running on the {first} backend")
    assert "restart the kernel" in lines[1] and f"KERAS_BACKEND={other}" in lines[1]


@pytest.mark.slow  # starts Python processes that import Keras
def test_train_refuses_a_backend_other_than_the_running_one():
    result = run_python(
        "import keras\n"
        "from resnet_course.training import train\n"
        "other = 'jax' if keras.backend.backend() != 'jax' else 'torch'\n"
        "try:\n"
        "    train('signs', 'ci', '/nonexistent/never-written', backend=other)\n"
        "except ValueError as error:\n"
        "    print(error)\n"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "but Keras is running on" in result.stdout and "use_backend(" in result.stdout
    assert not Path("/nonexistent/never-written").exists()


@pytest.mark.slow  # starts Python processes that import Keras
def test_data_and_models_load_no_tensorflow_on_other_backends():
    """Loading data, building pipelines and models, and grading import no TensorFlow off its backend."""
    other = next((name for name in ("torch", "jax") if name in backends.available_backends()), None)
    if other is None:
        pytest.skip("neither torch nor jax is installed")
    code = (
        "import sys, numpy as np\n"
        "from resnet_course.pipelines import make_datasets\n"
        "from resnet_course.model import ResNet50\n"
        "from resnet_course.grading import check_identity_block\n"
        "from resnet_course.blocks import identity_block\n"
        "from resnet_course import training, exercises\n"
        "x = np.zeros((20, 32, 32, 3), np.uint8); y = np.arange(20) % 10\n"
        "data = make_datasets('cifar10', x, y, batch_size=8, validation_fraction=0)\n"
        "batch = data.train[0]\n"
        "model = training.build_model(training.recipe('cifar10', 'ci'))\n"
        "check_identity_block(identity_block)\n"
        "print(data.engine, model.count_params() > 0, 'tensorflow' in sys.modules)\n"
    )
    result = run_python(code, KERAS_BACKEND=other)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-1] == "numpy True False"


def test_configured_backend_reads_the_environment_and_keras_json(tmp_path, monkeypatch):
    from resnet_course.startup import configured_backend

    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert configured_backend() == "jax"
    monkeypatch.delenv("KERAS_BACKEND")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert configured_backend() == "tensorflow"
    (tmp_path / "keras.json").write_text('{"backend": "torch"}')
    assert configured_backend() == "torch"


def test_cli_train_help_lists_the_backends(capsys):
    from resnet_course.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = capsys.readouterr().out
    assert "--backend {auto,tensorflow,jax,torch}" in text and "--devices all|N" in text
