"""Turn the runner's results into ratios, goal checks, a markdown report and JSON.

Pure functions only (no TensorFlow), so they are tested directly.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from statistics import median

#: The issue's goals.
GOAL_RATIO = 0.97  # our images/s >= 0.97x keras.applications' in the same precision
GOAL_PIPELINE_OVERHEAD = 0.05  # fit from the pipeline at most 5% slower than from arrays
GOAL_MATMUL_FRACTION = 0.50  # the best training setting >= 50% of the float32 matmul limit

REFERENCE = "keras_app"


def ratio(ours: float | None, theirs: float | None) -> float | None:
    """``ours / theirs``; None when either is missing or theirs is not positive."""
    if ours is None or theirs is None or theirs <= 0 or (isinstance(ours, float) and math.isnan(ours)):
        return None
    return ours / theirs


def paired_ratio(ours: list, theirs: list) -> float | None:
    """Median over rounds of ours[i] / theirs[i] (the two were measured side by side in round i)."""
    pairs = [a / b for a, b in zip(ours, theirs) if b]
    return median(pairs) if pairs else None


def quartiles(values: list) -> tuple[float, float] | None:
    """The first and third quartiles (linear interpolation), None for no values."""
    values = sorted(values)
    if not values:
        return None

    def at(q):
        position = q * (len(values) - 1)
        low = int(position)
        high = min(low + 1, len(values) - 1)
        return values[low] + (values[high] - values[low]) * (position - low)

    return at(0.25), at(0.75)


def paired_ratio_iqr(ours: list, theirs: list) -> tuple[float, float] | None:
    """Interquartile range of the per-round ratios ours[i] / theirs[i]: how far the noise spreads them."""
    return quartiles([a / b for a, b in zip(ours, theirs) if b])


def add_ratios(throughput: list[dict], reference: str = REFERENCE, matmul_gflops: float | None = None) -> list[dict]:
    """Add to each model of each measurement its ratios to ``reference`` and its share of the matmul limit."""
    for m in throughput:
        ref = m["models"].get(reference)
        for name, entry in m["models"].items():
            for key in ("train", "infer"):
                med = entry.get(f"{key}_ips_median")
                if ref is not None:
                    entry[f"{key}_ratio"] = ratio(med, ref.get(f"{key}_ips_median"))
                    entry[f"{key}_ratio_paired"] = paired_ratio(entry.get(f"{key}_ips", []), ref.get(f"{key}_ips", []))
                    entry[f"{key}_ratio_iqr"] = paired_ratio_iqr(entry.get(f"{key}_ips", []), ref.get(f"{key}_ips", []))
            if ref is not None:
                entry["train_gflops_ratio"] = ratio(entry.get("train_gflops"), ref.get("train_gflops"))
            entry["train_matmul_fraction"] = ratio(entry.get("train_gflops"), matmul_gflops)
            probe = m.get("probes", {}).get("matmul_float32")
            if probe and len(probe) == len(entry.get("train_ips", [])):
                # Each round's training GFLOP/s over the matmul measured in the same round.
                training = entry["flops"]["training"] / 1e9
                entry["train_matmul_fraction_paired"] = median(
                    training * ips / limit for ips, limit in zip(entry["train_ips"], probe) if limit)
                entry["matmul_probe_median"] = median(probe)
    return throughput


def best_training(throughput: list[dict]) -> dict | None:
    """The measurement and model with the highest training GFLOP/s."""
    best = None
    for m in throughput:
        for name, entry in m["models"].items():
            g = entry.get("train_gflops")
            if g is not None and (best is None or g > best["train_gflops"]):
                best = {"model": name, "label": entry.get("label", name), "input_shape": m["input_shape"],
                        "batch_size": m["batch_size"], "precision": entry.get("precision", m["precision"]),
                        "train_gflops": g,
                        "train_ips": entry.get("train_ips_median"),
                        "train_matmul_fraction": entry.get("train_matmul_fraction_paired",
                                                           entry.get("train_matmul_fraction")),
                        "fraction_of": "the matmul timed in the same rounds"
                        if "train_matmul_fraction_paired" in entry else "the best matmul of the run"}
    return best


def goals(results: dict) -> list[dict]:
    """One row per goal: what, measured, target, met (None: not measured in this run)."""
    rows = []
    # "ours": the model as students build it; "ours_fused_bn": as the training recipes run it.
    for name, who in (("ours", "ours"), ("ours_fused_bn", "ours as trained (fused BN)")):
        for m in results.get("throughput", []):
            entry = m["models"].get(name)
            if entry is None or entry.get("train_ratio") is None:
                continue
            for key in ("train", "infer"):
                value = entry.get(f"{key}_ratio")
                if value is None:
                    continue
                rows.append({
                    "goal": f"{who} / keras.applications, {dict(train='training', infer='inference')[key]}, "
                            f"{_shape(m['input_shape'])} b{m['batch_size']} {m['precision']}",
                    "measured": value, "target": f">= {GOAL_RATIO}", "met": value >= GOAL_RATIO, "format": "x",
                })
    pipeline = results.get("pipeline")
    if pipeline and pipeline.get("overhead") is not None:
        rows.append({"goal": f"input pipeline overhead ({pipeline['dataset']}, b{pipeline['batch_size']})",
                     "measured": pipeline["overhead"], "target": f"<= {GOAL_PIPELINE_OVERHEAD:.0%}",
                     "met": pipeline["overhead"] <= GOAL_PIPELINE_OVERHEAD, "format": "%"})
    best = results.get("best_training")
    if best and best.get("train_matmul_fraction") is not None:
        rows.append({"goal": f"best training setting / float32 matmul limit ({best['label']}, "
                             f"{_shape(best['input_shape'])} b{best['batch_size']} {best['precision']}; "
                             f"limit: {best.get('fraction_of', 'the best matmul of the run')})",
                     "measured": best["train_matmul_fraction"], "target": f">= {GOAL_MATMUL_FRACTION:.0%}",
                     "met": best["train_matmul_fraction"] >= GOAL_MATMUL_FRACTION, "format": "%"})
    return rows


# --- formatting -------------------------------------------------------------------------------


def _shape(shape) -> str:
    return "x".join(str(n) for n in shape)


def fmt(value, kind: str = "f1") -> str:
    """Format a number for the tables; ``-`` for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if kind == "x":
        return f"{value:.2f}x"
    if kind == "%":
        return f"{100 * value:.0f}%"
    if kind == "%1":
        return f"{100 * value:.1f}%"
    if kind == "s":
        return f"{value:.1f} s"
    if kind == "g":
        return f"{value:.3g}"
    return f"{value:.1f}"


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub markdown table; cells are converted with ``str``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"row {row!r} has {len(row)} cells, the header {len(header)}")
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
    return "\n".join(lines)


def fmt_paired(entry: dict, key: str) -> str:
    """``"1.02x [0.95-1.10]"``: the median of per-round ratios and their interquartile range."""
    med, iqr = entry.get(f"{key}_ratio_paired"), entry.get(f"{key}_ratio_iqr")
    if med is None:
        return "-"
    return fmt(med, "x") + (f" [{iqr[0]:.2f}-{iqr[1]:.2f}]" if iqr else "")


def throughput_table(throughput: list[dict]) -> str:
    header = ["input", "batch", "precision", "model", "options", "train img/s", "train vs keras.app",
              "per-round ratio [IQR]", "train GFLOP/s", "% of f32 matmul", "infer img/s", "infer vs keras.app",
              "per-round ratio [IQR]"]
    rows = []
    for m in throughput:
        for name, e in m["models"].items():
            rows.append([
                _shape(m["input_shape"]), m["batch_size"], e.get("precision", m["precision"]), e.get("label", name),
                e.get("options", ""),
                fmt(e.get("train_ips_median")), fmt(e.get("train_ratio"), "x"), fmt_paired(e, "train"),
                fmt(e.get("train_gflops")), fmt(e.get("train_matmul_fraction"), "%"), fmt(e.get("infer_ips_median")),
                fmt(e.get("infer_ratio"), "x"), fmt_paired(e, "infer"),
            ])
    return markdown_table(header, rows)


def settings_table(settings: dict) -> str:
    """Training images/s of one model in several precisions (and variants), alternated in one run."""
    reference = next(iter(settings["models"].values()))
    header = ["model", "precision", "train img/s", f"vs {reference.get('label')}", "per-round ratio [IQR]",
              "train GFLOP/s", "% of f32 matmul (best of run)", "% of f32 matmul (same rounds)", "rounds (img/s)"]
    rows = [[e.get("label", name), e.get("precision", ""), fmt(e.get("train_ips_median")),
             fmt(e.get("train_ratio"), "x"), fmt_paired(e, "train"), fmt(e.get("train_gflops")),
             fmt(e.get("train_matmul_fraction"), "%"), fmt(e.get("train_matmul_fraction_paired"), "%"),
             ", ".join(fmt(v) for v in e.get("train_ips", []))] for name, e in settings["models"].items()]
    return markdown_table(header, rows)


def flops_table(throughput: list[dict]) -> str:
    header = ["input", "model", "forward GFLOP/image (conv+dense)", "other (BN, ReLU, add, pool)",
              "training GFLOP/image (3x)"]
    rows, seen = [], set()
    for m in throughput:
        for name, e in m["models"].items():
            key = (tuple(m["input_shape"]), name)
            if key in seen:
                continue
            seen.add(key)
            f = e["flops"]
            rows.append([_shape(m["input_shape"]), f"{e.get('label', name)} ({e.get('options', '')})",
                         f"{f['matmul'] / 1e9:.3f}", f"{f['other'] / 1e9:.4f}", f"{f['training'] / 1e9:.3f}"])
    return markdown_table(header, rows)


def render(results: dict) -> str:
    """The whole markdown report."""
    meta = results.get("meta", {})
    out = ["# Benchmark results", ""]
    if meta:
        out += [f"- command: `{meta.get('command', '')}`",
                f"- date: {meta.get('date', '')}; total time {fmt(meta.get('total_s'), 's')}",
                f"- machine: {meta.get('machine', '')}",
                f"- versions: {meta.get('versions', '')}",
                f"- load average (1, 5, 15 min): start {meta.get('load_start', '')}, end {meta.get('load_end', '')}",
                ""]
    if results.get("goals"):
        out += ["## Goals", "", markdown_table(
            ["goal", "measured", "target", "met"],
            [[g["goal"], fmt(g["measured"], g["format"] if g["format"] != "%" else "%1"), g["target"],
              "yes" if g["met"] else "**no**"] for g in results["goals"]]), ""]
    if results.get("throughput"):
        t = results["throughput"][0]
        out += ["## Training and inference throughput", "",
                f"Median images/s over {t['rounds']} alternating rounds of {t['train_steps']} `train_on_batch` "
                f"steps (training) and {t['infer_steps']} `predict_on_batch` steps (inference) on a fixed "
                f"in-memory batch, after {t['warmup']} warm-up steps; SGD (momentum 0.9), sparse categorical "
                "crossentropy, `jit_compile=False`. Ratios are to keras.applications.ResNet50(weights=None) "
                "measured in the same rounds. GFLOP/s = 3 x forward conv+dense FLOPs x images/s; % of the "
                "float32 matmul limit below.", "",
                throughput_table(results["throughput"]), "",
                "### FLOPs per image", "", flops_table(results["throughput"]), ""]
    if results.get("settings"):
        st = results["settings"]
        out += ["## Fastest training setting", "",
                f"Our model in each precision as separate models of one round-robin ({_shape(st['input_shape'])}, "
                f"batch {st['batch_size']}, {st['rounds']} rounds of {st['train_steps']} `train_on_batch` steps).", "",
                settings_table(st), ""]
        probe = st.get("probes", {}).get("matmul_float32")
        if probe:
            out += [f"In every round a float32 matmul as large as the limit's was timed too (median {median(probe):.0f} GFLOP/s, "
                    f"rounds {', '.join(f'{v:.0f}' for v in probe)}); \"same rounds\" is the median over rounds of "
                    "the round's training GFLOP/s over that round's matmul.", ""]
    if results.get("matmul"):
        out += ["## Matmul limit", "", markdown_table(
            ["kernel", "dtype", "n", "GFLOP/s (best)"],
            [[v["how"], v["dtype"], v["n"], fmt(v["gflops"])] for v in results["matmul"].values()]), ""]
    p = results.get("pipeline")
    if p:
        out += ["## Input pipeline overhead", "",
                f"`model.fit` of our ResNet50 ({p['precision']}, {_shape(p['input_shape'])}, batch {p['batch_size']}, "
                f"{p['steps']} steps per fit, the first {p['skip']} not timed), {p['rounds']} alternating rounds, "
                f"on {p['dataset']} loaded by `{p['loader']}`. Pipeline: {p['pipeline']}.", "",
                markdown_table(["input", "img/s (median)", "rounds", "fit() wall s (median)"],
                               [[name, fmt(p["ips_median"][name]), ", ".join(fmt(v) for v in p["ips"][name]),
                                 fmt(median(p["fit_s"][name]))] for name in p["ips"]]), "",
                f"Overhead: **{fmt(p['overhead'], '%1')}** (1 - pipeline / arrays)"
                + (f"; median of the per-round overheads {fmt(p['overhead_paired'], '%1')} "
                   f"(rounds: {', '.join(fmt(v, '%1') for v in p['overhead_per_round'])})"
                   if p.get("overhead_paired") is not None else "") + ".", ""]
    d = results.get("datasets")
    if d:
        out += ["## Dataset load times", ""]
        if "error" in d:
            out += [f"Not measured: {d['error']}", ""]
        else:
            try:  # the datasets benchmark's own table, where it is importable
                import bench_datasets

                text = bench_datasets.markdown(d)
            except Exception:
                text = markdown_table(["measure", "value"], [[k, fmt(v, "g") if isinstance(v, float) else v]
                                                            for k, v in flatten(d).items()])
            out += [text, ""]
    s = results.get("tests")
    if s:
        out += ["## Test suite", "", f"`{s['command']}`: **{fmt(s['wall_s'], 's')}** wall, exit code "
                f"{s['returncode']}, `{s.get('summary', '')}`" + (f"; {s['note']}" if s.get("note") else "") + ".", ""]
    return "\n".join(out)


def flatten(d: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists are joined."""
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, (list, tuple)):
            out[name] = ", ".join(fmt(v, "g") if isinstance(v, float) else str(v) for v in value)
        else:
            out[name] = value
    return out


def write(results: dict, out_dir) -> tuple[Path, Path]:
    """Write ``benchmark.md`` and ``benchmark.json`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / "benchmark.md", out_dir / "benchmark.json"
    md.write_text(render(results) + "\n")
    js.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return md, js
