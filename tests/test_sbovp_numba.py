"""SBoVP under the numba backend (python/semcbir_fast/_numba_phrase.py).

1. The checks of test_sbovp.py (phrase building and phrase_l2_topk against the brute-force
   and SciPy oracles, bad input, PhraseIndex reuse, one-shot paths) run again with the numba
   backend active.
2. Random inputs are run under both backends and the outputs compared for exact equality:
   the same CSR arrays, bit-identical float32 distances and the same ids.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import semcbir_fast as sf
import test_sbovp as base
from semcbir_fast import _backend
from semcbir_fast.sbovp import PhraseIndex, build_phrase_signatures, phrase_l2_topk

sp = pytest.importorskip("scipy.sparse")
pytest.importorskip("numba")

HAVE_CPP = _backend._core is not None and hasattr(_backend._core, "build_phrase_matrices")
needs_cpp = pytest.mark.skipif(not HAVE_CPP, reason="C++ core (phrase module) not built")


@contextlib.contextmanager
def backend(name: str):
    prev = sf.backend()
    sf.set_backend(name)
    try:
        yield
    finally:
        sf.set_backend(prev)


@pytest.fixture
def numba_backend():
    with backend("numba"):
        yield


def test_dispatch_picks_numba(numba_backend):
    from semcbir_fast import _numba_phrase, sbovp

    assert sbovp._core() is _numba_phrase
    if HAVE_CPP:
        with backend("cpp"):
            assert sbovp._core() is _backend._core


# ---------------------------------------------------------------------------------------------
# 1. The existing checks, under the numba backend
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [
    "test_hand_computed_n2",
    "test_hand_computed_n3_diagonal_and_ties",
    "test_threads_identical_and_large_region",
    "test_degenerate_images",
    "test_build_bad_input",
    "test_topk_ties_and_duplicates",
    "test_topk_threads_and_float_data",
    "test_topk_compressed_column_path",
    "test_topk_empty_database_and_queries",
    "test_topk_noncanonical_scipy_input",
    "test_topk_bad_input",
    "test_phrase_index_reuse_matches_topk",
])
def test_existing_check_under_numba(name, numba_backend):
    getattr(base, name)()


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("grid", [None, 6])
def test_random_against_reference_numba(n, grid, numba_backend):
    base.test_random_against_reference(n, grid)


@pytest.mark.parametrize("k", [1, 5, 40, 77])
def test_topk_against_scipy_numba(k, numba_backend):
    base.test_topk_against_scipy(k)


# ---------------------------------------------------------------------------------------------
# 2. Exact equality with the C++ backend
# ---------------------------------------------------------------------------------------------


def _images(rng, count, grid):
    out = []
    for i in range(count):
        n_kp = 0 if i % 7 == 3 else int(rng.integers(1, 160))  # some empty images
        out.append(base.random_image(rng, n_kp, 13, 5, grid=grid))
    # a lone keypoint, an all-void image, a region of identical points
    out.append((np.array([[1, 2]], np.float32), np.array([4], np.int32),
                np.array([2], np.int32)))
    out.append((np.zeros((5, 2), np.float32), np.arange(5, dtype=np.int32),
                np.full(5, -1, np.int32)))
    out.append((np.zeros((6, 2), np.float32), np.array([1, 1, 2, 0, 5, 1], np.int32),
                np.zeros(6, np.int32)))
    return out


@needs_cpp
@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("grid", [None, 5, 40])
def test_build_identical_to_cpp(n, grid):
    rng = np.random.default_rng(100 * n + (grid or 0))
    imgs = _images(rng, 30, grid)
    xy, words, classes = zip(*imgs)
    got = {}
    for b in ("cpp", "numba"):
        for t in (1, 2):
            with backend(b):
                got[b, t] = build_phrase_signatures(list(xy), list(words), list(classes), 13,
                                                    n=n, threads=t)
    want = got["cpp", 1]
    assert want.nnz > 0
    for sig in got.values():
        for attr in ("indptr", "indices", "data"):
            a, w = getattr(sig, attr), getattr(want, attr)
            assert a.dtype == w.dtype
            np.testing.assert_array_equal(a, w)
        assert sig.shape == want.shape


@needs_cpp
def test_build_identical_to_cpp_large_tied_region():
    # one big region on a small integer grid: many exact distance ties in the x sweep
    rng = np.random.default_rng(5)
    xy = rng.integers(0, 30, size=(3000, 2)).astype(np.float32)
    words = rng.integers(0, 50, size=3000).astype(np.int32)
    classes = rng.integers(-1, 2, size=3000).astype(np.int32)
    for n in (2, 4):
        with backend("cpp"):
            want = build_phrase_signatures([xy], [words], [classes], 50, n=n, threads=1)
        with backend("numba"):
            got = build_phrase_signatures([xy], [words], [classes], 50, n=n, threads=2)
        np.testing.assert_array_equal(got.indptr, want.indptr)
        np.testing.assert_array_equal(got.indices, want.indices)
        np.testing.assert_array_equal(got.data, want.data)


def _assert_same(a, b):
    (da, ia), (db, ib) = a, b
    assert da.dtype == db.dtype == np.float32 and ia.dtype == ib.dtype == np.int64
    assert da.shape == db.shape
    np.testing.assert_array_equal(ia, ib)
    np.testing.assert_array_equal(da.view(np.uint32), db.view(np.uint32))  # bit for bit


@needs_cpp
@pytest.mark.parametrize("integer", [True, False])
def test_topk_identical_to_cpp(integer):
    rng = np.random.default_rng(7 if integer else 8)
    L = 25
    dbm = base.random_csr(rng, 300, L * L, 0.03, empty_every=9, integer=integer)
    dbm.data[::13] = 0.0  # explicit zeros
    qm = base.random_csr(rng, 60, L * L, 0.03, empty_every=5, integer=integer)
    qm.data[::7] = 0.0
    # duplicate database rows (ties by id) and a query equal to a database row
    dbm = sp.vstack([dbm, dbm[:20]]).tocsr()
    qm = sp.vstack([qm, dbm[3]]).tocsr()
    db, q = base._sig(dbm, L), base._sig(qm, L)
    wide = 1 << 27  # the same data in a huge column space (hash-mode column lookups)
    qw = sp.csr_matrix((qm.data, qm.indices.astype(np.int64) * wide, qm.indptr),
                       shape=(qm.shape[0], L * L * wide))
    dw = sp.csr_matrix((dbm.data, dbm.indices.astype(np.int64) * wide, dbm.indptr),
                       shape=(dbm.shape[0], L * L * wide))
    for k in (1, 4, 320, 500):  # 320 = N (full ranking), 500 > N (padding)
        with backend("cpp"):
            want = phrase_l2_topk(q, db, k, threads=1)
            want_index = PhraseIndex(db, threads=1).search(q, k, threads=1)
        _assert_same(want_index, want)
        with backend("numba"):
            for t in (1, 2):
                _assert_same(phrase_l2_topk(q, db, k, threads=t), want)
                index = PhraseIndex(db, threads=t)
                assert len(index) == 320 and index.nnz == db.nnz
                _assert_same(index.search(q, k, threads=t), want)
            _assert_same(phrase_l2_topk(qw, dw, k, threads=2), want)
    if k > 320:
        assert np.all(want[1][:, 320:] == -1) and np.all(np.isinf(want[0][:, 320:]))


@needs_cpp
def test_topk_identical_to_cpp_ties_and_empty():
    L = 6
    rng = np.random.default_rng(3)
    # integer counts from a tiny set of patterns: many equal distances
    pats = base.random_csr(rng, 5, L * L, 0.2, integer=True).toarray()
    dbm = sp.csr_matrix(pats[rng.integers(0, 5, size=60)])
    qm = sp.csr_matrix(np.vstack([pats, np.zeros((2, L * L), np.float32)]))
    empty_db = sp.csr_matrix((0, L * L), dtype=np.float32)
    empty_q = sp.csr_matrix((0, L * L), dtype=np.float32)
    cases = [(qm, dbm, k) for k in (1, 13, 60, 61)]
    cases += [(qm, empty_db, 3), (empty_q, dbm, 2), (qm, dbm[:1], 4)]
    for q, d, k in cases:
        with backend("cpp"):
            want = phrase_l2_topk(q, d, k, threads=2)
        with backend("numba"):
            got = phrase_l2_topk(q, d, k, threads=2)
        _assert_same(got, want)


@needs_cpp
def test_signatures_end_to_end_identical_to_cpp():
    """Built signatures, normalised, searched: both backends agree at every step."""
    rng = np.random.default_rng(11)
    imgs = _images(rng, 40, 8)
    xy, words, classes = zip(*imgs)
    out = {}
    for b in ("cpp", "numba"):
        with backend(b):
            sig = build_phrase_signatures(list(xy), list(words), list(classes), 13, n=3)
            sig = base.normalize_signatures(sig, "l2")
            out[b] = phrase_l2_topk(sig[:10], sig, 12)
    _assert_same(out["numba"], out["cpp"])
