"""The machine's practical limit: GFLOP/s of a large matrix multiplication.

``tf.linalg.matmul`` of two n x n matrices under ``tf.function``, in the same
process and with the same threads as the model benchmarks (TensorFlow's
oneDNN/Eigen kernels, the ones the convolutions use). A matmul of 2 n^3 FLOPs
is about the best a CPU does, so a model's achieved GFLOP/s divided by this is
its efficiency. The best of ``repeats`` runs is kept: noise only ever slows a
run down. bfloat16 is measured too: on CPUs with AVX512_BF16 (or AMX) it is up
to twice as fast, which bounds what mixed_bfloat16 training can gain.
"""

from __future__ import annotations

import time


def matmul_gflops(n: int = 4096, dtype: str = "float32", repeats: int = 5) -> dict:
    """``{"dtype", "n", "best_s", "gflops"}`` of the best of ``repeats`` n x n matmuls."""
    import tensorflow as tf

    a = tf.cast(tf.random.stateless_normal((n, n), seed=(1, 2)), dtype)
    b = tf.cast(tf.random.stateless_normal((n, n), seed=(3, 4)), dtype)
    matmul = tf.function(lambda a, b: tf.reduce_sum(tf.cast(tf.linalg.matmul(a, b)[:1, :1], tf.float32)))
    matmul(a, b).numpy()  # trace and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).numpy()
        times.append(time.perf_counter() - start)
    best = min(times)
    return {"dtype": dtype, "n": n, "best_s": best, "times_s": times, "gflops": 2 * n**3 / best / 1e9,
            "how": "tf.linalg.matmul under tf.function (TensorFlow's CPU kernels, default threads)"}


def make_probe(n: int = 4096, dtype: str = "float32", repeats: int = 2):
    """A function returning the GFLOP/s of the best of ``repeats`` n x n matmuls, ready to call.

    Called once per round next to the models being timed, it measures the limit under the
    same background load as they run, so their share of it is a ratio of neighbours.
    """
    import tensorflow as tf

    a = tf.cast(tf.random.stateless_normal((n, n), seed=(1, 2)), dtype)
    b = tf.cast(tf.random.stateless_normal((n, n), seed=(3, 4)), dtype)
    matmul = tf.function(lambda a, b: tf.reduce_sum(tf.cast(tf.linalg.matmul(a, b)[:1, :1], tf.float32)))
    matmul(a, b).numpy()

    def probe() -> float:
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            matmul(a, b).numpy()
            best = min(best, time.perf_counter() - start)
        return 2 * n**3 / best / 1e9

    return probe


def numpy_matmul_gflops(n: int = 4096, repeats: int = 4) -> dict:
    """The same with numpy's BLAS (float32), for comparison."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    best = min(times)
    return {"dtype": "float32", "n": n, "best_s": best, "times_s": times, "gflops": 2 * n**3 / best / 1e9,
            "how": "numpy float32 @ (its bundled BLAS, default threads)"}


def run(n: int = 4096, repeats: int = 5, with_numpy: bool = True) -> dict:
    results = {"float32": matmul_gflops(n, "float32", repeats), "bfloat16": matmul_gflops(n, "bfloat16", repeats)}
    if with_numpy:
        results["numpy_float32"] = numpy_matmul_gflops(n, max(2, repeats - 1))
    return results
