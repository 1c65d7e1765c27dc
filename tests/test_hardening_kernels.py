"""Issue 11, kernel part: no input or resource limit may crash the process, exhaust memory
or answer wrongly. One regression test (at least) per item, each with the issue's minimal
reproduction; every backend and SIMD level where the item concerns the kernels.

1. a worker thread that cannot start (resource limits) aborted Python: now fewer threads;
3. ``levels`` 10-12 asked for GiBs of scratch memory and aborted inside ``noexcept`` code;
4. ``k`` was not bounded: ``k = 10**8`` allocated 1.2 GB of padding;
8. per-block counters of the C++ encoder overflowed above 2**31 pixels;
9. sparse L2 cancelled (0.0 for a true distance 1.0) and asked for 2**61 bytes on 0 columns;
11. huge / bool integers reached pybind (TypeError) or undefined behaviour before NumPy.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import semcbir_fast as sf
from helpers import available_bytes
from reference import ref_encode_sbs, ref_topk
from semcbir_fast import _backend
from semcbir_fast._convert import MAX_K, MAX_RESULT_SLOTS, MAX_THREADS
from semcbir_fast.index import SBSIndex
from semcbir_fast.layout import MAX_CODE_BYTES
from semcbir_fast.semantic_histogram import filtered_topk

PYTHON_DIR = Path(sf.__file__).resolve().parents[1]
UNDER_ASAN = "asan" in os.environ.get("LD_PRELOAD", "")


def _run_child(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter (the same backend), returns the finished process."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PYTHON_DIR),
                                                        os.environ.get("PYTHONPATH", "")]))
    env["SEMCBIR_BACKEND"] = _backend.backend()
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


_LIMIT_VM = """
import resource
def vm_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
def limit_vm(extra):
    resource.setrlimit(resource.RLIMIT_AS, (vm_bytes() + extra,) * 2)
"""


# --------------------------------------------------------------------------------------
# 1. threads that cannot start
# --------------------------------------------------------------------------------------
@pytest.mark.skipif(UNDER_ASAN or not sys.platform.startswith("linux"),
                    reason="needs RLIMIT_AS (Linux, not under ASan)")
def test_thread_start_failure_falls_back(backend_isa):
    """The issue's reproduction (ulimit -v 6000000, threads=2000), and a limit so tight that
    only a few of the 1024 threads can get a stack: same codes, exit 0, no abort."""
    isa = backend_isa.partition("-")[2]
    child = _LIMIT_VM + f"""
import numpy as np, semcbir_fast as sf
if {isa!r}:
    sf.set_isa({isa!r})
maps = [np.full((4, 4), i % 2, np.uint8) for i in range(2000)]
want = sf.encode_sbs(maps, num_classes=2, levels=1, threads=1)
rng = np.random.default_rng(0)
codes = rng.integers(0, 256, (300, 16), dtype=np.uint8)
want_d, want_i = sf.hamming_topk(codes, codes, 5, threads=1)
for extra in (6_000_000 * 1024 - vm_bytes(), 256 << 20):
    limit_vm(max(extra, 256 << 20))
    got = sf.encode_sbs(maps, num_classes=2, levels=1, threads=2000)
    assert np.array_equal(got, want)
    d, i = sf.hamming_topk(codes, codes, 5, threads={MAX_THREADS})
    assert np.array_equal(d, want_d) and np.array_equal(i, want_i)
print("ok")
"""
    r = _run_child(child)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stdout, r.stderr[-2000:])


def test_threads_capped_and_checked(backend_isa):
    maps = [np.full((3, 3), i % 3, np.uint8) for i in range(5)]
    want = sf.encode_sbs(maps, num_classes=3, levels=1, threads=1)
    for t in (0, 1, 5, 6, MAX_THREADS, MAX_THREADS + 1, 2**31 - 1, np.int64(7), np.uint8(2)):
        assert np.array_equal(sf.encode_sbs(maps, num_classes=3, levels=1, threads=t), want)
    for t in (-1, 2**31, 2**63, 2**64, True, 1.0, "2", None):
        with pytest.raises(ValueError, match="threads"):
            sf.encode_sbs(maps, num_classes=3, levels=1, threads=t)


# --------------------------------------------------------------------------------------
# 3. levels bounded by the code size; allocations outside noexcept code
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("levels", [8, 10, 11, 12])
def test_levels_bounded_by_code_size(backend_isa, levels):
    """A 1x1 map with 150 classes took 1.9 GiB at levels 10, 7.5 GiB at 11, aborted at 12."""
    with pytest.raises(ValueError, match=r"makes codes of \d+ bytes.*4 MiB"):
        sf.encode_sbs(np.zeros((1, 1), np.uint8), num_classes=150, levels=levels)


def test_levels_at_the_code_size_limit(backend_isa):
    """The largest allowed layouts still encode, bit-exact (grids finer than the map too)."""
    lab = np.array([[0, 1], [1, 1]], np.int32)
    for m, levels in ((151, 7), (1, 11), (65536, 3)):
        lay = sf.sbs_layout(m, levels)
        assert lay.nbytes <= MAX_CODE_BYTES
        code = sf.encode_sbs(lab, num_classes=m, levels=levels)
        if m == 151:  # the reference builds (blocks, M) arrays: keep it to one case
            assert np.array_equal(code, ref_encode_sbs(lab, m, levels))
        p, _ = sf.decode_sbs(code, lay)
        assert p.sum() == (4 if m > 1 else 1)  # one pixel per block; m = 1: label 1 is void
    sf.encode_sbs(lab, num_classes=151, levels=7, pyramid=True)  # 2.1 MB
    for m, levels in ((151, 8), (2, 11), (65536, 4)):
        with pytest.raises(ValueError, match="4 MiB"):
            sf.encode_sbs(lab, num_classes=m, levels=levels)


def test_output_size_estimated_before_allocating(backend_isa):
    """100k one-pixel maps at 1.5 MB per code would need 150 GB: MemoryError first."""
    maps = np.zeros((100_000, 1, 1), np.uint8)
    with pytest.raises(MemoryError, match=r"encode_sbs: 100000 codes of \d+ bytes"):
        sf.encode_sbs(maps, num_classes=151, levels=7)
    with pytest.raises(MemoryError, match="hamming_distances"):
        big = np.broadcast_to(np.zeros(8, np.uint8), (2**20, 8))
        sf.hamming_distances(big, big)


@pytest.mark.skipif(UNDER_ASAN or not sys.platform.startswith("linux"),
                    reason="needs RLIMIT_AS (Linux, not under ASan)")
def test_scratch_memory_failure_is_memory_error():
    """Scratch memory that cannot be had was std::bad_alloc inside a noexcept function
    (abort): now MemoryError naming the size."""
    if _backend.backend() != "cpp":
        pytest.skip("the C++ encoder's workspace")
    child = _LIMIT_VM + """
import numpy as np, semcbir_fast as sf
limit_vm(16 << 20)
try:
    sf.encode_sbs(np.zeros((2, 2), np.int32), num_classes=65536, levels=3, threads=1)
except MemoryError as exc:
    print("MemoryError:", exc)
"""
    r = _run_child(child)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert "MemoryError: encode_sbs: out of memory" in r.stdout and "MiB per thread" in r.stdout


# --------------------------------------------------------------------------------------
# 4. k bounded; only min(k, N) columns searched, then padding
# --------------------------------------------------------------------------------------
CODES = np.random.default_rng(4).integers(0, 256, (3, 16), dtype=np.uint8)


def _csr(rows: list[list[float]]) -> sp.csr_matrix:
    return sp.csr_matrix(np.array(rows, np.float32))


@pytest.mark.parametrize("k", [10**8, MAX_K + 1, 2**62, 2**63, 2**64])
def test_k_above_max_is_value_error(backend_isa, k):
    """hamming_topk(1 query, 3 codes, k=10**8) allocated 1.2 GB; SBSIndex.search(..., 5e8)
    5.6 GiB: now a ValueError before any allocation, in every search."""
    db = _csr([[1, 0], [0, 2], [3, 3]])
    index = sf.SparseL2Index(db)
    sbs = SBSIndex(sf.sbs_layout(3, 1))
    sbs.add(np.zeros((2, sbs.layout.stride), np.uint8))
    calls = [
        lambda: sf.hamming_topk(CODES[:1], CODES, k),
        lambda: sf.sparse_l2_topk(db[:1], db, k),
        lambda: index.search(db[:1], k),
        lambda: sbs.search(np.zeros(sbs.layout.stride, np.uint8), k),
        lambda: filtered_topk(lambda r, kk: None, np.zeros((1, 3), np.float32),
                              np.zeros((3, 3), np.float32), 3, k, epsilon=0.5),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"k must be <= 16777216"):
            call()


def test_queries_times_k_bounded(backend_isa):
    nq = MAX_RESULT_SLOTS // MAX_K + 1  # 17 queries x 2**24
    q = np.zeros((nq, 16), np.uint8)
    with pytest.raises(ValueError, match=r"queries x k = 17 x 16777216 .* at most 16 queries"):
        sf.hamming_topk(q, CODES, MAX_K)
    sq = sp.csr_matrix((nq, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="result slots exceed"):
        sf.sparse_l2_topk(sq, _csr([[1, 0]]), MAX_K)
    with pytest.raises(ValueError, match="result slots exceed"):
        sf.SparseL2Index(_csr([[1, 0]])).search(sq, MAX_K)
    sbs = SBSIndex(sf.sbs_layout(3, 1))
    sbs.add(np.zeros((2, sbs.layout.stride), np.uint8))
    with pytest.raises(ValueError, match="result slots exceed"):
        sbs.search(np.zeros((nq, sbs.layout.stride), np.uint8), MAX_K)


def test_k_above_n_still_pads(backend_isa):
    """The SPEC section 2 contract for k > N: ids -1, distance INT32_MAX / +inf."""
    d, i = sf.hamming_topk(CODES[:1], CODES, 10)
    wd, wi = ref_topk(CODES[:1], CODES, 10)
    assert np.array_equal(d, wd) and np.array_equal(i, wi)
    assert (i[0, 3:] == -1).all() and (d[0, 3:] == np.iinfo(np.int32).max).all()
    db = _csr([[1, 0], [0, 2], [3, 3]])
    for d, i in (sf.sparse_l2_topk(db[:1], db, 1000), sf.SparseL2Index(db).search(db[:1], 1000)):
        assert d.shape == (1, 1000) and (i[0, 3:] == -1).all() and np.isinf(d[0, 3:]).all()
        assert i[0, :3].tolist() == [0, 1, 2]
    sbs = SBSIndex(sf.sbs_layout(3, 1))
    sbs.add(np.zeros((2, sbs.layout.stride), np.uint8))
    d, i = sbs.search(np.zeros(sbs.layout.stride, np.uint8), 5)
    assert i.tolist() == [[0, 1, -1, -1, -1]]
    lims, d, i = sbs.range_search(np.zeros(sbs.layout.stride, np.uint8), 2**70)
    assert lims.tolist() == [0, 2] and i.tolist() == [0, 1]


def test_search_signatures_k_bounded():
    pytest.importorskip("cv2")
    from semcbir_fast.hybrid import HybridSignatures
    from semcbir_fast.index import SparseSignatureIndex

    index = SparseSignatureIndex("hybrid", num_classes=3, method="kaze")
    sig = HybridSignatures(np.zeros((1, 3, 64), np.float32), np.full((1, 3), 1 / 3, np.float32),
                           "kaze")
    with pytest.raises(ValueError, match="k must be <= 16777216"):
        index.search_signatures(sig, 5 * 10**8)
    with pytest.raises(ValueError, match="threads"):
        index.search_signatures(sig, 1, threads=2**31)


# --------------------------------------------------------------------------------------
# 8. 64-bit per-block counters
# --------------------------------------------------------------------------------------
@pytest.mark.skipif(available_bytes() < 8 << 30, reason="needs 8 GiB of free memory")
def test_block_with_more_than_2_31_pixels():
    """np.zeros((1, 2**31 + 2**20), np.uint8) at levels 0 gave level 0 instead of 4 in the
    C++ encoder (int32 counters); the pyramid's level 0 sums four 2**29-pixel blocks."""
    from conftest import use_backend

    lab = np.zeros((1, 2**31 + 2**20), np.uint8)  # zero pages: no memory is written
    square = lab.reshape(2**15 + 2**4, 2**16)  # the same pixels, 2-D
    lab[0, -1] = 1
    for spec in ("cpp-scalar", "cpp-avx2", "cpp-avx512"):
        try:
            with use_backend(spec):
                for m, pyr in ((lab, False), (square, True)):
                    p, lv = sf.decode_sbs(sf.encode_sbs(m, num_classes=2, levels=0 if not pyr
                                                        else 1, pyramid=pyr),
                                          sf.sbs_layout(2, 0 if not pyr else 1, pyr))
                    assert lv[0].tolist() == [4, 1], (spec, pyr, lv[0])
                    assert p[0].tolist() == [1, 1]
        except pytest.skip.Exception:
            continue


def test_wide_maps(backend_isa):
    """Maps wider than the encoder's column table (2**16 columns) follow the block columns
    along each row instead: bit-exact too, with empty block columns (levels 12: 4096 > 70001
    / 17 ...) and every dtype path."""
    rng = np.random.default_rng(8)
    lab = rng.integers(0, 4, (3, 70_001)).astype(np.uint8)
    lab[:, 1000:40_000] = 2  # long runs across block columns
    for levels, pyramid in ((0, False), (3, True), (5, False)):
        want = ref_encode_sbs(lab, 4, levels, pyramid=pyramid)
        for dtype in (np.uint8, np.int16):
            got = sf.encode_sbs(lab.astype(dtype), num_classes=4, levels=levels,
                                pyramid=pyramid)
            assert np.array_equal(got, want), (levels, pyramid, dtype)
    narrow = rng.integers(0, 3, (2, 70_001)).astype(np.uint8)[:, :9]  # 9 columns, 4096 blocks
    assert np.array_equal(sf.encode_sbs(np.ascontiguousarray(narrow), num_classes=3, levels=6),
                          ref_encode_sbs(narrow, 3, 6))


# --------------------------------------------------------------------------------------
# 9. sparse L2: cancellation, 0 columns
# --------------------------------------------------------------------------------------
def test_sparse_l2_cancellation(backend_isa):
    """q = (1e8, 1), d = (1e8, 0): the true distance is 1, |q|^2 + |d|^2 - 2 q.d gave 0."""
    q, d = _csr([[1e8, 1]]), _csr([[1e8, 0]])
    for dist, ids in (sf.sparse_l2_topk(q, d, 2), sf.SparseL2Index(d).search(q, 2)):
        assert dist.tolist() == [[1.0, np.inf]] and ids.tolist() == [[0, -1]]
    # huge values with small differences, against the direct sum in float64
    rng = np.random.default_rng(9)
    base = rng.uniform(1e6, 1e9, 40).astype(np.float32)
    A = np.tile(base, (60, 1)) + rng.integers(0, 3, (60, 40)).astype(np.float32)
    A[rng.random(A.shape) < 0.3] = 0
    A[5] = A[17]  # exact duplicates
    m = sp.csr_matrix(A)
    m.eliminate_zeros()
    dense = m.toarray().astype(np.float64)
    d2 = ((dense[:, None, :] - dense[None, :, :]) ** 2).sum(axis=2)
    for dist, ids in (sf.sparse_l2_topk(m, m, 60), sf.SparseL2Index(m).search(m, 60)):
        want = np.sqrt(np.take_along_axis(d2, ids, axis=1))
        np.testing.assert_allclose(dist, want, rtol=1e-6, atol=0)
        assert (np.diff(dist, axis=1) >= 0).all()
        assert dist[5, 0] == 0 and set(ids[5, :2].tolist()) == {5, 17}


def test_sparse_l2_zero_columns(backend_isa):
    """0-column signatures asked the one-shot search for 2**61 bytes (std::bad_alloc)."""
    z = sp.csr_matrix((3, 0), dtype=np.float32)
    for d, i in (sf.sparse_l2_topk(z, z, 4), sf.SparseL2Index(z).search(z, 4)):
        assert (d[:, :3] == 0).all() and np.isinf(d[:, 3]).all()
        assert i.tolist() == [[0, 1, 2, -1]] * 3
    # many queries: the one-shot call builds the index instead (the other path)
    zq = sp.csr_matrix((1100, 0), dtype=np.float32)
    zd = sp.csr_matrix((2048, 0), dtype=np.float32)
    d, i = sf.sparse_l2_topk(zq, zd, 2048)
    assert (d == 0).all() and (i == np.arange(2048)).all()


# --------------------------------------------------------------------------------------
# 11. integers checked in Python first, with the library's messages
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [2**31, 2**62, 2**63, -(2**63) - 1, True, 2.0])
def test_integer_arguments_are_value_errors(backend_isa, bad):
    lab = np.zeros((2, 2), np.uint8)
    db = _csr([[1, 0], [0, 2]])
    sbs = SBSIndex(sf.sbs_layout(3, 1))
    sbs.add(np.zeros((1, sbs.layout.stride), np.uint8))
    calls = {
        "threads": [
            lambda: sf.encode_sbs(lab, num_classes=2, levels=0, threads=bad),
            lambda: sf.hamming_topk(CODES, CODES, 1, threads=bad),
            lambda: sf.hamming_distances(CODES, CODES, threads=bad),
            lambda: sf.sparse_l2_topk(db, db, 1, threads=bad),
            lambda: sf.SparseL2Index(db, threads=bad),
            lambda: sf.SparseL2Index(db).search(db, 1, threads=bad),
            lambda: sbs.search(np.zeros(sbs.layout.stride, np.uint8), 1, threads=bad),
            lambda: sbs.range_search(np.zeros(sbs.layout.stride, np.uint8), 1, threads=bad),
        ],
        "k": [
            lambda: sf.hamming_topk(CODES, CODES, bad),
            lambda: sf.sparse_l2_topk(db, db, bad),
            lambda: sf.SparseL2Index(db).search(db, bad),
            lambda: sbs.search(np.zeros(sbs.layout.stride, np.uint8), bad),
        ],
        "levels": [lambda: sf.encode_sbs(lab, num_classes=2, levels=bad)],
        "num_classes": [lambda: sf.encode_sbs(lab, num_classes=bad, levels=0)],
    }
    if bad not in (2**31, 2**62) or isinstance(bad, bool):  # both are valid ignore_index values
        calls["ignore_index"] = [
            lambda: sf.encode_sbs(lab, num_classes=2, levels=0, ignore_index=bad)]
    for name, fns in calls.items():
        for fn in fns:
            with pytest.raises(ValueError, match=name):
                fn()


def test_core_checks_k_before_allocating():
    """k = 2**62 reached a signed overflow in pybind11's buffer_info (UB) before NumPy
    rejected it: the binding checks k and queries x k first."""
    if _backend.backend() != "cpp":
        pytest.skip("the C++ binding")
    core = _backend.core()
    with pytest.raises(ValueError, match="k must be <= 16777216"):
        core.hamming_topk(CODES, CODES, 2**62, 0)
    ip = np.array([0, 1], np.int64)
    ix = np.array([0], np.int64)
    dt = np.array([1.0], np.float32)
    with pytest.raises(ValueError, match="k must be <= 16777216"):
        core.sparse_l2_topk(ip, ix, dt, ip, ix, dt, 1, 2**62, 0)
    with pytest.raises(ValueError, match="threads must be >= 0"):
        core.hamming_topk(CODES, CODES, 1, -1)
    _, i = core.hamming_topk(CODES, CODES, 1, 2**40)  # capped, not an error
    assert i[:, 0].tolist() == [0, 1, 2]
