"""Dataset load times: first load (empty cache: decode and write the cache) and cached load.

    RESNET_COURSE_DATA=/path/to/datasets python benchmarks/bench_datasets.py [--repeat 3] [--json out.json]

Forms timed: SIGNS from its HDF5 files, CIFAR-10 from the 60,000-image zip, FER-2013 from
the 35,887-image zip, and FER-2013 from the original CSV. The CSV is not distributed with
the shared data, so it is first written, in the original format (emotion,pixels,Usage;
Training rows, then PublicTest, then PrivateTest), from the zip's images into a temporary
folder. Each load runs ``--repeat`` times, each first load with a new empty cache; the
table shows the best and the median. The source files are read once before timing, so the
figures measure decoding, not the disk. Targets (issue 4): FER-2013 from the CSV or the zip
under 3 s, CIFAR-10 from the zip under 5 s, any dataset from the cache under 0.5 s.

``run(data_dir) -> dict`` is the same measurement for a benchmark runner.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Targets in seconds: (first load, cached load); SIGNS is read directly (no cache).
TARGETS = {
    ("signs", "hdf5"): (0.5, 0.5),
    ("cifar10", "image-zip"): (5.0, 0.5),
    ("fer2013", "image-zip"): (3.0, 0.5),
    ("fer2013", "fer-csv"): (3.0, 0.5),
}


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def write_fer2013_csv(data_dir: str | os.PathLike, target: Path) -> Path:
    """Write ``target`` (fer2013.csv in the original format) from the FER-2013 copy in
    ``data_dir``; pixel values are the decoded images, 2304 per row, single spaces."""
    from resnet_course import datasets

    with tempfile.TemporaryDirectory() as scratch:
        previous = os.environ.get(datasets.CACHE_ENV_VAR)
        os.environ[datasets.CACHE_ENV_VAR] = scratch
        try:
            (x_train, y_train), (x_public, y_public), _ = datasets.load_fer2013(
                data_dir, test_split="PublicTest", download=False)
            _, (x_private, y_private), _ = datasets.load_fer2013(data_dir, download=False)
        finally:
            if previous is None:
                del os.environ[datasets.CACHE_ENV_VAR]
            else:
                os.environ[datasets.CACHE_ENV_VAR] = previous
    # Each value as 4 bytes: the digits right-aligned after NUL padding, then a space; the
    # NULs are dropped per row.
    text = np.zeros((256, 4), np.uint8)
    for value in range(256):
        digits = str(value).encode()
        text[value, 3 - len(digits):3] = list(digits)
        text[value, 3] = ord(" ")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as out:
        out.write(b"emotion,pixels,Usage\n")
        for images, labels, usage in ((x_train, y_train, b"Training"), (x_public, y_public, b"PublicTest"),
                                      (x_private, y_private, b"PrivateTest")):
            rows = text[images.reshape(len(images), -1)].reshape(len(images), -1)
            for row, label in zip(rows, labels):
                pixels = row[row != 0].tobytes()[:-1]
                out.write(b"%d,%s,%s\n" % (label, pixels, usage))
    return target


def _warm(path: Path) -> None:
    """Read a source once so that timings measure decoding rather than the disk."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for file in files:
        with open(file, "rb") as stream:
            while stream.read(1 << 24):
                pass


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the decoding workers): unlike
    wall time, hardly inflated when other jobs share the cores."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def time_loads(name: str, data_dir, repeat: int, **options) -> dict:
    """First (empty cache) and cached load times of dataset ``name``, ``repeat`` times."""
    from resnet_course import datasets

    source = datasets.find_source(name, data_dir)
    _warm(source.path)
    first, cached, first_cpu = [], [], []
    previous = os.environ.get(datasets.CACHE_ENV_VAR)
    try:
        for _ in range(repeat):
            with tempfile.TemporaryDirectory() as cache:
                os.environ[datasets.CACHE_ENV_VAR] = cache
                started, started_cpu = time.perf_counter(), _cpu_seconds()
                (x_train, _), (x_test, _), _ = datasets.load_dataset(name, data_dir, download=False, **options)
                first.append(time.perf_counter() - started)
                first_cpu.append(_cpu_seconds() - started_cpu)
                del x_train, x_test
                started = time.perf_counter()
                (x_train, _), (x_test, _), _ = datasets.load_dataset(name, data_dir, download=False, **options)
                cached.append(time.perf_counter() - started)
                images = len(x_train) + len(x_test)
    finally:
        if previous is None:
            os.environ.pop(datasets.CACHE_ENV_VAR, None)
        else:
            os.environ[datasets.CACHE_ENV_VAR] = previous
    target_first, target_cached = TARGETS[(name, source.form)]
    return {
        "dataset": name,
        "form": source.form,
        "source": str(source.path),
        "images": images,
        "first_s": [round(t, 3) for t in first],
        "cached_s": [round(t, 3) for t in cached],
        "first_best_s": round(min(first), 3),
        "first_median_s": round(statistics.median(first), 3),
        "first_cpu_s": [round(t, 2) for t in first_cpu],
        "cached_best_s": round(min(cached), 3),
        "cached_median_s": round(statistics.median(cached), 3),
        "target_first_s": target_first,
        "target_cached_s": target_cached,
    }


def run(data_dir=None, repeat: int = 3) -> dict:
    """Time every dataset form found in ``data_dir`` (default: ``RESNET_COURSE_DATA``, else
    the repository's ``datasets/``), plus FER-2013 from a CSV written from its images."""
    from resnet_course import datasets

    data_dir = datasets.resolve_data_dir(data_dir)
    results = {
        "data_dir": str(data_dir),
        "repeat": repeat,
        "cpus": datasets.core.worker_count(),
        "python": platform.python_version(),
        "load_average_before": _load_average(),
        "rows": [],
    }
    for name in datasets.DATASET_NAMES:
        try:
            results["rows"].append(time_loads(name, data_dir, repeat))
        except datasets.DatasetError as error:
            results["rows"].append({"dataset": name, "error": str(error)})
    try:
        datasets.find_source("fer2013", data_dir)
    except datasets.DatasetError:
        pass
    else:
        with tempfile.TemporaryDirectory() as scratch:
            csv_path = write_fer2013_csv(data_dir, Path(scratch) / "fer2013" / "fer2013.csv")
            row = time_loads("fer2013", scratch, repeat)
            row["source"] = f"fer2013.csv written from {data_dir / 'fer2013'} ({csv_path.stat().st_size:,} bytes)"
            results["rows"].append(row)
    results["load_average_after"] = _load_average()
    return results


def markdown(results: dict) -> str:
    lines = [
        f"Dataset load times, best (median) of {results['repeat']}, on {results['cpus']} cores; "
        f"load average before {results['load_average_before']}, after {results['load_average_after']}. "
        "First load CPU: the median CPU seconds of this process and its decoding workers.",
        "",
        "| dataset | form | images | first load (s) | target | first load CPU (s) | cached load (s) | target |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in results["rows"]:
        if "error" in row:
            lines.append(f"| {row['dataset']} | not found | | | | | | |")
            continue

        def cell(best, median, target):
            mark = "ok" if best < target else "SLOW"
            return f"{best:.2f} ({median:.2f}) {mark}"

        lines.append(
            f"| {row['dataset']} | {row['form']} | {row['images']:,} | "
            f"{cell(row['first_best_s'], row['first_median_s'], row['target_first_s'])} | < {row['target_first_s']:g} | "
            f"{statistics.median(row['first_cpu_s']):.2f} | "
            f"{cell(row['cached_best_s'], row['cached_median_s'], row['target_cached_s'])} | < {row['target_cached_s']:g} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="default: $RESNET_COURSE_DATA, else datasets/")
    parser.add_argument("--repeat", type=int, default=3, help="loads per form (default 3)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)
    results = run(args.data_dir, repeat=args.repeat)
    print(markdown(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
