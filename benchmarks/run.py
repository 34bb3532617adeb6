"""The one benchmark runner: our ResNet50 side by side with keras.applications' and the machine's limit.

    python benchmarks/run.py                       # everything but the test suite (~15 min on 2 cores)
    python benchmarks/run.py --with-tests          # ... and the test suite's wall time
    python benchmarks/run.py --quick               # 1 round of 1-2 steps: a smoke test (a few minutes)
    python benchmarks/run.py --only throughput,flops
    python benchmarks/run.py --no-fused-bn         # without our model as training runs it (fused batch norms)
    python benchmarks/run.py --render benchmarks/results/benchmark.json   # rewrite the markdown only
    python benchmarks/run.py --only backends --isa native,avx2   # TensorFlow, JAX, torch (+ torchvision)

Sections (``--only``, comma-separated):

* ``throughput``: training and inference images/s, ours against keras.applications.ResNet50
  (weights=None), 64x64x3 batch 32 and 32x32x3 batch 64 (ours with pooling="global" there),
  float32 and mixed_bfloat16, alternating the models over rounds (``bench_throughput``);
* ``settings``: the fastest training setting: our model, plain and with fused batch norms (as
  the training recipes run it), in float32 and in mixed_bfloat16 as separate models of one
  round-robin, 64x64x3 batch 32;
* ``flops``: the float32 and bfloat16 matmul limits (``bench_matmul``), against which the
  training GFLOP/s (3 x forward FLOPs x images/s, ``bench_flops``) are set;
* ``pipeline``: ``fit`` from in-memory arrays against ``fit`` from the tf.data pipeline with
  augmentation, on SIGNS (``bench_pipeline``);
* ``datasets``: dataset load times, first and cached (``bench_datasets.run``);
* ``tests``: the test suite's wall time (``bench_test_suite``; only with ``--with-tests`` or ``--only``);
* ``backends``: our model and keras.applications' on each Keras backend (TensorFlow, JAX, torch), each
  in its own process, and a native torchvision loop; the fastest backend per kind of CPU, as is and
  with ``--isa avx2`` (a CPU without AVX-512 emulated) (``bench_backends``; only with ``--only``).

Writes ``<out>/benchmark.md`` and ``<out>/benchmark.json``; the ``backends`` section writes
``<out>/backends.md`` and ``<out>/backends.json`` instead. The machine is shared and noisy:
compare the ratios (measured side by side), not the absolute images/s across runs.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))

import bench_backends  # noqa: E402  (pure Python: the workers import the frameworks)
import bench_report  # noqa: E402  (pure Python: no TensorFlow yet)

SECTIONS = ("throughput", "settings", "flops", "pipeline", "datasets", "tests", "backends")
DEFAULT_SECTIONS = ("throughput", "settings", "flops", "pipeline", "datasets")


def parse_sections(only: str | None, with_tests: bool = False) -> list[str]:
    """The sections to run, in the runner's order."""
    if not only:
        wanted = set(DEFAULT_SECTIONS) | ({"tests"} if with_tests else set())
    else:
        wanted = {s.strip() for s in only.split(",") if s.strip()}
        wanted = {"flops" if s == "matmul" else s for s in wanted}
        unknown = wanted - set(SECTIONS)
        if unknown:
            raise SystemExit(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
        if with_tests:
            wanted.add("tests")
    return [s for s in SECTIONS if s in wanted]


def load_average() -> str:
    try:
        return ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def machine() -> str:
    cpu = bench_backends.cpu_summary()  # pure Python: the backends section's parent imports no framework
    extras = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in cpu["flags"]]
    return f"{cpu['model_name']}, {os.cpu_count()} logical CPUs ({', '.join(extras) or 'no AVX-512'}), " \
           f"{platform.system()}"


def tiny_specs():
    """Two minuscule models standing in for ours and keras.applications' (for the smoke test)."""
    import keras

    from bench_throughput import ModelSpec, build_ours
    from resnet_course.model import scaled_filters

    def tiny_ours(input_shape, classes):
        return build_ours(input_shape, classes, filters=scaled_filters(1 / 16), identity_blocks=(0, 0, 0, 0),
                          pooling="global")

    def tiny_reference(input_shape, classes):
        inputs = keras.Input(input_shape)
        x = keras.layers.Conv2D(8, 3, strides=2)(inputs)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        outputs = keras.layers.Dense(classes, activation="softmax", dtype="float32")(x)
        return keras.Model(inputs, outputs), "tiny stand-in"

    return [ModelSpec("ours", tiny_ours, "ours (tiny)"), ModelSpec("keras_app", tiny_reference, "stand-in (tiny)")]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(HERE / "results"), help="output folder (default benchmarks/results)")
    p.add_argument("--only", help=f"comma-separated sections among {', '.join(SECTIONS)}")
    p.add_argument("--with-tests", action="store_true", help="also time the test suite")
    p.add_argument("--quick", action="store_true", help="1 round of 1-2 steps: a smoke test, not a measurement")
    p.add_argument("--tiny", action="store_true", help="minuscule models and one 32x32 float32 setting (tests)")
    p.add_argument("--no-fused-bn", action="store_true",
                   help="leave out our model with fused batch norms (resnet_course.fused_batchnorm, "
                        "what the training recipes run)")
    p.add_argument("--rounds", type=int, help="alternating rounds (default 12; --quick 1)")
    p.add_argument("--train-steps", type=int, help="timed train_on_batch calls per model per round (default 1)")
    p.add_argument("--infer-steps", type=int, help="timed predict_on_batch calls per model per round (default 2)")
    p.add_argument("--precisions", default="float32,mixed_bfloat16")
    p.add_argument("--configs", default="64x64x3:32,32x32x3:64",
                   help="input shapes and batch sizes, e.g. 64x64x3:32,32x32x3:64")
    p.add_argument("--pipeline-dataset", default="signs")
    p.add_argument("--pipeline-precision", default="float32")
    p.add_argument("--pipeline-rounds", type=int, default=9,
                   help="alternating rounds of the pipeline section (default 9: its noise is near the 5%% goal)")
    p.add_argument("--pipeline-steps", type=int, default=12, help="fit steps per round, the first 2 not timed")
    p.add_argument("--data-dir", default=os.environ.get("RESNET_COURSE_DATA"),
                   help="datasets folder (default $RESNET_COURSE_DATA)")
    p.add_argument("--render", metavar="JSON", help="only rewrite benchmark.md (in --out) from a benchmark.json")
    p.add_argument("--isa", default="native",
                   help="backends: conditions to measure, comma-separated: native (this CPU as is), avx2 "
                        "(AVX-512 off in oneDNN, ATen and XLA, TensorFlow's oneDNN off: a CPU without AVX-512)")
    p.add_argument("--backends", default="tensorflow,jax,torch", help="backends: the Keras backends to compare")
    p.add_argument("--backends-config", default="64x64x3:32", help="backends: input shape and batch size")
    p.add_argument("--no-torchvision", action="store_true", help="backends: leave out the native torchvision loop")
    p.add_argument("--intra-op", type=int, help="tf.config.threading intra-op threads (default: TensorFlow's)")
    p.add_argument("--inter-op", type=int, help="tf.config.threading inter-op threads (default: TensorFlow's)")
    return p


def parse_configs(text: str) -> list[tuple[int, ...]]:
    """``"64x64x3:32,32x32x3:64"`` -> ``[(64, 64, 3, 32), (32, 32, 3, 64)]``."""
    configs = []
    for item in text.split(","):
        shape, _, batch = item.strip().partition(":")
        configs.append((*(int(n) for n in shape.split("x")), int(batch or 32)))
    return configs


def finish(results: dict) -> dict:
    """Add the ratios, the share of the matmul limit, the best training setting and the goals."""
    matmul_f32 = results.get("matmul", {}).get("float32", {}).get("gflops")
    bench_report.add_ratios(results.get("throughput", []), matmul_gflops=matmul_f32)
    if results.get("settings"):
        bench_report.add_ratios([results["settings"]], reference=next(iter(results["settings"]["models"])),
                                matmul_gflops=matmul_f32)
    measured = results.get("throughput", []) + ([results["settings"]] if results.get("settings") else [])
    if measured:
        results["best_training"] = bench_report.best_training(measured)
    results["goals"] = bench_report.goals(results)
    return results


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.render:
        import json

        results = json.loads(Path(args.render).read_text())
        if "conditions" in results:  # a backends.json: summarized again, as this version of the code does it
            for condition in results["conditions"]:
                bench_backends.summarize(condition, results["plan"]["batch"])
            results["fastest_backends"] = bench_backends.fastest_backends(results)
            bench_backends.write(results, args.out)
            return results
        results = finish(results)
        bench_report.write(results, args.out)
        return results
    sections = parse_sections(args.only, args.with_tests)
    started = time.perf_counter()
    results: dict = {"meta": {
        "command": "python benchmarks/run.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None
                                                                                   else sys.argv[1:])),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "load_start": load_average(),
        "sections": sections,
        "quick": args.quick,
        "tiny": args.tiny,
    }}

    def log(message):
        print(f"[{time.perf_counter() - started:6.0f}s] {message}", flush=True)

    needs_tf = any(s in sections for s in ("throughput", "settings", "flops", "pipeline"))
    if needs_tf:
        import keras
        import tensorflow as tf

        if args.intra_op:
            tf.config.threading.set_intra_op_parallelism_threads(args.intra_op)
        if args.inter_op:
            tf.config.threading.set_inter_op_parallelism_threads(args.inter_op)
        results["meta"]["versions"] = f"TensorFlow {tf.__version__}, Keras {keras.__version__}, Python " \
                                      f"{platform.python_version()}"
        results["meta"]["threads"] = {
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads() or "default",
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads() or "default",
            "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)"),
        }

    quick = args.quick
    n, repeats = (1024, 2) if (quick or args.tiny) else (4096, 5)
    if "flops" in sections:
        import bench_matmul

        log("flops: matmul limit (again at the end; the best of both is kept)")
        results["matmul"] = bench_matmul.run(n=n, repeats=repeats, with_numpy=not args.tiny)
        for v in results["matmul"].values():
            log(f"  {v['dtype']:9s} {v['how'][:40]:40s} {v['gflops']:6.1f} GFLOP/s")

    fused_spec = None
    if not args.no_fused_bn and not args.tiny:
        import bench_throughput

        fused_spec = bench_throughput.OURS_FUSED

    if "throughput" in sections:
        import bench_throughput

        plan = bench_throughput.ThroughputPlan(
            configs=parse_configs(args.configs),
            precisions=tuple(p.strip() for p in args.precisions.split(",") if p.strip()),
            rounds=args.rounds or (1 if quick else 12),
            train_steps=args.train_steps or 1,
            infer_steps=args.infer_steps or 2,
            warmup=1 if quick else 2,
        )
        if args.tiny:
            plan.configs, plan.precisions, plan.specs = [(32, 32, 3, 4)], ("float32",), tiny_specs()
        elif fused_spec is not None:
            plan.specs.insert(1, fused_spec)
        results["throughput"] = bench_throughput.run(plan, log=log)

    if "settings" in sections:
        import bench_throughput

        specs = [bench_throughput.OURS] + ([fused_spec] if fused_spec is not None else [])
        if args.tiny:
            specs = tiny_specs()[:1]
        specs = bench_throughput.precision_specs(specs, ("float32", "mixed_bfloat16"))
        *shape, batch = (32, 32, 3, 4) if args.tiny else (64, 64, 3, 32)
        log(f"settings: {', '.join(s.name for s in specs)} alternating, {tuple(shape)} batch {batch}")
        import bench_matmul

        results["settings"] = bench_throughput.measure(
            specs, tuple(shape), batch, 6, "per model", rounds=args.rounds or (1 if quick else 12),
            train_steps=args.train_steps or 1, warmup=1 if quick else 2, inference=False, log=log,
            probes={"matmul_float32": bench_matmul.make_probe(n, "float32")})

    if "pipeline" in sections:
        import bench_pipeline

        log("pipeline: fit from arrays vs fit from tf.data")
        results["pipeline"] = bench_pipeline.measure(
            args.pipeline_dataset, args.data_dir,
            steps=4 if quick else args.pipeline_steps, skip=1 if quick else 2,
            rounds=1 if quick else args.pipeline_rounds,
            precision=args.pipeline_precision, log=log)
        log(f"  overhead {results['pipeline']['overhead']:.1%}")

    if "datasets" in sections:
        log("datasets: load times")
        try:
            import bench_datasets

            results["datasets"] = bench_datasets.run(args.data_dir)
        except Exception as exc:  # the module is another engineer's; report, don't crash the run
            results["datasets"] = {"error": f"{type(exc).__name__}: {exc}"}
        log(f"  {results['datasets']}")

    if "tests" in sections:
        import bench_test_suite

        log("tests: timing the test suite")
        results["tests"] = bench_test_suite.run()
        log(f"  {results['tests']['wall_s']:.0f} s, {results['tests']['summary']}")

    if "backends" in sections:
        run_backends(args, results["meta"], log)

    if "flops" in sections:
        log("flops: matmul limit, again")
        again = bench_matmul.run(n=n, repeats=repeats, with_numpy=False)
        for key, v in again.items():
            first = results["matmul"][key]
            first["gflops_start"], first["gflops_end"] = first["gflops"], v["gflops"]
            first["gflops"] = max(first["gflops"], v["gflops"])
            log(f"  {v['dtype']:9s} {v['gflops']:6.1f} GFLOP/s (best of start and end: {first['gflops']:.1f})")
    if sections == ["backends"]:
        return results  # its own files are written; benchmark.md and .json stay as they are
    finish(results)
    results["meta"]["load_end"] = load_average()
    results["meta"]["total_s"] = time.perf_counter() - started
    md, js = bench_report.write(results, args.out)
    log(f"wrote {md} and {js}")
    return results


def run_backends(args, meta: dict, log) -> dict:
    """The backends section: measure, then write ``backends.md`` and ``backends.json`` into ``--out``."""
    configs = parse_configs(args.backends_config)
    if len(configs) != 1:
        raise SystemExit(f"--backends-config takes one input shape and batch size (e.g. 64x64x3:32), "
                         f"not {args.backends_config!r}: run the section once per configuration, with its own --out")
    (*shape, batch), = configs
    plan = bench_backends.BackendsPlan(
        input_shape=tuple(shape), batch=batch, rounds=args.rounds or (1 if args.quick else 7),
        train_steps=args.train_steps or 1, infer_steps=args.infer_steps or 2, warmup=1 if args.quick else 2,
        backends=tuple(b.strip() for b in args.backends.split(",") if b.strip()),
        isas=tuple(i.strip() for i in args.isa.split(",") if i.strip()),
        fused_bn=not args.no_fused_bn, torchvision=not args.no_torchvision, tiny=args.tiny)
    if args.tiny:
        plan.input_shape, plan.batch, plan.precisions = (32, 32, 3), 4, ("float32",)
    unknown = set(plan.isas) - set(bench_backends.ISA_ENV)
    if unknown:
        raise SystemExit(f"unknown --isa {', '.join(sorted(unknown))}; choose from {', '.join(bench_backends.ISA_ENV)}")
    started = time.perf_counter()
    backends = bench_backends.run(plan, log=log)
    backends["meta"] = dict(meta, load_end=load_average(), total_s=time.perf_counter() - started,
                            niceness=os.nice(0))  # a niced run gets less of a shared CPU
    md, js = bench_backends.write(backends, args.out)
    for kind, entry in backends["fastest_backends"].items():
        log(f"  fastest on {kind} ({entry['isa']}): {entry['backend']} {entry['precision']} {entry['model']}; "
            + ", ".join(f"{b} {s:.3f} s" for b, s in entry["step_seconds"].items()))
    log(f"wrote {md} and {js}")
    meta["backends"] = str(js)
    return backends


if __name__ == "__main__":
    main()
