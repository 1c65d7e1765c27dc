"""Exact Hamming top-k: semcbir_fast (C++ at each SIMD level, numba) vs faiss vs NumPy.

Run from the repository root::

    PYTHONPATH=python .venv/bin/python -m pytest bench/bench_hamming.py --benchmark-only \
        --benchmark-group-by=group --benchmark-columns=min,median,rounds \
        --benchmark-json=bench_hamming.json
    .venv/bin/python bench/summarize.py bench_hamming.json

Cases: code width 32 bytes (256 bits) and 6000 bytes (48,000 bits = a real SBS code of
150 classes x 64 blocks); database N = 10,000 and 100,000 codes (100k x 6000 B = 600 MB,
generated once per session with a fixed seed); nq = 1 and 64 queries; threads 1 and 2;
k = 10. The data are uniform random bytes (same arrays for every peer); queries are fresh
random codes, plus copies of database rows so that distance 0 and ties occur.

Peers, in one pytest-benchmark group per (width, N, nq, threads):
- ``cpp-<isa>``: ``hamming_topk`` with the C++ backend forced to each available SIMD level;
- ``numba``: the numba backend;
- ``faiss``: ``faiss.IndexBinaryFlat`` (threads via ``faiss.omp_set_num_threads``);
- ``numpy``: ``np.bitwise_count`` over uint64 words + ``argpartition`` (N = 10k only,
  threads = 1 only: NumPy is single-threaded).

``extra_info`` records: ``queries_per_s`` (nq / median s); ``db_gbps`` = N * width /
median s, the database bytes streamed per second in one pass (for nq > 1 all queries are
answered in that pass); ``compared_gbps`` = nq * N * width / median s, the code bytes
compared per second; the ISA, threads and sizes. ``summarize.py`` adds the ratio to faiss.

Correctness is checked in every case, outside the timed region: distances must equal
faiss's exactly and the ids must equal faiss's up to tie order (the same set of ids at
distances below the k-th distance; ids at the k-th distance must really be at that
distance); for the 10k cases the result must also equal the NumPy reference exactly
(ties by smaller id).
"""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import semcbir_fast as sf
from reference import INT32_MAX, ref_hamming_matrix, ref_topk

try:
    import faiss
except ImportError:  # pragma: no cover
    faiss = None

K = 10
WIDTHS = (32, 6000)  # bytes: 256 bits, and 150 classes x 64 blocks x 5 bits = 48,000 bits
SIZES = (10_000, 100_000)
NQS = (1, 64)
THREADS = (1, 2)
SEED = 20240611


# --------------------------------------------------------------------------------------
# data (generated once per session)
# --------------------------------------------------------------------------------------
@functools.cache
def database(width: int, n: int) -> np.ndarray:
    """N random codes; the 10k database is the prefix of the 100k one."""
    rng = np.random.default_rng([SEED, width])
    full = rng.integers(0, 256, size=(max(SIZES), width), dtype=np.uint8)
    return full if n == full.shape[0] else full[:n]


@functools.cache
def queries(width: int, n: int, nq: int) -> np.ndarray:
    rng = np.random.default_rng([SEED, width, n, nq])
    q = rng.integers(0, 256, size=(nq, width), dtype=np.uint8)
    if nq > 1:  # half of the queries are database rows: distance 0 is the first hit
        q[: nq // 2] = database(width, n)[rng.integers(0, n, size=nq // 2)]
    return np.ascontiguousarray(q)


@functools.cache
def faiss_index(width: int, n: int):
    index = faiss.IndexBinaryFlat(width * 8)
    index.add(database(width, n))
    return index


@functools.cache
def faiss_result(width: int, n: int, nq: int):
    d, i = faiss_index(width, n).search(queries(width, n, nq), K)
    return d.astype(np.int32), i.astype(np.int64)


@functools.cache
def numpy_result(width: int, n: int, nq: int):
    return numpy_topk(queries(width, n, nq), database(width, n), K)


def numpy_topk(q: np.ndarray, db: np.ndarray, k: int):
    """NumPy peer: popcount over uint64 words, argpartition, ties by smaller id."""
    q64 = q.view(np.uint64) if q.shape[1] % 8 == 0 else q
    db64 = db.view(np.uint64) if db.shape[1] % 8 == 0 else db
    nq, n = q.shape[0], db.shape[0]
    dist = np.full((nq, k), INT32_MAX, np.int32)
    ids = np.full((nq, k), -1, np.int64)
    kk = min(k, n)
    for i in range(nq):
        d = np.bitwise_count(db64 ^ q64[i]).sum(axis=1, dtype=np.int64)
        kth = np.partition(d, kk - 1)[kk - 1]
        cand = np.flatnonzero(d <= kth)  # ascending ids
        order = cand[np.argsort(d[cand], kind="stable")][:kk]
        ids[i, :kk] = order
        dist[i, :kk] = d[order]
    return dist, ids


# --------------------------------------------------------------------------------------
# correctness
# --------------------------------------------------------------------------------------
def check_against_faiss(dist, ids, width, n, nq):
    fd, fi = faiss_result(width, n, nq)
    assert np.array_equal(dist, fd), "distances differ from faiss"
    for r in range(nq):
        kth = dist[r, -1]
        ours = set(ids[r][dist[r] < kth].tolist())
        theirs = set(fi[r][fd[r] < kth].tolist())
        assert ours == theirs, f"row {r}: ids below the k-th distance differ from faiss"
        at_kth = ids[r][dist[r] == kth]
        real = ref_hamming_matrix(queries(width, n, nq)[r : r + 1], database(width, n)[at_kth])
        assert (real == kth).all(), f"row {r}: ids at the k-th distance are not at it"


def check_result(dist, ids, width, n, nq):
    assert dist.shape == (nq, K) and ids.shape == (nq, K)
    assert dist.dtype == np.int32 and ids.dtype == np.int64
    if faiss is not None:
        check_against_faiss(dist, ids, width, n, nq)
    if n <= 10_000:
        nd, ni = numpy_result(width, n, nq)
        assert np.array_equal(dist, nd) and np.array_equal(ids, ni), "differs from NumPy"


def test_numpy_peer_matches_reference():
    """The NumPy peer itself against tests/reference.py (tiny sizes)."""
    rng = np.random.default_rng(0)
    for width in (8, 32, 7):
        db = rng.integers(0, 4, size=(500, width), dtype=np.uint8)  # many ties
        q = rng.integers(0, 4, size=(5, width), dtype=np.uint8)
        for k in (1, 10, 500, 501):
            got = numpy_topk(q, db, k)
            ref = ref_topk(q, db, k)
            assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1])


# --------------------------------------------------------------------------------------
# benchmark
# --------------------------------------------------------------------------------------
def _impls() -> list[str]:
    out = []
    prev = sf.backend()
    try:
        sf.set_backend("cpp")
        out += [f"cpp-{isa}" for isa in reversed(sf.available_isas())]  # best first
    except RuntimeError:
        pass
    finally:
        sf.set_backend(prev)
    return out + ["numba", "faiss", "numpy"]


def run_timed(benchmark, fn, *args, target_s: float = 1.5, **kwargs):
    """One probe call (also the warm-up) sizes the run: about target_s of timing, at least
    one round; calls under 2 ms are repeated (iterations) so the timer resolution is moot."""
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    est = max(time.perf_counter() - t0, 1e-7)
    iterations = max(1, int(2e-3 / est))
    rounds = int(max(1, min(30, target_s / (est * iterations))))
    return benchmark.pedantic(fn, args=args, kwargs=kwargs, rounds=rounds, iterations=iterations)


class _Backend:
    """Select a semcbir_fast backend/ISA for one case, restore the previous state after."""

    def __init__(self, impl: str):
        self.impl = impl

    def __enter__(self):
        self.prev = sf.backend()
        try:
            sf.set_backend("cpp")
            self.prev_isa = sf.active_isa()
        except RuntimeError:  # no C++ build: only "numba" can run
            self.prev_isa = None
        name, _, isa = self.impl.partition("-")
        sf.set_backend(name)
        if isa:
            sf.set_isa(isa)
        return self

    def __exit__(self, *exc):
        if self.prev_isa is not None:
            sf.set_backend("cpp")
            sf.set_isa(self.prev_isa)
        sf.set_backend(self.prev)


@pytest.mark.parametrize("threads", THREADS, ids=lambda v: f"t{v}")
@pytest.mark.parametrize("nq", NQS, ids=lambda v: f"nq{v}")
@pytest.mark.parametrize("n", SIZES, ids=lambda v: f"N{v // 1000}k")
@pytest.mark.parametrize("width", WIDTHS, ids=lambda v: f"w{v}B")
@pytest.mark.parametrize("impl", _impls())
def test_hamming_topk(benchmark, impl, width, n, nq, threads):
    if impl == "numpy" and (n > 10_000 or threads != 1):
        pytest.skip("NumPy peer: N = 10k and threads = 1 only")
    if impl == "faiss" and faiss is None:
        pytest.skip("faiss not installed")
    if impl.startswith("cpp") and impl not in _impls():
        pytest.skip(f"{impl} not available")
    db = database(width, n)
    q = queries(width, n, nq)
    benchmark.group = f"topk w={width}B N={n} nq={nq} t={threads}"
    info = {
        "op": "hamming_topk",
        "impl": impl,
        "width_bytes": width,
        "width_bits": width * 8,
        "n": n,
        "nq": nq,
        "k": K,
        "threads": threads,
        "data": "uniform random bytes",
    }

    if impl == "faiss":
        index = faiss_index(width, n)
        prev = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(threads)
        try:
            d, i = run_timed(benchmark, index.search, q, K)
        finally:
            faiss.omp_set_num_threads(prev)
        dist, ids = d.astype(np.int32), i.astype(np.int64)
        info["isa"] = f"faiss {faiss.__version__}"
        info["faiss_compile_options"] = faiss.get_compile_options()
        # faiss's own tie order: check distances and ids below the k-th distance only
        check_against_faiss(dist, ids, width, n, nq)
    elif impl == "numpy":
        dist, ids = run_timed(benchmark, numpy_topk, q, db, K)
        info["isa"] = "numpy"
        check_result(dist, ids, width, n, nq)
    else:
        with _Backend(impl):
            info["backend"], info["isa"] = sf.backend(), sf.active_isa()
            sf.hamming_topk(q[:1], db[:100], K, threads=threads)  # warm-up (numba JIT)
            dist, ids = run_timed(benchmark, sf.hamming_topk, q, db, K, threads=threads)
        check_result(dist, ids, width, n, nq)

    t = benchmark.stats.stats.median
    info.update(
        seconds_median=t,
        queries_per_s=nq / t,
        db_gbps=n * width / t / 1e9,
        compared_gbps=nq * n * width / t / 1e9,
    )
    benchmark.extra_info.update(info)


@pytest.mark.parametrize("width", (32, 560, 6000), ids=lambda v: f"w{v}B")
@pytest.mark.parametrize("impl", [i for i in _impls() if i not in ("faiss",)])
def test_hamming_distances(benchmark, impl, width):
    """All-pairs distances, 64 x 10k, threads = 1 (the kernel without the heap)."""
    db = (
        database(width, 100_000)[:10_000]
        if width in WIDTHS
        else (np.random.default_rng(width).integers(0, 256, size=(10_000, width), dtype=np.uint8))
    )
    q = np.ascontiguousarray(db[:64])
    benchmark.group = f"distances 64x10k w={width}B t=1"
    if impl == "numpy":
        out = run_timed(benchmark, ref_hamming_matrix, q, db)
        isa = "numpy"
    else:
        with _Backend(impl):
            isa = sf.active_isa()
            sf.hamming_distances(q[:1], db[:10], threads=1)
            out = run_timed(benchmark, sf.hamming_distances, q, db, threads=1)
        assert np.array_equal(out[:4], ref_hamming_matrix(q[:4], db)), "differs from reference"
    t = benchmark.stats.stats.median
    benchmark.extra_info.update(
        op="hamming_distances",
        impl=impl,
        isa=isa,
        width_bytes=width,
        n=10_000,
        nq=64,
        threads=1,
        seconds_median=t,
        compared_gbps=64 * 10_000 * width / t / 1e9,
    )
