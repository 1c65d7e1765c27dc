"""SBoVP kernels across backends and SIMD levels: the numba package and every C++ ISA level give
the same CSR arrays, bit-identical float32 distances and the same ids.

The kernels are called through ``_backend.core()`` (the backend contract of ``_core.pyi``), so
these tests do not depend on the Python layer above them; the end-to-end test at the bottom goes
through the public API. The oracle checks of every kernel under every backend x ISA level are in
test_sbovp.py (``backend_isa`` fixture).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import semcbir_fast as sf
from reference import (
    csr_parts,
    package_root,
    random_csr,
    random_image,
    ref_phrase_matrix,
    ref_sparse_l2_topk,
)
from semcbir_fast import _backend

sp = pytest.importorskip("scipy.sparse")

HAVE_CPP = _backend._core is not None
HAVE_NUMBA = importlib.util.find_spec("numba") is not None
needs_cpp = pytest.mark.skipif(not HAVE_CPP, reason="C++ core not built")
needs_numba = pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed")
needs_both = pytest.mark.skipif(not (HAVE_CPP and HAVE_NUMBA),
                                reason="needs the C++ core and numba")


@contextlib.contextmanager
def backend(spec: str):
    """``"numba"``, ``"cpp"`` (best ISA level) or ``"cpp-<isa>"`` for the block."""
    name, _, isa = spec.partition("-")
    prev = sf.backend()
    prev_isa = _backend._core.active_isa() if HAVE_CPP else None
    try:
        sf.set_backend(name)
        if isa:
            sf.set_isa(isa)
        yield _backend.core()
    finally:
        if HAVE_CPP:
            _backend._core.set_isa(prev_isa)
        sf.set_backend(prev)


def cpp_specs() -> list[str]:
    return [f"cpp-{isa}" for isa in _backend._core.available_isas()] if HAVE_CPP else []


# ---------------------------------------------------------------------------------------------
# Kernel calls through the contract
# ---------------------------------------------------------------------------------------------


def build(imgs, L, n, threads=1):
    xy, words, classes = (list(t) for t in zip(*imgs))
    return _backend.core().build_phrase_matrices(xy, words, classes, L, n, threads)


def topk(q, d, k, threads=1):
    return _backend.core().sparse_l2_topk(*csr_parts(q), *csr_parts(d), q.shape[1], k, threads)


def index_search(q, d, k, threads=1):
    index = _backend.core().SparseL2Index(*csr_parts(d), d.shape[1], threads)
    assert (index.rows, index.cols, index.nnz) == (d.shape[0], d.shape[1], d.nnz)
    return index.search(*csr_parts(q), k, threads)


def assert_same_rows(a, b):
    for x, y in zip(a, b):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


def assert_same_topk(a, b):
    (da, ia), (db, ib) = a, b
    assert da.dtype == db.dtype == np.float32 and ia.dtype == ib.dtype == np.int64
    assert da.shape == db.shape
    np.testing.assert_array_equal(ia, ib)
    np.testing.assert_array_equal(da.view(np.uint32), db.view(np.uint32))  # bit for bit


def widen(m, factor):
    """The same matrix in a column space `factor` times larger (hashed column lookups)."""
    return sp.csr_matrix((m.data, m.indices.astype(np.int64) * factor, m.indptr),
                         shape=(m.shape[0], m.shape[1] * factor))


def _images(rng, count, grid):
    out = []
    for i in range(count):
        n_kp = 0 if i % 7 == 3 else int(rng.integers(1, 160))  # some empty images
        out.append(random_image(rng, n_kp, 13, 5, grid=grid))
    # a lone keypoint, an all-void image, a region of identical points
    out.append((np.array([[1, 2]], np.float32), np.array([4], np.int32),
                np.array([2], np.int32)))
    out.append((np.zeros((5, 2), np.float32), np.arange(5, dtype=np.int32),
                np.full(5, -1, np.int32)))
    out.append((np.zeros((6, 2), np.float32), np.array([1, 1, 2, 0, 5, 1], np.int32),
                np.zeros(6, np.int32)))
    return out


def _topk_cases():
    """(queries, database) pairs with explicit zeros, duplicate rows, empty rows and ties."""
    rng = np.random.default_rng(7)
    cases = []
    L = 25
    for integer in (True, False):
        dbm = random_csr(rng, 300, L * L, 0.03, empty_every=9, integer=integer)
        dbm.data[::13] = 0.0  # explicit zeros
        qm = random_csr(rng, 60, L * L, 0.03, empty_every=5, integer=integer)
        qm.data[::7] = 0.0
        dbm = sp.vstack([dbm, dbm[:20]]).tocsr()  # duplicate rows: ties by id
        qm = sp.vstack([qm, dbm[3]]).tocsr()  # a query equal to a database row
        cases.append((qm, dbm))
    L = 6  # integer counts from a tiny set of patterns: many equal distances
    pats = random_csr(rng, 5, L * L, 0.2, integer=True).toarray()
    cases.append((sp.csr_matrix(np.vstack([pats, np.zeros((2, L * L), np.float32)])),
                  sp.csr_matrix(pats[rng.integers(0, 5, size=60)])))
    return cases


# ---------------------------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------------------------


@needs_numba
def test_core_is_the_numba_package_under_numba():
    from semcbir_fast import _numba

    with backend("numba") as core:
        assert core is _numba
        assert core.active_isa() == "numba" and core.available_isas() == ["numba"]
    if HAVE_CPP:
        with backend("cpp") as core:
            assert core is _backend._core


# ---------------------------------------------------------------------------------------------
# numba == C++ (best ISA level), exactly
# ---------------------------------------------------------------------------------------------


@needs_both
@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("grid", [None, 5, 40])
def test_build_identical_to_cpp(n, grid):
    imgs = _images(np.random.default_rng(100 * n + (grid or 0)), 30, grid)
    with backend("cpp"):
        want = build(imgs, 13, n)
    assert want[0][-1] > 0
    for t in (1, 2):
        with backend("numba"):
            assert_same_rows(build(imgs, 13, n, threads=t), want)


@needs_both
def test_build_identical_to_cpp_large_tied_region():
    # one big region on a small integer grid: many exact distance ties in the x sweep
    rng = np.random.default_rng(5)
    xy = rng.integers(0, 30, size=(3000, 2)).astype(np.float32)
    words = rng.integers(0, 50, size=3000).astype(np.int32)
    classes = rng.integers(-1, 2, size=3000).astype(np.int32)
    for n in (2, 4):
        with backend("cpp"):
            want = build([(xy, words, classes)], 50, n)
        with backend("numba"):
            assert_same_rows(build([(xy, words, classes)], 50, n, threads=2), want)


@needs_both
def test_topk_identical_to_cpp():
    for q, d in _topk_cases():
        n = d.shape[0]
        for k in (1, 4, n, n + 7):  # n: full ranking, n + 7: padding
            with backend("cpp"):
                want = topk(q, d, k)
                assert_same_topk(index_search(q, d, k), want)
            with backend("numba"):
                for t in (1, 2):
                    assert_same_topk(topk(q, d, k, threads=t), want)
                    assert_same_topk(index_search(q, d, k, threads=t), want)
                assert_same_topk(topk(widen(q, 1 << 27), widen(d, 1 << 27), k), want)
            if k > n:
                assert np.all(want[1][:, n:] == -1) and np.all(np.isinf(want[0][:, n:]))


@needs_both
def test_topk_identical_to_cpp_empty():
    rng = np.random.default_rng(3)
    a = random_csr(rng, 4, 36, 0.2)
    empty = sp.csr_matrix((0, 36), dtype=np.float32)
    for q, d, k in ((a, empty, 3), (empty, a, 2), (a, a[:1], 4)):
        with backend("cpp"):
            want = topk(q, d, k, threads=2)
        with backend("numba"):
            assert_same_topk(topk(q, d, k, threads=2), want)


@needs_both
def test_errors_identical_to_cpp():
    """Both backends raise ValueError with the same message for every bad kernel input."""
    good = (np.array([0, 1]), np.array([1]), np.array([1.0], np.float32))
    bad = {
        "indptr[-1]": (np.array([0, 2]), np.array([1]), np.array([1.0], np.float32)),
        "indptr[0]": (np.array([1, 1]), np.array([1]), np.array([1.0], np.float32)),
        "non-decreasing": (np.array([0, 1, 0, 1]), np.array([1]), np.array([1.0], np.float32)),
        "outside": (np.array([0, 1]), np.array([16]), np.array([1.0], np.float32)),
        "negative": (np.array([0, 1]), np.array([-1]), np.array([1.0], np.float32)),
        "increasing": (np.array([0, 2]), np.array([3, 1]), np.array([1, 1], np.float32)),
        "non-finite": (np.array([0, 1]), np.array([1]), np.array([np.nan], np.float32)),
        "lengths": (np.array([0, 1]), np.array([1, 2]), np.array([1.0], np.float32)),
    }

    def messages(core):
        out = []
        calls = [lambda: core.sparse_l2_topk(*good, *good, 16, 0, 1),
                 lambda: core.SparseL2Index(*good, 16, 1).search(*good, 0, 1),
                 lambda: core.sparse_l2_topk(*good, *good, -1, 1, 1)]
        for parts in bad.values():
            calls.append(lambda p=parts: core.sparse_l2_topk(*p, *good, 16, 1, 1))
            calls.append(lambda p=parts: core.sparse_l2_topk(*good, *p, 16, 1, 1))
            calls.append(lambda p=parts: core.SparseL2Index(*p, 16, 1))
            calls.append(lambda p=parts: core.SparseL2Index(*good, 16, 1).search(*p, 1, 1))
        xy = [np.zeros((2, 2), np.float32)]
        ok = [np.zeros(2, np.int32)]
        calls += [
            lambda: core.build_phrase_matrices(xy, [np.array([0, 4], np.int32)], ok, 4, 2, 1),
            lambda: core.build_phrase_matrices(xy, ok, ok, 4, 17, 1),
            lambda: core.build_phrase_matrices(xy, ok, ok, 0, 2, 1),
            lambda: core.build_phrase_matrices(xy, [np.zeros(1, np.int32)], ok, 4, 2, 1),
            lambda: core.build_phrase_matrices(xy, ok, [], 4, 2, 1),
            lambda: core.build_phrase_matrices([np.zeros((2, 3), np.float32)], ok, ok, 4, 2, 1),
            lambda: core.build_phrase_matrices([np.array([[0, np.inf], [1, 1]], np.float32)],
                                               ok, ok, 4, 2, 1),
        ]
        for call in calls:
            with pytest.raises(ValueError) as info:
                call()
            out.append(str(info.value))
        return out

    with backend("cpp") as core:
        want = messages(core)
    with backend("numba") as core:
        assert messages(core) == want


# ---------------------------------------------------------------------------------------------
# Every C++ ISA level, forced (set_isa or SEMCBIR_ISA), == the scalar level
# ---------------------------------------------------------------------------------------------


@needs_cpp
def test_every_isa_identical_to_scalar():
    """The forced level governs every kernel (the sparse L2 pass-1 popcount included):
    all levels give the bits of the scalar level, on the direct and the hashed column paths,
    one-shot (one or several workers) and through SparseL2Index."""
    imgs = _images(np.random.default_rng(21), 25, 6)
    cases = _topk_cases()
    rng = np.random.default_rng(22)  # few queries, many rows: the workers split the database
    big = random_csr(rng, 5000, 900, 0.02, integer=False)
    cases.append((random_csr(rng, 3, 900, 0.05, integer=False), big))
    with backend("cpp-scalar"):
        want_build = [build(imgs, 13, n) for n in (2, 3)]
        want_topk = [topk(q, d, k, threads=t) for q, d in cases for k in (1, 9) for t in (1, 2)]
    for spec in cpp_specs():
        with backend(spec):
            assert sf.active_isa() == spec.split("-")[1]
            for got, n in zip(want_build, (2, 3)):
                assert_same_rows(build(imgs, 13, n, threads=2), got)
            got = iter(want_topk)
            for q, d in cases:
                for k in (1, 9):
                    for t in (1, 2):
                        want = next(got)
                        assert_same_topk(topk(q, d, k, threads=t), want)
                        assert_same_topk(index_search(q, d, k, threads=t), want)
                        assert_same_topk(topk(widen(q, 1 << 30), widen(d, 1 << 30), k,
                                              threads=t), want)
    q, d = cases[0]  # integer data: the oracle's sums are exact too
    assert_same_topk(want_topk[0], ref_sparse_l2_topk(q, d, 1))


@needs_cpp
def test_env_scalar_isa_governs_sparse_kernels():
    """SEMCBIR_ISA=scalar in a fresh process: the scalar level is active and phrase building and
    sparse L2 give the same bytes as this process (best level)."""
    here = os.path.dirname(os.path.abspath(__file__))
    code = (
        "import sys, hashlib, numpy as np\n"
        f"sys.path.insert(0, {here!r})\n"
        "import semcbir_fast as sf\n"
        "from semcbir_fast import _backend\n"
        "from reference import csr_parts, random_csr, random_image\n"
        "core = _backend.core()\n"
        "rng = np.random.default_rng(9)\n"
        "imgs = [random_image(rng, 80, 13, 4, grid=7) for _ in range(10)]\n"
        "xy, w, c = (list(t) for t in zip(*imgs))\n"
        "h = hashlib.sha256()\n"
        "for part in core.build_phrase_matrices(xy, w, c, 13, 3, 2): h.update(part.tobytes())\n"
        "q = random_csr(rng, 20, 900, 0.03, integer=False)\n"
        "d = random_csr(rng, 700, 900, 0.03, integer=False)\n"
        "for out in core.sparse_l2_topk(*csr_parts(q), *csr_parts(d), 900, 7, 2):\n"
        "    h.update(out.tobytes())\n"
        "print(sf.backend(), sf.active_isa(), h.hexdigest())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEMCBIR_")}
    env["PYTHONPATH"] = os.pathsep.join(
        [package_root()] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    outs = {}
    for isa in ("scalar", ""):
        res = subprocess.run([sys.executable, "-c", code], env={**env, "SEMCBIR_ISA": isa},
                             capture_output=True, text=True, timeout=300, check=False)
        assert res.returncode == 0, res.stderr
        outs[isa] = res.stdout.split()
    assert outs["scalar"][:2] == ["cpp", "scalar"]
    assert outs[""][0] == "cpp" and outs[""][1] == _backend._core.available_isas()[-1]
    assert outs["scalar"][2] == outs[""][2]


# ---------------------------------------------------------------------------------------------
# Oracles, numba only (the C++ levels run the same checks in test_core.cpp and test_sbovp.py)
# ---------------------------------------------------------------------------------------------


@needs_numba
def test_numba_kernels_against_oracles():
    rng = np.random.default_rng(31)
    imgs = [random_image(rng, int(rng.integers(0, 50)), 9, 3, grid=5) for _ in range(8)]
    with backend("numba"):
        indptr, indices, data = build(imgs, 9, 3)
        for i, (xy, w, c) in enumerate(imgs):
            dense = np.zeros(81)
            dense[indices[indptr[i]:indptr[i + 1]]] = data[indptr[i]:indptr[i + 1]]
            np.testing.assert_array_equal(dense.reshape(9, 9), ref_phrase_matrix(xy, w, c, 9, 3))
        cases = _topk_cases()
        for q, d in (cases[0], cases[2]):  # integer data: the oracle's sums are exact too
            for k in (1, 5, d.shape[0] + 2):
                want = ref_sparse_l2_topk(q, d, k)
                assert_same_topk(topk(q, d, k), want)


# ---------------------------------------------------------------------------------------------
# End to end through the public API
# ---------------------------------------------------------------------------------------------


@needs_both
def test_signatures_end_to_end_identical_to_cpp():
    """Built signatures, normalised, searched: both backends agree at every step."""
    from semcbir_fast.sbovp import build_phrase_signatures, normalize_signatures

    imgs = _images(np.random.default_rng(11), 40, 8)
    xy, words, classes = zip(*imgs)
    out = {}
    for b in ("cpp", "numba"):
        with backend(b):
            sig = build_phrase_signatures(list(xy), list(words), list(classes), 13, n=3)
            sig = normalize_signatures(sig, "l2")
            out[b] = sf.sparse_l2_topk(sig[:10], sig, 12)
    assert_same_topk(out["numba"], out["cpp"])
