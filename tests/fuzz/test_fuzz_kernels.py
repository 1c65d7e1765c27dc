"""Fuzz / property suite of the kernels (issue 11): random shapes, dtypes, values and integer
arguments (huge, negative, bool, NumPy scalars, k and threads extremes, 0 columns, huge
float values) through the public API, on every backend and SIMD level this machine has.

Each property: the call returns what the NumPy oracle (tests/reference.py, or a direct sum
here) returns, bit for bit across backends, or raises ValueError / MemoryError -- never
another exception, a crash, an abort or a runaway allocation (the peak RSS is watched).
Items of the issue each property would have found: 1 (threads that cannot start:
``test_threads_under_memory_limit``), 3 (levels x classes: ``test_encode_arguments``),
4 (k: ``test_topk_k_extremes``), 8 (> 2**31 pixels per block: ``test_huge_blocks``), 9
(sparse L2 cancellation and 0 columns: ``test_sparse_l2``), 11 (integer arguments: every
``*_arguments`` / ``*_extremes`` test).

Example counts are bounded for CI: ``SEMCBIR_FUZZ_EXAMPLES`` scales them (default 1 = the
CI budget, e.g. 10 for a longer local run). ``SEMCBIR_FUZZ_BACKENDS=cpp`` keeps to the C++
levels (the sanitizer job of .ci/run).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import semcbir_fast as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import use_backend
from helpers import available_bytes
from reference import ref_encode_sbs, ref_topk

SCALE = max(1, int(os.environ.get("SEMCBIR_FUZZ_EXAMPLES", "1")))
# The documented limits (semcbir_fast._convert / layout), spelled out so that the suite also
# runs against older builds of the library.
MAX_K = 2**24
MAX_RESULT_SLOTS = 2**28
MAX_CODE_BYTES = 2**22
UNDER_ASAN = "asan" in os.environ.get("LD_PRELOAD", "")


def _hyp(n: int) -> settings:
    return settings(max_examples=n * SCALE, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


def _specs() -> list[str]:
    out = []
    prev = sf.backend()
    try:
        sf.set_backend("cpp")
        out += [f"cpp-{isa}" for isa in sf.available_isas()]
    except RuntimeError:
        pass
    try:
        sf.set_backend("numba")
        out.append("numba")
    except ImportError:
        pass
    sf.set_backend(prev)
    only = os.environ.get("SEMCBIR_FUZZ_BACKENDS", "")
    return [s for s in out if s.startswith(only)] if only else out


SPECS = _specs()
ACCEPTED = (ValueError, MemoryError)  # the only exceptions a call may raise


def _rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@contextmanager
def bounded_memory(limit: int = 1 << 30):
    """Fails when the process's peak RSS grows by more than ``limit`` inside the block."""
    before = _rss_bytes()
    yield
    grown = _rss_bytes() - before
    assert grown <= limit, f"peak RSS grew by {grown / 2**20:.0f} MiB"


def on_all_backends(fn):
    """fn() on every backend / SIMD level: the results, or the exception types, per spec."""
    out = {}
    for spec in SPECS:
        with use_backend(spec):
            try:
                out[spec] = ("ok", fn())
            except ACCEPTED as exc:
                out[spec] = ("error", type(exc))
    return out


def assert_same(results: dict, what: str) -> None:
    items = list(results.items())
    kind0, val0 = items[0][1]
    for spec, (kind, val) in items[1:]:
        assert kind == kind0, (what, items[0][0], kind0, val0 if kind0 == "error" else "",
                               spec, kind, val if kind == "error" else "")
        if kind == "ok":
            for a, b in zip(val0 if isinstance(val0, tuple) else (val0,),
                            val if isinstance(val, tuple) else (val,)):
                assert a.dtype == b.dtype and a.shape == b.shape, (what, spec)
                assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), (what, spec)


# --------------------------------------------------------------------------------------
# integer arguments: the values users pass and the ones that break C conversions
# --------------------------------------------------------------------------------------
EDGE_INTS = [0, 1, -1, 2, 7, 63, 64, 1023, 1024, 1025, 2000, 2**24, 2**24 + 1, 10**8,
             2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**62, 2**63 - 1, 2**63, 2**64, 2**100,
             -(2**31), -(2**63), -(2**63) - 1]
NP_INT_TYPES = [np.int8, np.uint8, np.int16, np.int32, np.int64, np.uint32, np.uint64]


SMALL_INTS = st.integers(-3, 40)


@st.composite
def int_args(draw, small=SMALL_INTS):
    """An integer-like argument: Python int (edge or small), bool, NumPy integer scalar, or a
    non-integer (float, str, None) that must be refused."""
    kind = draw(st.sampled_from(["small", "edge", "edge", "bool", "numpy", "other"]))
    if kind == "small":
        return draw(small)
    if kind == "edge":
        return draw(st.sampled_from(EDGE_INTS))
    if kind == "bool":
        return draw(st.booleans())
    if kind == "numpy":
        t = draw(st.sampled_from(NP_INT_TYPES))
        info = np.iinfo(t)
        v = draw(st.one_of(st.sampled_from([int(info.min), int(info.max), 0, 1]),
                           st.integers(int(info.min), int(info.max))))
        return t(v)
    return draw(st.sampled_from([1.0, 2.5, "3", None, float("nan")]))


def _as_valid_int(v, lo, hi):
    """The int the library must accept, or None when it must refuse v (ValueError)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        return None
    v = int(v)
    return v if lo <= v <= hi else None


# --------------------------------------------------------------------------------------
# encode_sbs
# --------------------------------------------------------------------------------------
DTYPES = [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64, np.int64]


@st.composite
def label_maps(draw):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    info = np.iinfo(dtype)
    m = draw(st.integers(1, int(min(info.max + 1, 300))))
    n = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    maps = []
    for _ in range(n):
        h = draw(st.integers(1, 24))
        w = draw(st.sampled_from([1, 2, 3, 7, 31, 32, 33, 63, 64, 65, 100, 129]))
        lab = rng.integers(0, max(1, min(m, 6)), (h, w)).astype(dtype)
        void = rng.random((h, w)) < 0.15
        extremes = np.array([info.min, info.max, min(info.max, m), min(info.max, m + 1)],
                            dtype=dtype)
        lab[void] = rng.choice(extremes, size=int(void.sum()))
        maps.append(lab)
    ignore = draw(st.one_of(st.none(), st.integers(-2, m + 1)))
    return maps, m, ignore


@_hyp(80)
@given(case=label_maps(), levels=st.integers(0, 5), pyramid=st.booleans(),
       threads=st.sampled_from([0, 1, 2, 3, 1024, 2000, 2**31 - 1, np.int64(5)]))
def test_encode_matches_reference(case, levels, pyramid, threads):
    maps, m, ignore = case
    want = np.stack([ref_encode_sbs(x, m, levels, ignore_index=ignore, pyramid=pyramid)
                     for x in maps])
    results = on_all_backends(lambda: sf.encode_sbs(maps, num_classes=m, levels=levels,
                                                    ignore_index=ignore, pyramid=pyramid,
                                                    threads=threads))
    for spec, (kind, got) in results.items():
        assert kind == "ok", (spec, got)
        assert np.array_equal(got, want), (spec, m, levels, pyramid, ignore)


@_hyp(150)
@given(levels=int_args(st.integers(0, 12)), num_classes=int_args(st.integers(1, 65536)),
       threads=int_args(), ignore=st.one_of(st.none(), int_args()), pyramid=st.booleans(),
       shape=st.sampled_from([(1, 1), (2, 3), (5, 4)]))
def test_encode_arguments(levels, num_classes, threads, ignore, pyramid, shape):
    """Any integer-like arguments: a result (checked) or ValueError / MemoryError; the code
    size limit bounds levels x classes (levels 12 with 150 classes asked for 7.5 GiB)."""
    lab = (np.arange(shape[0] * shape[1]) % 3).reshape(shape).astype(np.int32)
    lv = _as_valid_int(levels, 0, 12)
    m = _as_valid_int(num_classes, 1, 65536)
    t = _as_valid_int(threads, 0, 2**31 - 1)
    ig = None if ignore is None else _as_valid_int(ignore, -(2**63), 2**63 - 1)
    valid = None not in (lv, m, t) and (ignore is None or ig is not None)
    if valid:
        blocks = sum(4**x for x in (range(lv + 1) if pyramid else (lv,)))
        valid = (5 * m * blocks + 7) // 8 <= MAX_CODE_BYTES
    with bounded_memory():
        results = on_all_backends(lambda: sf.encode_sbs(
            lab, num_classes=num_classes, levels=levels, ignore_index=ignore,
            pyramid=pyramid, threads=threads))
    for spec, (kind, got) in results.items():
        if not valid:
            assert kind == "error" and got is ValueError, (spec, kind, got)
            continue
        assert kind == "ok", (spec, got)
        if lv <= 4 and m <= 300:
            assert np.array_equal(got, ref_encode_sbs(lab, m, lv, ignore_index=ig,
                                                      pyramid=pyramid)), spec
    assert_same(results, "encode_sbs")


@_hyp(3)
@given(extra=st.integers(-(2**20), 2**22), rows=st.sampled_from([1, 2, 2**15 + 2**4]),
       marks=st.lists(st.integers(0, 2**40), max_size=4), pyramid=st.booleans(),
       spec_i=st.integers(0, 7))
def test_huge_blocks(extra, rows, marks, pyramid, spec_i):
    """Maps of about 2**31 pixels (zero pages: no memory is written) and a few marks of class
    1: the proportion codes against counts computed here (int32 counters overflowed)."""
    if available_bytes() < 8 << 30:
        pytest.skip("needs 8 GiB of free memory")
    specs = [s for s in SPECS if s.startswith("cpp")]
    if not specs:
        pytest.skip("the C++ encoder")
    total = 2**31 + extra
    w = -(-total // rows)
    lab = np.zeros((rows, w), np.uint8)
    pos = sorted({m % (rows * w) for m in marks})
    lab.reshape(-1)[pos] = 1
    levels = 1 if pyramid else 0
    lay = sf.sbs_layout(2, levels, pyramid)
    with use_backend(specs[spec_i % len(specs)]):
        _, level = sf.decode_sbs(sf.encode_sbs(lab, num_classes=2, levels=levels,
                                               pyramid=pyramid), lay)
    n1 = len(pos)
    n = rows * w
    want0 = -(-4 * (n - n1) // n)  # ceil(4 P), P = count / total
    want1 = -(-4 * n1 // n) if n1 else 0
    assert level[0].tolist() == [want0, want1], (rows, w, pos)


# --------------------------------------------------------------------------------------
# threads that cannot start: a child process under a random address-space limit
# --------------------------------------------------------------------------------------
@pytest.mark.skipif(UNDER_ASAN or not sys.platform.startswith("linux"),
                    reason="needs RLIMIT_AS (Linux, not under ASan)")
def test_threads_under_memory_limit():
    """Random item counts, thread counts up to 4096 and address-space limits from 64 MiB to
    1 GiB above the interpreter's: the results equal the single-threaded ones and the child
    exits 0 (an unstartable thread called std::terminate: exit 134)."""
    rng = np.random.default_rng(11)
    cases = sorted(((int(rng.integers(64, 1024)) << 20, int(rng.integers(1, 3000)),
                     int(rng.choice([2, 17, 1024, 1025, 4096])))
                    for _ in range(6 * SCALE)), reverse=True)
    child = textwrap.dedent(f"""
        import resource, sys
        import numpy as np, semcbir_fast as sf, scipy.sparse as sp
        def vm():
            for line in open("/proc/self/status"):
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
        base = vm() + (64 << 20)
        rng = np.random.default_rng(0)
        for extra, n, threads in {cases!r}:
            maps = [rng.integers(0, 3, (3, 5)).astype(np.uint8) for _ in range(n)]
            codes = rng.integers(0, 256, (n, 8), dtype=np.uint8)
            csr = sp.random(n, 50, density=0.1, format="csr", random_state=1, dtype=np.float32)
            want = (sf.encode_sbs(maps, num_classes=3, levels=1, threads=1),
                    *sf.hamming_topk(codes, codes, 3, threads=1),
                    *sf.sparse_l2_topk(csr, csr, 3, threads=1))
            hard = resource.getrlimit(resource.RLIMIT_AS)[1]
            resource.setrlimit(resource.RLIMIT_AS, (base + extra, hard))
            got = (sf.encode_sbs(maps, num_classes=3, levels=1, threads=threads),
                   *sf.hamming_topk(codes, codes, 3, threads=threads),
                   *sf.sparse_l2_topk(csr, csr, 3, threads=threads))
            assert all(np.array_equal(a, b) for a, b in zip(want, got)), (extra, n, threads)
            resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
        print("ok", len({cases!r}))
        """)
    python_dir = Path(sf.__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=f"{python_dir}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    for spec in [s for s in SPECS if s.startswith("cpp")][:1]:
        env["SEMCBIR_BACKEND"] = "cpp"
        env["SEMCBIR_ISA"] = spec.partition("-")[2]
        r = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True,
                           text=True, timeout=300, check=False)
        assert r.returncode == 0 and r.stdout.startswith("ok"), (r.returncode, r.stderr[-3000:])


# --------------------------------------------------------------------------------------
# Hamming top-k
# --------------------------------------------------------------------------------------
@_hyp(80)
@given(width=st.sampled_from([1, 7, 8, 9, 31, 32, 33, 64, 65]), nq=st.integers(0, 6),
       n=st.integers(0, 25), k=st.one_of(st.integers(1, 40), st.sampled_from([1000, 2**16])),
       threads=st.sampled_from([0, 1, 2, 1024, 2**31 - 1]), seed=st.integers(0, 2**32 - 1),
       density=st.sampled_from([None, 0.02, 0.5]))
def test_topk_matches_reference(width, nq, n, k, threads, seed, density):
    rng = np.random.default_rng(seed)
    if density is None:
        q = rng.integers(0, 256, (nq, width), dtype=np.uint8)
        db = rng.integers(0, 256, (n, width), dtype=np.uint8)
    else:  # many ties
        q = np.packbits(rng.random((nq, width * 8)) < density, axis=1)
        db = np.packbits(rng.random((n, width * 8)) < density, axis=1)
    want = ref_topk(q, db, k) if nq else (np.zeros((0, k), np.int32), np.zeros((0, k), np.int64))
    results = on_all_backends(lambda: sf.hamming_topk(q, db, k, threads=threads))
    for spec, (kind, got) in results.items():
        assert kind == "ok", (spec, got)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1]), spec
    dm = on_all_backends(lambda: sf.hamming_distances(q, db, threads=threads))
    assert_same(dm, "hamming_distances")


@_hyp(150)
@given(k=int_args(st.integers(-2, 50)), threads=int_args(), nq=st.sampled_from([0, 1, 3, 17]))
def test_topk_k_extremes(k, threads, nq):
    """k and threads of every kind: padding for k > N, ValueError above MAX_K or
    MAX_RESULT_SLOTS, never an allocation of the padding (k = 10**8 allocated 1.2 GB)."""
    rng = np.random.default_rng(1)
    q = rng.integers(0, 256, (nq, 16), dtype=np.uint8)
    db = rng.integers(0, 256, (3, 16), dtype=np.uint8)
    kv = _as_valid_int(k, 1, MAX_K)
    tv = _as_valid_int(threads, 0, 2**31 - 1)
    valid = kv is not None and tv is not None and nq * kv <= MAX_RESULT_SLOTS
    if valid and nq * kv > 2**20:
        return  # a legal but large result: not allocated here
    with bounded_memory(256 << 20):
        results = on_all_backends(lambda: sf.hamming_topk(q, db, k, threads=threads))
    for spec, (kind, got) in results.items():
        if not valid:
            assert kind == "error" and got is ValueError, (spec, kind, got, k, threads)
            continue
        assert kind == "ok", (spec, got)
        wd, wi = ref_topk(q, db, kv) if nq else (np.zeros((0, kv), np.int32),
                                                 np.zeros((0, kv), np.int64))
        assert np.array_equal(got[0], wd) and np.array_equal(got[1], wi), spec


@_hyp(60)
@given(k=int_args(st.integers(-2, 20)), removed=st.lists(st.integers(0, 9), max_size=5),
       radius=int_args(st.integers(-1, 200)), nq=st.integers(0, 4))
def test_sbs_index_search_extremes(k, removed, radius, nq):
    from semcbir_fast.index import SBSIndex

    lay = sf.sbs_layout(3, 1)
    rng = np.random.default_rng(5)
    codes = np.zeros((10, lay.stride), np.uint8)
    codes[:, : lay.nbytes] = rng.integers(0, 256, (10, lay.nbytes), dtype=np.uint8)
    codes[:, lay.nbytes - 1] &= 0xFF << (8 * lay.nbytes - lay.nbits) & 0xFF
    index = SBSIndex(lay)
    index.add(codes)
    index.remove(sorted(set(removed)))
    alive = np.setdiff1d(np.arange(10), removed)
    q = codes[rng.integers(0, 10, nq)]
    kv = _as_valid_int(k, 1, MAX_K)
    if kv is not None and nq * kv > 2**20:
        k = 7  # a legal but large result: not allocated here
        kv = 7
    with bounded_memory(256 << 20):
        try:
            d, i = index.search(q, k)
            assert kv is not None
        except ValueError:
            assert kv is None or nq * kv > MAX_RESULT_SLOTS
        else:
            wd, wi = ref_topk(q, codes[alive], kv) if nq else (np.zeros((0, kv)),) * 2
            wi = np.where(wi >= 0, alive[np.maximum(wi, 0)], -1) if nq else wi
            assert np.array_equal(d, wd) and np.array_equal(i, wi)
        rv = _as_valid_int(radius, 0, 2**200)
        try:
            lims, rd, ri = index.range_search(q, radius)
            assert rv is not None
        except ValueError:
            assert rv is None
        else:
            assert lims.shape == (nq + 1,) and (rd <= rv).all()
            assert np.isin(ri, alive).all()


# --------------------------------------------------------------------------------------
# sparse L2
# --------------------------------------------------------------------------------------
@st.composite
def csr_pairs(draw):
    """(queries, database) CSR matrices: 0..40 columns (0 included), values of one of
    several regimes, some database rows copied (or nudged by one ulp) into the queries."""
    cols = draw(st.sampled_from([0, 1, 2, 5, 17, 40]))
    nq, n = draw(st.integers(0, 6)), draw(st.integers(0, 30))
    regime = draw(st.sampled_from(["counts", "uniform", "huge", "offset", "tiny", "mixed"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    density = draw(st.sampled_from([0.1, 0.5, 1.0]))

    def values(shape):
        if regime == "counts":
            return rng.integers(0, 4, shape).astype(np.float32)
        if regime == "uniform":
            return rng.random(shape, dtype=np.float32)
        if regime == "huge":  # near the float32 limit: squares ~1e76, still finite in float64
            return (rng.choice([-1, 1], shape) * rng.uniform(1e30, 3e38, shape)).astype(np.float32)
        if regime == "offset":  # big common offset, small differences: the cancelling case
            base = np.float32(10.0 ** rng.integers(3, 8))  # + 0..2 stays exact in float32
            return (base + rng.integers(0, 3, shape)).astype(np.float32)
        if regime == "tiny":
            return rng.choice(np.array([1e-45, 1e-38, 3e-39, 0.0], np.float32), shape)
        return np.where(rng.random(shape) < 0.5, rng.integers(0, 3, shape),
                        rng.uniform(-1e6, 1e6, shape)).astype(np.float32)

    def matrix(rows):
        dense = values((rows, cols)) if cols else np.zeros((rows, 0), np.float32)
        dense[rng.random((rows, cols)) >= density] = 0
        return dense

    db = matrix(n)
    q = matrix(nq)
    for r in range(nq):
        if n and rng.random() < 0.4:
            q[r] = db[rng.integers(0, n)]
            if rng.random() < 0.5 and cols:
                c = rng.integers(0, cols)
                q[r, c] = np.nextafter(q[r, c], np.float32(np.inf))
    stored_zeros = draw(st.floats(0.0, 0.5))  # explicitly stored zeros (values 0 in the CSR)

    def to_csr(dense):
        keep = (dense != 0) | (rng.random(dense.shape) < stored_zeros)
        indptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.int64)
        rows, cols_ = np.nonzero(keep)
        return sp.csr_matrix((dense[rows, cols_], cols_.astype(np.int64), indptr),
                             shape=dense.shape)

    return to_csr(q), to_csr(db)


def _direct_d2(q: np.ndarray, d: np.ndarray) -> np.ndarray:
    """(nq, n) squared distances as the sum of (q_c - d_c)^2, in float64."""
    if q.shape[1] == 0:
        return np.zeros((q.shape[0], d.shape[0]))
    diff = q.astype(np.float64)[:, None, :] - d.astype(np.float64)[None, :, :]
    return (diff * diff).sum(axis=2)


@_hyp(200)
@given(pair=csr_pairs(), k=st.one_of(st.integers(1, 35), st.sampled_from([1000, 4096])),
       threads=st.sampled_from([0, 1, 2, 3, 1024, 2**31 - 1]))
def test_sparse_l2(pair, k, threads):
    """Every backend, SIMD level and path (one-shot, prebuilt index) gives the same bits; the
    distances are the direct ones to 1e-6 (|q|^2 + |d|^2 - 2 q.d cancelled to 0.0 for a true
    1.0) and the ranking is a top-k of them; 0 columns: all 0 then padding (2**61 bytes)."""
    mq, md = pair
    nq, n = mq.shape[0], md.shape[0]

    def both():
        one = sf.sparse_l2_topk(mq, md, k, threads=threads)
        idx = sf.SparseL2Index(md, threads=threads).search(mq, k, threads=threads)
        assert np.array_equal(one[0].view(np.uint32), idx[0].view(np.uint32))
        assert np.array_equal(one[1], idx[1])
        return one

    with bounded_memory(256 << 20):
        results = on_all_backends(both)
    assert_same(results, "sparse_l2")
    kind, (dist, ids) = next(iter(results.values()))
    assert kind == "ok"
    kk = min(k, n)
    assert (ids[:, kk:] == -1).all() and np.isinf(dist[:, kk:]).all()
    if not nq or not kk:
        return
    d2 = _direct_d2(mq.toarray(), md.toarray())
    got = dist[:, :kk].astype(np.float64)
    want = np.sqrt(np.take_along_axis(d2, ids[:, :kk], axis=1))
    big = want > np.finfo(np.float32).max  # beyond float32: +inf (the ranking is float64)
    assert np.isinf(got[big]).all()
    want32 = want[~big].astype(np.float32)  # float32 output: subnormals are coarse
    tol = np.maximum(1e-6 * want32, np.spacing(want32)).astype(np.float64)
    assert (np.abs(got[~big] - want32) <= tol).all(), (got[~big], want[~big])
    assert (np.sort(ids[:, :kk], axis=1)[:, 1:] != np.sort(ids[:, :kk], axis=1)[:, :-1]).all()
    kth = want[:, -1:]
    rest = np.ones((nq, n), bool)
    np.put_along_axis(rest, ids[:, :kk], False, axis=1)
    assert (np.sqrt(d2)[rest].reshape(nq, -1) >= kth * (1 - 1e-6)).all()  # a true top-k
    if mq.shape[1] == 0:
        assert (dist[:, :kk] == 0).all()


@_hyp(100)
@given(k=int_args(st.integers(-2, 30)), threads=int_args(), nq=st.sampled_from([0, 2, 17]))
def test_sparse_arguments(k, threads, nq):
    db = sp.csr_matrix(np.eye(3, 4, dtype=np.float32))
    q = sp.csr_matrix(np.ones((nq, 4), np.float32))
    kv = _as_valid_int(k, 1, MAX_K)
    tv = _as_valid_int(threads, 0, 2**31 - 1)
    valid = kv is not None and tv is not None and nq * kv <= MAX_RESULT_SLOTS
    if valid and nq * kv > 2**20:
        return
    with bounded_memory(256 << 20):
        results = on_all_backends(lambda: (
            *sf.sparse_l2_topk(q, db, k, threads=threads),
            *sf.SparseL2Index(db).search(q, k, threads=threads)))
    for spec, (kind, got) in results.items():
        assert (kind == "ok") == valid, (spec, kind, got, k, threads)
        if not valid:
            assert got is ValueError
    assert_same(results, "sparse arguments")


@_hyp(20)
@given(bad=st.sampled_from([np.nan, np.inf, -np.inf]), where=st.sampled_from(["q", "d"]))
def test_sparse_non_finite_is_value_error(bad, where):
    m = sp.csr_matrix(np.array([[1, 0, 2], [0, 3, 0]], np.float32))
    b = m.copy()
    b.data[1] = bad
    q, d = (b, m) if where == "q" else (m, b)
    results = on_all_backends(lambda: sf.sparse_l2_topk(q, d, 2))
    for spec, (kind, got) in results.items():
        assert kind == "error" and got is ValueError, spec


# --------------------------------------------------------------------------------------
# sparse SBS search (issue 14)
# --------------------------------------------------------------------------------------
#: (classes, levels, pyramid): narrow (uint16) entries, a pyramid, and 17,600 cells (uint32)
SPARSE_SBS_LAYOUTS = [(1, 0, False), (4, 1, False), (3, 2, True), (151, 1, False),
                      (1100, 2, False)]
SPARSE_SBS_METHODS = ("auto", "inverted", "scan")


@_hyp(60)
@given(shape=st.sampled_from(SPARSE_SBS_LAYOUTS), n=st.integers(0, 40), big=st.booleans(),
       nq=st.integers(0, 5), k=st.one_of(st.integers(1, 45), st.sampled_from([1000, 2**16])),
       p_cell=st.sampled_from([0.0, 0.01, 0.1, 0.5, 1.0]),
       threads=st.sampled_from([0, 1, 2, 1024]), qkind=st.sampled_from(["rows", "codes", "bytes"]),
       seed=st.integers(0, 2**32 - 1))
def test_sparse_sbs_matches_reference(shape, n, big, nq, k, p_cell, threads, qkind, seed):
    """Sparse codes of any density, queries of any bits: every backend, level and method
    returns ref_topk of the dense codes (more than one 8,192-row block when ``big``)."""
    from semcbir_fast.sparse_sbs import SparseSBSSearcher, to_sparse_sbs
    from test_sparse_sbs import random_codes

    m, levels, pyramid = shape
    lay = sf.sbs_layout(m, levels, pyramid)
    if big and lay.stride <= 200:
        n = 8200 + n
        p_cell = min(p_cell, 0.1)
    rng = np.random.default_rng(seed)
    db = random_codes(rng, lay, n, p_cell)
    db[n // 2 : n // 2 + n // 4] = db[: n // 4]  # duplicates: ties
    if qkind == "rows" and n:
        q = db[rng.integers(0, n, nq)]
    elif qkind == "bytes":
        q = rng.integers(0, 256, (nq, lay.stride), dtype=np.uint8)
    else:
        q = random_codes(rng, lay, nq, max(p_cell, 0.02))
    want = ref_topk(q, db, k) if nq else (np.zeros((0, k), np.int32), np.zeros((0, k), np.int64))

    def search():
        s = SparseSBSSearcher(to_sparse_sbs(db, lay, threads=threads), threads=threads)
        return tuple(a for method in SPARSE_SBS_METHODS
                     for a in s.search(q, k, threads=threads, method=method))

    for spec, (kind, got) in on_all_backends(search).items():
        assert kind == "ok", (spec, got)
        for j, method in enumerate(SPARSE_SBS_METHODS):
            assert np.array_equal(got[2 * j], want[0]), (spec, method)
            assert np.array_equal(got[2 * j + 1], want[1]), (spec, method)


SPARSE_SBS_EDITS = ("offset", "entry", "popcount", "truncate", "dtype")


@_hyp(150)
@given(edit=st.sampled_from(SPARSE_SBS_EDITS), where=st.integers(0, 2**20),
       value=st.sampled_from([0, 1, 2, 3, 4, -1, 5, 19, 20, 79, 80, 0x7FFF, 0x8000, 0xFFFF,
                              2**31 - 1, -(2**31), 2**31, 2**62, -(2**63), 2**63 - 1]),
       shape=st.sampled_from(SPARSE_SBS_LAYOUTS[:4]))
def test_sparse_sbs_malformed_refused(edit, where, value, shape):
    """Damaged sparse codes (offsets out of order or range, cells out of order or past the
    layout, popcounts that do not match, wrong dtypes): check, decode and the searcher raise
    ValueError on every backend, alike -- never read out of bounds."""
    from semcbir_fast.sparse_sbs import SparseSBSCodes, SparseSBSSearcher, to_sparse_sbs
    from test_sparse_sbs import random_codes

    lay = sf.sbs_layout(*shape)
    rng = np.random.default_rng(where)
    good = to_sparse_sbs(random_codes(rng, lay, 9, 0.3), lay)
    off, ent, pop = good.offsets.copy(), good.entries.copy(), good.popcounts.copy()
    if edit == "offset":
        off[where % off.shape[0]] = value
    elif edit == "entry" and ent.shape[0]:
        ent[where % ent.shape[0]] = value % (1 << (8 * ent.itemsize))
    elif edit == "popcount":
        pop[where % pop.shape[0]] = np.int64(value).astype(np.int32)
    elif edit == "truncate":
        ent = ent[: where % (ent.shape[0] + 1)]
    elif edit == "dtype":
        ent = ent.astype([np.int16, np.uint32, np.uint8, np.int64][where % 4])
    bad = SparseSBSCodes(lay, off, ent, pop)
    q = random_codes(rng, lay, 2, 0.3)

    def use():
        bad.check()
        return (bad.to_dense(), *SparseSBSSearcher(bad).search(q, 4))

    with bounded_memory(256 << 20):
        results = on_all_backends(use)
    assert_same(results, f"sparse SBS {edit}")
    kind, got = next(iter(results.values()))
    if kind == "ok":  # an edit that kept the codes valid: the dense scan of them
        want = ref_topk(q, got[0], 4)
        assert np.array_equal(got[1], want[0]) and np.array_equal(got[2], want[1])
