"""Which Keras backend trains the course's ResNet-50 fastest on this CPU, side by side in one run.

For each condition (this CPU as it is, and with ``--isa avx2`` an emulation of a CPU without
AVX-512) one worker process per Keras backend (TensorFlow, JAX, torch; ``bench_backends_worker``)
builds our model and ``keras.applications.ResNet50(weights=None)`` in every precision (on
TensorFlow also ours with fused batch norms, as the training recipes run it; in the torch worker
also a native ``torchvision.models.resnet50`` loop, NCHW and channels_last), compiles them alike
(SGD momentum 0.9, sparse categorical crossentropy; ``jit_compile`` True on JAX, Keras' default
there, False elsewhere) and warms them up. Then the parent runs rounds: in each, every worker in
turn (the order reverses every round) times one step of every model. Medians over rounds; ratios
between figures of the same rounds.

``fastest_backends(results)`` reads the table "fastest backend per device kind" off the results.
Pure Python here (no TensorFlow): the workers import the frameworks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib.util import find_spec
from pathlib import Path
from statistics import median

import bench_report

HERE = Path(__file__).resolve().parent
WORKER = HERE / "bench_backends_worker.py"
PROTOCOL = "@@bench "
BACKENDS = ("tensorflow", "jax", "torch")
#: What each ISA emulation sets in the workers' environment (``XLA_FLAGS`` only for JAX: TensorFlow
#: parses it too, and it runs without XLA here).
ISA_ENV = {
    "native": {},
    "avx2": {
        "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN (TensorFlow's and torch's convolutions)
        "DNNL_MAX_CPU_ISA": "AVX2",  # its older name
        "ATEN_CPU_CAPABILITY": "avx2",  # torch's own vectorized kernels
        "TF_ENABLE_ONEDNN_OPTS": "0",  # TensorFlow turns oneDNN on only on CPUs with AVX512_VNNI/BF16/AMX
    },
}
ISA_ENV_JAX = {"avx2": {"XLA_FLAGS": "--xla_cpu_max_isa=AVX2"}}
AVX512_KIND_FLAGS = {"avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile"}
BF16_FLAGS = {"avx512_bf16", "amx_bf16"}
OURS = ("ours", "ours_fused_bn")
#: Which figure ranks settings: the best round (noise on a shared machine only adds time).
RANK_BY = "train_s_best"


@dataclass
class BackendsPlan:
    input_shape: tuple = (64, 64, 3)
    batch: int = 32
    classes: int = 6
    rounds: int = 7
    train_steps: int = 1
    infer_steps: int = 2
    warmup: int = 2
    backends: tuple = BACKENDS
    isas: tuple = ("native",)
    fused_bn: bool = True
    torchvision: bool = True
    tiny: bool = False
    precisions: tuple | None = None  # None: float32, and mixed_bfloat16 where the CPU has bf16 instructions


def cpu_summary(lscpu_text: str | None = None) -> dict:
    """The CPU's model name and the flags that decide the kernels (from ``lscpu``, else /proc/cpuinfo)."""
    if lscpu_text is None:
        try:
            lscpu_text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            lscpu_text = ""
    fields = {}
    for line in lscpu_text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    if not fields.get("flags"):
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                key, _, value = line.partition(":")
                fields.setdefault(key.strip().lower(), value.strip())
        except OSError:
            pass
    flags = set(fields.get("flags", "").split())
    return {
        "model_name": fields.get("model name", "unknown"),
        "logical_cpus": os.cpu_count(),
        "avx2": "avx2" in flags, "avx512f": "avx512f" in flags, "avx512_vnni": "avx512_vnni" in flags,
        "avx512_bf16": "avx512_bf16" in flags, "amx": bool(flags & {"amx_bf16", "amx_tile", "amx_int8"}),
        "flags": sorted(flags),
    }


def device_kind(cpu: dict, isa: str) -> str:
    """"cpu-avx512" for a CPU whose AVX-512 makes TensorFlow use oneDNN (VNNI, BF16 or AMX), else "cpu"."""
    if isa != "native":
        return "cpu"
    return "cpu-avx512" if set(cpu["flags"]) & AVX512_KIND_FLAGS else "cpu"


def default_precisions(cpu: dict, isa: str) -> list[str]:
    bf16 = isa == "native" and bool(set(cpu["flags"]) & BF16_FLAGS)
    return ["float32"] + (["mixed_bfloat16"] if bf16 else [])


def worker_env(backend: str, isa: str) -> dict:
    if isa not in ISA_ENV:
        raise ValueError(f"unknown --isa {isa!r}; choose from {', '.join(ISA_ENV)}")
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2", **ISA_ENV[isa])
    if backend == "jax":
        env.update(ISA_ENV_JAX.get(isa, {}))
    return env


class Worker:
    """One backend's process; ``ask`` sends a line and waits for its ``@@bench`` answer."""

    def __init__(self, backend: str, isa: str, plan: dict):
        self.backend, self.isa = backend, isa
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([sys.executable, str(WORKER), json.dumps(plan)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, text=True,
                                     env=worker_env(backend, isa), cwd=str(HERE.parent))

    def receive(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(PROTOCOL):
                return json.loads(line[len(PROTOCOL):])
        self.proc.wait()
        self.stderr.seek(0)
        tail = self.stderr.read()[-2000:]
        raise RuntimeError(f"the {self.backend} worker ended (exit code {self.proc.returncode}):\n{tail}")

    def ask(self, line: str) -> dict:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.receive()

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            self.proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
        self.stderr.close()


def available_backends(wanted) -> tuple[list[str], dict]:
    """The backends whose framework is installed, and a message for each one that is not."""
    modules = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
    found, missing = [], {}
    for backend in wanted:
        if backend not in modules:
            raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
        if find_spec(modules[backend]) is None:
            missing[backend] = f"{modules[backend]} is not installed in {sys.executable}; skipped"
        else:
            found.append(backend)
    return found, missing


def measure_condition(plan: BackendsPlan, isa: str, cpu: dict, log=print) -> dict:
    precisions = list(plan.precisions or default_precisions(cpu, isa))
    backends, skipped = available_backends(plan.backends)
    for message in skipped.values():
        log(f"  backends [{isa}]: {message}")
    worker_plan = {"input_shape": list(plan.input_shape), "batch": plan.batch, "classes": plan.classes,
                   "precisions": precisions, "train_steps": plan.train_steps, "infer_steps": plan.infer_steps,
                   "warmup": plan.warmup, "fused_bn": plan.fused_bn, "torchvision": plan.torchvision,
                   "tiny": plan.tiny}
    condition = {"isa": isa, "kind": device_kind(cpu, isa), "env": ISA_ENV[isa], "env_jax": ISA_ENV_JAX.get(isa, {}),
                 "precisions": precisions, "skipped": skipped, "backends": {}, "load": []}
    log(f"backends [{isa}]: starting {', '.join(backends)} ({', '.join(precisions)}); building and warming up")
    started = time.perf_counter()
    workers = [Worker(b, isa, dict(worker_plan, backend=b)) for b in backends]  # they set up concurrently
    alive = []
    for w in workers:
        try:
            ready = w.receive()["ready"]
        except RuntimeError as exc:
            log(f"  {exc}")
            condition["skipped"][w.backend] = str(exc)
            w.close()
            continue
        for what, why in ready["skipped"].items():
            log(f"  {w.backend}: {why}")
            condition["skipped"][what] = why
        condition["backends"][w.backend] = {
            "versions": ready["versions"], "setup_s": ready["setup_s"],
            "models": {name: dict(m, train_s=[], infer_s=[]) for name, m in ready["models"].items()}}
        alive.append(w)
    condition["setup_s"] = time.perf_counter() - started
    try:
        for r in range(plan.rounds):
            for w in alive if r % 2 == 0 else alive[::-1]:
                answer = w.ask(f"round {r}")["round"]
                for key in ("train_s", "infer_s"):
                    for name, seconds in answer[key].items():
                        condition["backends"][w.backend]["models"][name][key].append(seconds)
                time.sleep(0.2)  # let the last worker's idle threads stop spinning
            condition["load"].append(os.getloadavg()[0])
            log(f"  [{isa}] round {r + 1}/{plan.rounds}: " + "; ".join(
                f"{b} " + ", ".join(f"{n} {m['train_s'][-1]:.2f}s" for n, m in d["models"].items())
                for b, d in condition["backends"].items()))
    finally:
        for w in alive:
            w.close()
    summarize(condition, plan.batch)
    return condition


def summarize(condition: dict, batch: int) -> dict:
    """Medians, images/s, ours vs keras.applications per backend, the torchvision reference, the fastest."""
    for data in condition["backends"].values():
        for m in data["models"].values():
            for key in ("train_s", "infer_s"):
                m[key + "_median"] = median(m[key]) if m[key] else None
                m[key + "_best"] = min(m[key]) if m[key] else None
            m["train_ips"] = batch / m["train_s_median"] if m["train_s_median"] else None
            m["infer_ips"] = batch / m["infer_s_median"] if m["infer_s_median"] else None
        by = {(m["model"], m["precision"]): m for m in data["models"].values()}
        for (model, precision), m in by.items():
            theirs = by.get(("keras_app", precision))
            if model in OURS and theirs:  # speed ratios: > 1 means ours is faster
                m["train_vs_keras_app"] = bench_report.ratio(m["train_ips"], theirs["train_ips"])
                m["train_vs_keras_app_paired"] = bench_report.paired_ratio(theirs["train_s"], m["train_s"])
                m["infer_vs_keras_app"] = bench_report.ratio(m["infer_ips"], theirs["infer_ips"])
    native = condition["backends"].get("torch", {}).get("models", {})
    reference = {}
    for name, m in native.items():
        if m["model"] == "torchvision" and m[RANK_BY]:
            best = reference.get(m["precision"])
            if best is None or m[RANK_BY] < native[best][RANK_BY]:
                reference[m["precision"]] = name
    condition["torchvision_reference"] = reference
    candidates = [(m[RANK_BY], backend, name) for backend, data in condition["backends"].items()
                  for name, m in data["models"].items() if m["model"] in OURS and m[RANK_BY]]
    condition["fastest"] = None
    if candidates:
        _, backend, name = min(candidates)
        ours = condition["backends"][backend]["models"][name]
        entry = {"backend": backend, "model_name": name, "model": ours["model"], "precision": ours["precision"],
                 "train_s_best": ours["train_s_best"], "train_s_median": ours["train_s_median"]}
        tv_name = reference.get(ours["precision"])
        if tv_name:  # speed ratios: > 1 means ours is faster than native PyTorch
            tv = native[tv_name]
            entry.update(torchvision=tv_name, torchvision_train_s_best=tv["train_s_best"],
                         torchvision_train_s_median=tv["train_s_median"],
                         vs_torchvision=bench_report.ratio(tv["train_s_best"], ours["train_s_best"]),
                         vs_torchvision_median=bench_report.ratio(tv["train_s_median"], ours["train_s_median"]),
                         vs_torchvision_paired=bench_report.paired_ratio(tv["train_s"], ours["train_s"]))
        condition["fastest"] = entry
    return condition


def fastest_backends(results: dict) -> dict:
    """``{kind: {"backend", "precision", "model", "step_seconds": {backend: s}, ...}}`` from ``run``'s results.

    ``step_seconds`` is each backend's training step of our model in its fastest setting (precision,
    and fused batch norms on TensorFlow), the best of the rounds (noise on a shared machine only adds
    time); ``step_seconds_median`` the same settings' medians; ``step_seconds_by_precision`` each
    precision's best. Where two conditions share a kind, the real CPU wins over an emulation.
    """
    table = {}
    conditions = sorted(results.get("conditions", []), key=lambda c: c["isa"] != "native")
    for condition in conditions:
        fastest = condition.get("fastest")
        if not fastest or condition["kind"] in table:
            continue
        step_seconds, step_median, settings, by_precision = {}, {}, {}, {}
        for backend, data in condition["backends"].items():
            ours = [m for m in data["models"].values() if m["model"] in OURS and m.get(RANK_BY)]
            if not ours:
                continue
            best = min(ours, key=lambda m: m[RANK_BY])
            step_seconds[backend], step_median[backend] = best[RANK_BY], best["train_s_median"]
            settings[backend] = {"model": best["model"], "precision": best["precision"]}
            for m in ours:
                slot = by_precision.setdefault(backend, {})
                slot[m["precision"]] = min(slot.get(m["precision"], m[RANK_BY]), m[RANK_BY])
        table[condition["kind"]] = {
            "backend": fastest["backend"], "precision": fastest["precision"], "model": fastest["model"],
            "step_seconds": step_seconds, "step_seconds_median": step_median, "settings": settings,
            "step_seconds_by_precision": by_precision, "vs_torchvision": fastest.get("vs_torchvision"),
            "isa": condition["isa"], "emulated": condition["isa"] != "native",
        }
    return table


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _s(value) -> str:
    return "-" if value is None else f"{value:.3f} s"


def render(results: dict) -> str:
    """The markdown report: the fastest-backend table, then every condition's figures."""
    meta, cpu = results.get("meta", {}), results["cpu"]
    plan = results["plan"]
    lines = [
        "# Keras backends on this CPU: the course's ResNet-50, side by side",
        "",
        f"Command: `{meta.get('command', 'python benchmarks/run.py --only backends')}`, {meta.get('date', '')}. "
        f"CPU: **{cpu['model_name']}**, {cpu['logical_cpus']} logical CPUs; AVX-512F {_yes(cpu['avx512f'])}, "
        f"AVX512_VNNI {_yes(cpu['avx512_vnni'])}, AVX512_BF16 {_yes(cpu['avx512_bf16'])}, "
        f"AMX {_yes(cpu['amx'])}. Load average {meta.get('load_start', '?')} at the start, "
        f"{meta.get('load_end', '?')} at the end.",
        "",
        f"Input {'x'.join(map(str, plan['input_shape']))}, batch {plan['batch']}, {plan['classes']} classes; "
        f"{plan['rounds']} round(s), each timing {plan['train_steps']} training step(s) and "
        f"{plan['infer_steps']} inference step(s) of every model, the backends' order reversing every round; "
        "settings are ranked by their best round (load only adds time), ratios are given for the medians "
        "and per round. Speed ratios: > 1 means ours is faster.",
        "",
        "## Fastest backend per device kind",
        "",
    ]
    rows = []
    for kind, entry in results.get("fastest_backends", {}).items():
        rows.append([f"`{kind}`", entry["isa"] + (" (emulated)" if entry["emulated"] else ""),
                     f"**{entry['backend']}**, {entry['precision']}, {entry['model']}"]
                    + [_s(entry["step_seconds"].get(b)) for b in BACKENDS]
                    + [bench_report.fmt(entry.get("vs_torchvision"), "x")])
    lines.append(bench_report.markdown_table(
        ["kind", "condition", "fastest (precision, model)"] + [f"{b} s/step" for b in BACKENDS]
        + ["fastest vs torchvision"], rows))
    lines += ["", "s/step: each backend's training step of our model in its fastest setting (precision; fused "
              "batch norms on TensorFlow), best of the rounds. JSON: `fastest_backends`.", ""]
    for condition in results["conditions"]:
        env = [f"`{k}={v}`" for k, v in condition["env"].items()]
        env += [f"`{k}={v}` (JAX)" for k, v in condition.get("env_jax", {}).items()]
        lines += [f"## {condition['isa']} (kind `{condition['kind']}`)", "",
                  "Environment: " + (", ".join(env) or "as is") + ". "
                  f"Load average per round {min(condition['load'], default=0):.1f}-"
                  f"{max(condition['load'], default=0):.1f}.", ""]
        rows = []
        for backend, data in condition["backends"].items():
            for m in data["models"].values():
                rows.append([backend, m["label"], m["precision"], _s(m["train_s_median"]), _s(m["train_s_best"]),
                             bench_report.fmt(m["train_ips"]),
                             bench_report.fmt(m.get("train_vs_keras_app"), "x")
                             + (f" ({m['train_vs_keras_app_paired']:.2f}x)" if m.get("train_vs_keras_app_paired")
                                else ""),
                             bench_report.fmt(m["infer_ips"]), bench_report.fmt(m.get("infer_vs_keras_app"), "x")])
        lines.append(bench_report.markdown_table(
            ["backend", "model", "precision", "train s/step", "best", "train img/s",
             "vs keras.app (per round)", "infer img/s", "vs keras.app"], rows))
        versions = "; ".join(f"{b}: " + ", ".join(f"{k} {v}" for k, v in d["versions"].items())
                             for b, d in condition["backends"].items())
        lines += ["", f"Versions: {versions}."]
        for what, why in condition["skipped"].items():
            lines.append(f"Skipped {what}: {why}")
        fastest = condition.get("fastest")
        if fastest:
            text = (f"Fastest for our model: **{fastest['backend']}**, {fastest['precision']}, "
                    f"{fastest['model']}, {_s(fastest['train_s_best'])} a step at best "
                    f"({_s(fastest['train_s_median'])} median)")
            if fastest.get("torchvision"):
                text += (f"; native torchvision ({fastest['torchvision']}, the faster layout) "
                         f"{_s(fastest['torchvision_train_s_best'])} at best: ours "
                         f"{bench_report.fmt(fastest['vs_torchvision'], 'x')} its speed (medians "
                         f"{bench_report.fmt(fastest['vs_torchvision_median'], 'x')}, per round "
                         f"{bench_report.fmt(fastest['vs_torchvision_paired'], 'x')})")
            lines += ["", text + "."]
        lines.append("")
    return "\n".join(lines)


def write(results: dict, out_dir) -> tuple[Path, Path]:
    """Write ``backends.md`` and ``backends.json`` into ``out_dir`` (the other sections' files stay)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / "backends.md", out_dir / "backends.json"
    md.write_text(render(results))
    js.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return md, js


def run(plan: BackendsPlan, log=print) -> dict:
    cpu = cpu_summary()
    results = {"plan": asdict(plan), "cpu": {k: v for k, v in cpu.items()}, "conditions": []}
    for isa in plan.isas:
        results["conditions"].append(measure_condition(plan, isa, cpu, log))
    results["fastest_backends"] = fastest_backends(results)
    return results


if __name__ == "__main__":
    raise SystemExit("run it through the runner: python benchmarks/run.py --only backends [--isa native,avx2]")
