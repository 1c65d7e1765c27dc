"""Exact float top-k: semcbir_fast.search.float_topk (each backend) vs faiss IndexFlat vs NumPy.

Two ways to run it, from the repository root:

    # pytest-benchmark, one group per case
    PYTHONPATH=python .venv/bin/python -m pytest bench/bench_float_search.py --benchmark-only \
        --benchmark-group-by=group --benchmark-columns=min,median,rounds
    # one run, one Markdown table with the ratio to faiss (what docs/results_deep.md shows)
    PYTHONPATH=python .venv/bin/python bench/bench_float_search.py [--quick]

Cases: metric L2 / inner product / L1; database N = 20,000 vectors of D = 128 and 1,280
(the EfficientNet-Lite0 GAP width; 100 MB float32), unit-normalised Gaussian floats with a
fixed seed; nq = 1 and 100 queries (half of them copies of database rows); k = 10 and 100;
threads 1 and all. ``--quick`` runs N = 5,000 only.

Peers:
- ``semcbir-<backend>``: ``float_topk(..., backend=...)`` for every available backend
  (``faiss`` = faiss.knn + our tie rule, ``numpy`` = BLAS blocks + tie-exact selection,
  ``numba`` = our L1 kernel);
- ``faiss-flat``: ``faiss.IndexFlat`` (L2 / IP / L1) built once, searched (ties arbitrary);
- ``numpy-naive``: the full distance matrix in float32 then ``argsort(kind="stable")``.

Correctness is checked in every case, outside the timed region: distances agree with the
float64 oracle to 1e-3 (3e-3 for L2, whose float32 BLAS expansion rounds near-duplicates
to ~1e-3 as faiss's does) and ids agree wherever the oracle's distances are more than 1e-4
apart (ties and near-ties may legitimately differ between float32 kernels).
"""

from __future__ import annotations

import argparse
import functools
import os
import time

import numpy as np
import pytest
from semcbir_fast.search import available_backends, float_topk

try:
    import faiss
except ImportError:  # pragma: no cover
    faiss = None

SEED = 20240612
METRICS = ("l2", "ip", "l1")
DIMS = (128, 1280)
NQS = (1, 100)
KS = (10, 100)
N_FULL = 20_000


@functools.cache
def database(n: int, d: int) -> np.ndarray:
    rng = np.random.default_rng([SEED, n, d])
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@functools.cache
def queries(n: int, d: int, nq: int) -> np.ndarray:
    rng = np.random.default_rng([SEED, n, d, nq])
    q = rng.standard_normal((nq, d)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    if nq > 1:
        q[: nq // 2] = database(n, d)[rng.integers(0, n, nq // 2)]
    return np.ascontiguousarray(q)


def oracle(q: np.ndarray, x: np.ndarray, k: int, metric: str):
    q64, x64 = q.astype(np.float64), x.astype(np.float64)
    if metric == "l2":
        d = np.sqrt(np.maximum((q64 ** 2).sum(1)[:, None] + (x64 ** 2).sum(1)[None]
                               - 2 * q64 @ x64.T, 0))
    elif metric == "ip":
        d = -(q64 @ x64.T)
    else:
        d = np.stack([np.abs(x64 - r).sum(1) for r in q64])
    o = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, o, 1), o


@functools.cache
def oracle_cached(n, d, nq, k, metric):
    return oracle(queries(n, d, nq), database(n, d), k, metric)


def check(dist, ids, n, d, nq, k, metric):
    od, oi = oracle_cached(n, d, nq, k, metric)
    assert dist.shape == (nq, k) and ids.shape == (nq, k)
    # float32 BLAS L2 of near-duplicates: |error| ~ sqrt(1e-7 * 2) ~ 1e-3 (as faiss)
    np.testing.assert_allclose(dist, od, atol=3e-3 if metric == "l2" else 1e-3, rtol=1e-4)
    gap = np.diff(od, axis=1, prepend=-np.inf, append=np.inf)
    clear = (gap[:, :-1] > 1e-4) & (gap[:, 1:] > 1e-4)
    assert (ids[clear] == oi[clear]).all(), "ids differ from the oracle"


@functools.cache
def faiss_flat(n: int, d: int, metric: str):
    m = {"l2": faiss.METRIC_L2, "ip": faiss.METRIC_INNER_PRODUCT, "l1": faiss.METRIC_L1}[metric]
    index = faiss.IndexFlat(d, m)
    index.add(database(n, d))
    return index


def faiss_search(q, n, d, k, metric):
    dist, ids = faiss_flat(n, d, metric).search(q, k)
    if metric == "l2":
        dist = np.sqrt(np.maximum(dist, 0))
    elif metric == "ip":
        dist = -dist
    return dist, ids


def numpy_naive(q, x, k, metric):
    if metric == "l1":
        dm = np.stack([np.abs(x - r).sum(1) for r in q])
    elif metric == "ip":
        dm = -(q @ x.T)
    else:
        dm = np.sqrt(np.maximum((q * q).sum(1)[:, None] + (x * x).sum(1)[None] - 2 * q @ x.T, 0))
    o = np.argsort(dm, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dm, o, 1), o


def peers(metric: str) -> list[str]:
    out = [f"semcbir-{b}" for b in available_backends(metric)]
    if faiss is not None:
        out.append("faiss-flat")
    return out + ["numpy-naive"]


def run(peer: str, n: int, d: int, nq: int, k: int, metric: str, threads: int):
    q, x = queries(n, d, nq), database(n, d)
    if peer.startswith("semcbir-"):
        return float_topk(q, x, k, metric=metric, threads=threads, backend=peer[8:])
    if peer == "faiss-flat":
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(threads or os.cpu_count() or 1)
        try:
            return faiss_search(q, n, d, k, metric)
        finally:
            faiss.omp_set_num_threads(before)
    return numpy_naive(q, x, k, metric)


def _cases(n: int):
    for metric in METRICS:
        for d in DIMS:
            for nq in NQS:
                for k in KS:
                    for threads in (1, 0):
                        yield metric, n, d, nq, k, threads


@pytest.mark.parametrize("metric,n,d,nq,k,threads", list(_cases(N_FULL)))
@pytest.mark.parametrize("peer", ["semcbir-auto", "semcbir-faiss", "semcbir-numpy",
                                  "semcbir-numba", "faiss-flat", "numpy-naive"])
def test_float_topk(benchmark, peer, metric, n, d, nq, k, threads):
    pytest.importorskip("pytest_benchmark")
    if peer != "semcbir-auto" and peer not in peers(metric):
        pytest.skip(f"{peer} does not run {metric} here")
    if peer == "numpy-naive" and (threads != 1 or metric == "l1" and nq > 1):
        pytest.skip("NumPy peer: single-threaded cases, L1 with one query")
    benchmark.group = f"float_topk {metric} N={n} D={d} nq={nq} k={k} threads={threads}"
    benchmark.extra_info.update(metric=metric, n=n, d=d, nq=nq, k=k, threads=threads)
    dist, ids = run(peer, n, d, nq, k, metric, threads)
    check(dist, ids, n, d, nq, k, metric)
    benchmark(run, peer, n, d, nq, k, metric, threads)


def _time(fn, target: float = 0.6) -> float:
    fn()
    ts = []
    t_end = time.perf_counter() + target
    while len(ts) < 3 or (time.perf_counter() < t_end and len(ts) < 30):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="N = 5,000 only")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 0])
    args = ap.parse_args()
    n = 5_000 if args.quick else N_FULL
    print(f"N={n}, cpu_count={os.cpu_count()}, faiss {getattr(faiss, '__version__', '-')}")
    print("| metric | D | nq | k | threads | peer | ms | vs faiss-flat |")
    print("|---|---|---|---|---|---|---|---|")
    for metric, n_, d, nq, k, threads in _cases(n):
        if threads not in args.threads:
            continue
        times = {}
        for peer in peers(metric):
            if peer == "numpy-naive" and (threads != 1 or metric == "l1" and nq > 1):
                continue
            dist, ids = run(peer, n_, d, nq, k, metric, threads)
            check(dist, ids, n_, d, nq, k, metric)
            times[peer] = _time(lambda a=(peer, n_, d, nq, k, metric, threads): run(*a))
        ref = times.get("faiss-flat")
        for peer, t in times.items():
            ratio = f"{ref / t:.2f}" if ref else "-"
            print(f"| {metric} | {d} | {nq} | {k} | {threads or 'all'} | {peer} | "
                  f"{1e3 * t:.2f} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
