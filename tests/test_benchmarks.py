"""Smoke tests of the benchmark runner (benchmarks/run.py): its pure functions and one tiny run.

Nothing here checks a timing: the machine's speed is not a test condition.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_pipeline  # noqa: E402
import bench_report  # noqa: E402
import run as runner  # noqa: E402


# --- FLOP counting -------------------------------------------------------------------------


def test_flops_of_a_small_model_by_hand():
    import keras

    from bench_flops import count_flops

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)  # 2*3*3*3*4*8*8 + bias 4*8*8
    x = keras.layers.BatchNormalization()(x)  # 2 per element
    x = keras.layers.ReLU()(x)  # 1 per element
    y = keras.layers.Conv2D(4, 1, use_bias=False)(x)  # 2*1*1*4*4*8*8
    x = keras.layers.Add()([x, y])  # 1 per element
    x = keras.layers.MaxPooling2D(2)(x)  # 4 per output element (4x4x4)
    x = keras.layers.GlobalAveragePooling2D()(x)  # one per input element
    outputs = keras.layers.Dense(5)(x)  # 2*4*5 + 5
    count = count_flops(keras.Model(inputs, outputs))

    elements = 8 * 8 * 4
    assert count.matmul == 2 * 3 * 3 * 3 * 4 * 64 + 2 * 4 * 4 * 64 + 2 * 4 * 5
    assert count.other == elements + 2 * elements + elements + elements + 4 * 64 + 64 + 5
    assert count.training == 3 * count.matmul
    assert count.by_layer_type["Dense"] == 2 * 4 * 5 + 5


def test_flops_of_resnet50_match_the_published_figure():
    """keras.applications' ResNet-50 at 224x224 is the well-known ~3.86 G multiply-adds."""
    import keras

    from bench_flops import count_flops

    model = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3))
    assert count_flops(model).matmul == pytest.approx(7.716e9, rel=1e-3)


def test_flops_recurse_into_nested_models():
    import keras

    from bench_flops import count_flops

    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, use_bias=False)])
    inputs = keras.Input((4,))
    outer = keras.Model(inputs, keras.layers.Dense(2, use_bias=False)(inner(inputs)))
    assert count_flops(outer).matmul == 2 * 4 * 3 + 2 * 3 * 2


# --- ratios, goals and formatting --------------------------------------------------------


def _measurement(ours_train, theirs_train, precision="float32"):
    flops = {"matmul": 1e9, "other": 0, "training": 3e9, "forward": 1e9, "by_layer_type": {}}
    return {
        "input_shape": [64, 64, 3], "batch_size": 32, "classes": 6, "precision": precision, "rounds": 2,
        "train_steps": 5, "infer_steps": 10, "warmup": 2,
        "models": {
            "ours": {"label": "ours", "options": "defaults", "flops": flops, "train_ips": ours_train,
                     "train_ips_median": sorted(ours_train)[len(ours_train) // 2], "infer_ips": [100.0, 100.0],
                     "infer_ips_median": 100.0, "train_gflops": 3 * sorted(ours_train)[len(ours_train) // 2]},
            "keras_app": {"label": "keras.applications.ResNet50", "options": "weights=None", "flops": flops,
                          "train_ips": theirs_train, "train_ips_median": sorted(theirs_train)[len(theirs_train) // 2],
                          "infer_ips": [80.0, 80.0], "infer_ips_median": 80.0,
                          "train_gflops": 3 * sorted(theirs_train)[len(theirs_train) // 2]},
        },
    }


def test_ratio_and_paired_ratio():
    assert bench_report.ratio(50.0, 40.0) == pytest.approx(1.25)
    assert bench_report.ratio(50.0, None) is None
    assert bench_report.ratio(50.0, 0.0) is None
    # Round 2 ran while the machine was busy for both: the paired ratio ignores it.
    assert bench_report.paired_ratio([10.0, 5.0, 12.0], [10.0, 5.0, 12.0]) == pytest.approx(1.0)
    assert bench_report.paired_ratio([], []) is None


def test_add_ratios_best_training_and_goals():
    throughput = [_measurement([40.0, 50.0, 60.0], [45.0, 50.0, 55.0]),
                  _measurement([70.0, 80.0, 90.0], [60.0, 61.0, 62.0], "mixed_bfloat16")]
    bench_report.add_ratios(throughput, matmul_gflops=200.0)
    ours = throughput[0]["models"]["ours"]
    assert ours["train_ratio"] == pytest.approx(1.0)
    assert ours["infer_ratio"] == pytest.approx(1.25)
    assert ours["train_matmul_fraction"] == pytest.approx(150.0 / 200.0)
    best = bench_report.best_training(throughput)
    assert (best["model"], best["precision"], best["train_gflops"]) == ("ours", "mixed_bfloat16", 240.0)

    results = {"throughput": throughput, "best_training": best,
               "pipeline": {"dataset": "signs", "batch_size": 32, "overhead": 0.08}}
    goals = bench_report.goals(results)
    assert len(goals) == 2 * 2 + 2
    assert all(g["met"] for g in goals if g["goal"].startswith("ours"))
    assert [g["met"] for g in goals if g["goal"].startswith("input pipeline")] == [False]
    assert [g["met"] for g in goals if g["goal"].startswith("best training")] == [True]


def test_markdown_table_and_fmt():
    table = bench_report.markdown_table(["a", "b"], [[1, "x|y"], [None, 2.5]])
    assert table.splitlines() == ["| a | b |", "| --- | --- |", "| 1 | x\\|y |", "| None | 2.5 |"]
    with pytest.raises(ValueError):
        bench_report.markdown_table(["a"], [[1, 2]])
    assert bench_report.fmt(None) == "-"
    assert bench_report.fmt(0.9712, "x") == "0.97x"
    assert bench_report.fmt(0.0512, "%1") == "5.1%"
    assert bench_report.fmt(12.34) == "12.3"


def test_render_has_every_section():
    throughput = bench_report.add_ratios([_measurement([40.0, 50.0], [45.0, 50.0])], matmul_gflops=200.0)
    results = {
        "meta": {"command": "python benchmarks/run.py", "date": "today", "machine": "cpu", "versions": "v",
                 "load_start": "1", "load_end": "2", "total_s": 3.0},
        "throughput": throughput,
        "best_training": bench_report.best_training(throughput),
        "matmul": {"float32": {"how": "tf", "dtype": "float32", "n": 64, "gflops": 10.0}},
        "pipeline": {"dataset": "signs", "loader": "l", "pipeline": "p", "batch_size": 32, "steps": 4, "skip": 1,
                     "rounds": 1, "precision": "float32", "input_shape": [64, 64, 3],
                     "ips": {"arrays": [10.0], "pipeline": [9.0]}, "ips_median": {"arrays": 10.0, "pipeline": 9.0},
                     "fit_s": {"arrays": [1.0], "pipeline": [1.1]}, "overhead": 0.1},
        "datasets": {"signs": {"first_s": 1.5, "cached_s": 0.1}},
        "tests": {"command": "python -m pytest tests", "wall_s": 60.0, "returncode": 0, "summary": "5 passed"},
    }
    results["goals"] = bench_report.goals(results)
    text = bench_report.render(results)
    for heading in ("## Goals", "## Training and inference throughput", "### FLOPs per image", "## Matmul limit",
                    "## Input pipeline overhead", "## Dataset load times", "## Test suite"):
        assert heading in text
    assert "signs.first_s" in text and "10.0%" in text


def test_steady_images_per_second_and_overhead():
    assert bench_pipeline.steady_images_per_second([0.0, 1.0, 2.0, 3.0], 32, skip=1) == pytest.approx(32.0)
    with pytest.raises(ValueError):
        bench_pipeline.steady_images_per_second([0.0, 1.0], 32, skip=1)
    assert bench_pipeline.overhead(95.0, 100.0) == pytest.approx(0.05)


def test_sections_and_configs():
    assert runner.parse_sections(None) == ["throughput", "settings", "flops", "pipeline", "datasets"]
    assert runner.parse_sections(None, with_tests=True)[-1] == "tests"
    assert runner.parse_sections("tests,matmul") == ["flops", "tests"]
    with pytest.raises(SystemExit):
        runner.parse_sections("nonsense")
    assert runner.parse_configs("64x64x3:32,32x32x3:64") == [(64, 64, 3, 32), (32, 32, 3, 64)]


# --- one tiny end-to-end run -------------------------------------------------------------


@pytest.mark.slow  # builds and times models
def test_runner_end_to_end_on_tiny_models(tmp_path):
    results = runner.main(["--tiny", "--quick", "--only", "throughput,flops", "--out", str(tmp_path)])
    markdown = (tmp_path / "benchmark.md").read_text()
    data = json.loads((tmp_path / "benchmark.json").read_text())
    assert "## Training and inference throughput" in markdown and "## Matmul limit" in markdown
    (measurement,) = data["throughput"]
    assert set(measurement["models"]) == {"ours", "keras_app"}
    ours = measurement["models"]["ours"]
    assert ours["train_ips_median"] > 0 and ours["infer_ips_median"] > 0
    assert ours["train_ratio"] is not None and ours["flops"]["matmul"] > 0
    assert data["matmul"]["float32"]["gflops"] > 0
    assert results["goals"] and data["goals"]


def test_profile_categories():
    from bench_profile import categorize

    assert categorize("_MklNativeConv2DBackpropFilterWithBias", "gradient_tape/x") == "convolution"
    assert categorize("Mul", "gradient_tape/ResNet50_1/bn2a_branch2a_1/batchnorm/mul") == "batch norm"
    assert categorize("FusedBatchNormGradV3", "x") == "batch norm"
    assert categorize("Cast", "ResNet50_1/res2a_branch2a_1/Cast") == "cast"
    assert categorize("ReluGrad", "x") == "relu"
    assert categorize("AssignSubVariableOp", "SGD/x") == "optimizer"
    assert categorize("AddV2", "ResNet50_1/res2a_1/Add") == "add"


def test_quartiles_and_paired_iqr():
    assert bench_report.quartiles([]) is None
    assert bench_report.quartiles([1.0, 2.0, 3.0, 4.0, 5.0]) == (2.0, 4.0)
    assert bench_report.paired_ratio_iqr([2.0, 4.0], [2.0, 2.0]) == pytest.approx((1.25, 1.75))


# --- the backends section ------------------------------------------------------------------

import bench_backends  # noqa: E402


def _backend_models(**figures):
    """``name=(model, precision, [train seconds per round])`` -> the worker's models dict, summarized later."""
    return {name: {"model": model, "label": model, "precision": precision, "params": 1, "note": "",
                   "train_s": list(train), "infer_s": [t / 4 for t in train]}
            for name, (model, precision, train) in figures.items()}


def _condition(isa, kind, backends):
    condition = {"isa": isa, "kind": kind, "env": bench_backends.ISA_ENV[isa], "precisions": ["float32"],
                 "skipped": {}, "load": [1.0, 1.2],
                 "backends": {b: {"versions": {}, "setup_s": 1.0, "models": models} for b, models in backends.items()}}
    return bench_backends.summarize(condition, batch=32)


def test_summarize_ratios_and_torchvision_reference():
    condition = _condition("native", "cpu-avx512", {
        "tensorflow": _backend_models(**{
            "ours@f32": ("ours", "float32", [0.8, 0.7, 0.9]),
            "ours_fused_bn@f32": ("ours_fused_bn", "float32", [0.6, 0.5, 0.7]),
            "keras_app@f32": ("keras_app", "float32", [0.8, 0.8, 0.8])}),
        "torch": _backend_models(**{
            "ours@f32": ("ours", "float32", [1.0, 1.0, 1.0]),
            "keras_app@f32": ("keras_app", "float32", [2.0, 2.0, 2.0]),
            "torchvision_nchw@f32": ("torchvision", "float32", [0.5, 0.5, 0.5]),
            "torchvision_channels_last@f32": ("torchvision", "float32", [0.4, 0.4, 0.4])}),
    })
    tf = condition["backends"]["tensorflow"]["models"]
    assert tf["ours@f32"]["train_s_median"] == pytest.approx(0.8)
    assert tf["ours@f32"]["train_s_best"] == pytest.approx(0.7)
    assert tf["ours@f32"]["train_ips"] == pytest.approx(40.0)
    assert tf["ours@f32"]["train_vs_keras_app"] == pytest.approx(1.0)
    assert tf["ours_fused_bn@f32"]["train_vs_keras_app"] == pytest.approx(0.8 / 0.6)
    assert "train_vs_keras_app" not in tf["keras_app@f32"]
    assert condition["backends"]["torch"]["models"]["ours@f32"]["train_vs_keras_app"] == pytest.approx(2.0)
    assert condition["torchvision_reference"] == {"float32": "torchvision_channels_last@f32"}
    fastest = condition["fastest"]
    assert (fastest["backend"], fastest["model"], fastest["precision"]) == ("tensorflow", "ours_fused_bn", "float32")
    assert fastest["vs_torchvision"] == pytest.approx(0.4 / 0.5)  # best rounds
    assert fastest["vs_torchvision_median"] == pytest.approx(0.4 / 0.6)


def test_fastest_backends_per_kind_prefers_the_real_cpu():
    native = _condition("native", "cpu", {
        "jax": _backend_models(**{"ours@f32": ("ours", "float32", [2.0])}),
        "torch": _backend_models(**{"ours@f32": ("ours", "float32", [0.8]),
                                    "ours@bf16": ("ours", "mixed_bfloat16", [0.6])}),
    })
    emulated = _condition("avx2", "cpu", {"jax": _backend_models(**{"ours@f32": ("ours", "float32", [0.1])})})
    table = bench_backends.fastest_backends({"conditions": [emulated, native]})
    assert set(table) == {"cpu"}
    entry = table["cpu"]
    assert (entry["backend"], entry["precision"], entry["isa"], entry["emulated"]) == (
        "torch", "mixed_bfloat16", "native", False)
    assert entry["step_seconds"] == {"jax": pytest.approx(2.0), "torch": pytest.approx(0.6)}
    assert entry["step_seconds_by_precision"]["torch"] == {"float32": pytest.approx(0.8),
                                                           "mixed_bfloat16": pytest.approx(0.6)}
    assert entry["vs_torchvision"] is None  # no torchvision measured
    assert bench_backends.fastest_backends({"conditions": []}) == {}


def test_device_kind_precisions_and_cpu_summary():
    lscpu = "Model name:   Some CPU\nFlags:   fpu avx2 avx512f avx512_vnni avx512_bf16 amx_tile amx_bf16\n"
    cpu = bench_backends.cpu_summary(lscpu)
    assert cpu["model_name"] == "Some CPU"
    assert (cpu["avx512f"], cpu["avx512_vnni"], cpu["avx512_bf16"], cpu["amx"]) == (True, True, True, True)
    assert bench_backends.device_kind(cpu, "native") == "cpu-avx512"
    assert bench_backends.device_kind(cpu, "avx2") == "cpu"
    assert bench_backends.default_precisions(cpu, "native") == ["float32", "mixed_bfloat16"]
    assert bench_backends.default_precisions(cpu, "avx2") == ["float32"]
    plain = bench_backends.cpu_summary("Model name: AMD EPYC\nFlags: fpu avx2 fma\n")
    assert bench_backends.device_kind(plain, "native") == "cpu" and not plain["avx512f"]
    assert bench_backends.default_precisions(plain, "native") == ["float32"]


def test_worker_env_and_missing_backends(monkeypatch):
    env = bench_backends.worker_env("jax", "avx2")
    assert env["KERAS_BACKEND"] == "jax" and env["XLA_FLAGS"] == "--xla_cpu_max_isa=AVX2"
    assert env["ONEDNN_MAX_CPU_ISA"] == "AVX2" and env["TF_ENABLE_ONEDNN_OPTS"] == "0"
    assert bench_backends.worker_env("tensorflow", "avx2").get("XLA_FLAGS") == os.environ.get("XLA_FLAGS")  # JAX only
    with pytest.raises(ValueError, match="unknown --isa"):
        bench_backends.worker_env("jax", "avx1024")
    monkeypatch.setattr(bench_backends, "find_spec", lambda name: None if name == "jax" else object())
    found, missing = bench_backends.available_backends(("tensorflow", "jax"))
    assert found == ["tensorflow"] and "jax is not installed" in missing["jax"]
    with pytest.raises(ValueError, match="unknown backend"):
        bench_backends.available_backends(("mxnet",))


@pytest.mark.slow  # two worker processes (TensorFlow, torch) build and time tiny models: ~45 s
def test_backends_section_end_to_end_on_tiny_models(tmp_path):
    pytest.importorskip("torch")
    runner.main(["--tiny", "--quick", "--only", "backends", "--backends", "tensorflow,torch",
                 "--out", str(tmp_path)])
    assert not (tmp_path / "benchmark.json").exists()  # the other sections' results stay untouched
    data = json.loads((tmp_path / "backends.json").read_text())
    (condition,) = data["conditions"]
    assert set(condition["backends"]) == {"tensorflow", "torch"}
    torch_models = condition["backends"]["torch"]["models"]
    assert {m["model"] for m in torch_models.values()} == {"ours", "keras_app", "torchvision"}
    assert all(m["train_s_median"] > 0 and m["infer_s_median"] > 0 for m in torch_models.values())
    (kind,) = data["fastest_backends"]
    assert data["fastest_backends"][kind]["backend"] in {"tensorflow", "torch"}
    assert set(data["fastest_backends"][kind]["step_seconds"]) == {"tensorflow", "torch"}
    assert "## Fastest backend per device kind" in (tmp_path / "backends.md").read_text()


@pytest.mark.parametrize("key, option", [("epochs", "--epochs"), ("batch_size", "--batch-size"), ("seed", "--seed")])
def test_bench_training_sends_its_own_options_back_to_them(key, option, capsys):
    import bench_training

    with pytest.raises(SystemExit) as exited:
        bench_training.main(["--dataset", "cifar10", "--set", f"{key}=30", "--no-record"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"--set {key}=... is an option of its own: use {option} 30" in err
    assert ("time_budget" in err) == (key == "epochs")


def test_bench_training_counts_the_flops_at_the_size_the_model_trains_on():
    """CIFAR-10 quick trains on 24x24 crops: 0.5625x the convolutions' positions of whole 32x32 images."""
    import bench_training

    crops = bench_training.throughput("cifar10", "ci", steps=1, warmup=0)
    whole = bench_training.throughput("cifar10", "ci", steps=1, warmup=0, crop=0)
    assert crops["recipe"]["crop"] == 24 and whole["recipe"]["crop"] == 0
    assert crops["forward_mflops"] == pytest.approx(0.5625 * whole["forward_mflops"], rel=1e-3)
    for record in (crops, whole):
        assert record["training_gflops_per_second"] == pytest.approx(
            3 * record["forward_mflops"] * record["images_per_second"] / 1e3)
