"""Exact float top-k (every backend and metric against a NumPy oracle) and DenseIndex
(add / search / save / load, side data, corrupt files)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from semcbir_fast.index import DenseBatch, DenseIndex, IndexFormatError, Ragged, load_index
from semcbir_fast.search import (
    available_backends,
    float_distances,
    float_topk,
    topk_from_distances,
)

METRICS = ("l2", "ip", "l1")


def _oracle(q: np.ndarray, x: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """float64 distances, stable argsort (ties by smaller id), padding with -1 / +inf."""
    q64, x64 = q.astype(np.float64), x.astype(np.float64)
    if metric == "l2":
        d = np.sqrt(((q64[:, None, :] - x64[None]) ** 2).sum(-1))
    elif metric == "ip":
        d = -(q64 @ x64.T)
    else:
        d = np.abs(q64[:, None, :] - x64[None]).sum(-1)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    dd = np.take_along_axis(d, order, 1)
    od = np.full((q.shape[0], k), np.inf)
    oi = np.full((q.shape[0], k), -1, np.int64)
    od[:, :order.shape[1]] = dd
    oi[:, :order.shape[1]] = order
    return od, oi


def _int_data(rng: np.random.Generator, n: int, nq: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Small integers (exact in float32) with duplicate rows: many exact ties."""
    x = rng.integers(-3, 4, size=(n, d)).astype(np.float32)
    x[n // 2:n // 2 + 3] = x[1]  # duplicates of row 1 further on
    q = np.concatenate([x[[1, 5]], rng.integers(-3, 4, size=(nq - 2, d))]).astype(np.float32)
    return q, x


def _backends(metric: str) -> list[str]:
    return ["auto", *available_backends(metric)]


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("n,d", [(1, 1), (7, 3), (64, 8), (65, 17), (300, 33)])
@pytest.mark.parametrize("k", [1, 5, 64, 400])
def test_topk_matches_the_oracle_with_exact_ties(metric, n, d, k):
    rng = np.random.default_rng(n * 100 + d)
    q, x = _int_data(rng, n, 23, d) if n > 6 else (rng.integers(-2, 3, (4, d)).astype("f4"),
                                                    rng.integers(-2, 3, (n, d)).astype("f4"))
    od, oi = _oracle(q, x, k, metric)
    for be in _backends(metric):
        dist, ids = float_topk(q, x, k, metric=metric, backend=be)
        assert dist.dtype == np.float32 and ids.dtype == np.int64
        assert dist.shape == ids.shape == (q.shape[0], k)
        np.testing.assert_array_equal(ids, oi, err_msg=f"{metric} {be}")
        np.testing.assert_allclose(dist, od, rtol=1e-5, atol=1e-4, err_msg=f"{metric} {be}")


@pytest.mark.parametrize("metric", METRICS)
def test_topk_on_random_floats(metric):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((500, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = np.concatenate([x[:5], rng.standard_normal((20, 64)).astype(np.float32)])
    od, oi = _oracle(q, x, 10, metric)
    for be in _backends(metric):
        dist, ids = float_topk(q, x, 10, metric=metric, backend=be)
        np.testing.assert_allclose(dist, od, rtol=1e-4, atol=2e-3)
        # ids agree wherever the oracle's distances are not within rounding of each other
        sep = np.diff(od, axis=1, prepend=-np.inf, append=np.inf)
        clear = (sep[:, :-1] > 1e-4) & (sep[:, 1:] > 1e-4)
        assert (ids[clear] == oi[clear]).all()
        assert (np.diff(dist, axis=1) >= 0).all()
        assert (ids[:5, 0] == np.arange(5)).all()  # each database vector is its own nearest


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(1, 6), st.integers(1, 45), st.sampled_from(METRICS),
       st.integers(0, 2 ** 31))
def test_topk_is_a_stable_argsort(n, d, k, metric, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, size=(n, d)).astype(np.float32)
    q = rng.integers(-2, 3, size=(3, d)).astype(np.float32)
    od, oi = _oracle(q, x, k, metric)
    for be in _backends(metric):
        dist, ids = float_topk(q, x, k, metric=metric, backend=be)
        np.testing.assert_array_equal(ids, oi)
        np.testing.assert_allclose(dist, od, atol=1e-4)


def test_properties_of_the_distances():
    rng = np.random.default_rng(0)
    x = rng.integers(-4, 5, size=(30, 9)).astype(np.float32)
    for metric in ("l2", "l1"):
        dm = float_distances(x, x, metric=metric)
        np.testing.assert_array_equal(np.diag(dm), 0)  # d(x, x) = 0 (exact for integers)
        np.testing.assert_allclose(dm, dm.T, atol=1e-5)  # symmetry
        # triangle inequality
        assert (dm[:, None, :] <= dm[:, :, None] + dm[None, :, :].transpose(0, 2, 1) + 1e-4
                ).all()
    np.testing.assert_allclose(float_distances(x, x, metric="ip"), -(x @ x.T), atol=1e-4)


def test_threads_do_not_change_results():
    rng = np.random.default_rng(1)
    q, x = _int_data(rng, 257, 31, 12)
    for metric in METRICS:
        for be in available_backends(metric):
            ref = float_topk(q, x, 9, metric=metric, backend=be, threads=1)
            for t in (0, 2):
                got = float_topk(q, x, 9, metric=metric, backend=be, threads=t)
                np.testing.assert_array_equal(got[1], ref[1])
                np.testing.assert_array_equal(got[0], ref[0])


def test_padding_empty_database_and_inputs():
    x = np.eye(3, dtype=np.float32)
    d, i = float_topk(x[:1], x, 5)
    assert i[0].tolist()[:3] == [0, 1, 2] and i[0, 3:].tolist() == [-1, -1]
    assert np.isinf(d[0, 3:]).all()
    d, i = float_topk(x[:2], np.zeros((0, 3), np.float32), 2)
    assert (i == -1).all() and np.isinf(d).all()
    # 1-D query, float64 / int input, lists
    d, i = float_topk([1, 0, 0], x.astype(np.float64), 1)
    assert i.tolist() == [[0]] and d.shape == (1, 1)


def test_topk_from_distances_resolves_ties_across_the_cut():
    d = np.array([[3, 1, 1, 1, 0, 1], [5, 4, 3, 2, 1, 0]], dtype=np.float32)
    vals, cols = topk_from_distances(d, 3)
    assert cols.tolist() == [[4, 1, 2], [5, 4, 3]]
    assert vals.tolist() == [[0, 1, 1], [0, 1, 2]]
    vals, cols = topk_from_distances(d, 10)
    assert cols.shape == (2, 6) and cols[0].tolist() == [4, 1, 2, 3, 5, 0]


def test_bad_inputs():
    x = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="queries must have d=3"):
        float_topk(np.ones((2, 4)), x, 1)
    with pytest.raises(ValueError, match="must be finite"):
        float_topk(np.array([[np.nan, 0, 0]]), x, 1)
    with pytest.raises(ValueError, match="database must be finite: row 2"):
        float_topk(x, np.array([[0, 0, 0], [1, 1, 1], [np.inf, 0, 0]]), 1)
    with pytest.raises(ValueError, match="k must be >= 1"):
        float_topk(x, x, 0)
    with pytest.raises(ValueError, match="metric must be one of"):
        float_topk(x, x, 1, metric="cosine")
    with pytest.raises(ValueError, match="backend must be one of"):
        float_topk(x, x, 1, backend="gpu")
    with pytest.raises(ValueError, match="runs metric 'l1' only"):
        float_topk(x, x, 1, backend="numba")
    with pytest.raises(ValueError, match="2-D"):
        float_topk(np.ones((2, 2, 2)), x, 1)
    with pytest.raises(ValueError, match="numeric"):
        float_topk(np.array([["a", "b", "c"]]), x, 1)
    with pytest.raises(ValueError, match="threads"):
        float_topk(x, x, 1, threads=-1)


# ----------------------------------------------------------------------------- DenseIndex
def _batch(rng: np.random.Generator, n: int, d: int = 8) -> DenseBatch:
    v = rng.integers(-3, 4, size=(n, d)).astype(np.float32)
    counts = rng.integers(0, 4, size=n)
    ip = np.concatenate([[0], np.cumsum(counts)])
    rag = Ragged(ip, {"col": np.arange(ip[-1], dtype=np.int64),
                      "val": rng.random((ip[-1], 2)).astype(np.float32)})
    return DenseBatch(v, {"codes": rng.integers(0, 255, (n, 5)).astype(np.uint8), "sp": rag})


@pytest.mark.parametrize("metric", METRICS)
def test_index_search_equals_float_topk(metric):
    rng = np.random.default_rng(5)
    b = _batch(rng, 120)
    idx = DenseIndex(metric=metric)
    assert idx.add(b[:70]).tolist() == list(range(70))
    assert idx.add(b[70:]).tolist() == list(range(70, 120))
    q = b[[3, 50, 119]]
    d, i = idx.search(q, 7)
    rd, ri = float_topk(q.vectors, b.vectors, 7, metric=metric)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_array_equal(d, rd)
    d, i, p = idx.search(q.vectors, 200, return_penalised=True)
    assert i.shape == (3, 200) and (i[:, 120:] == -1).all() and not p.any()


def test_save_load_roundtrip_with_side_data_and_keys(tmp_path):
    rng = np.random.default_rng(6)
    b = _batch(rng, 40)
    idx = DenseIndex(metric="l1", metadata={"model": "x"})
    idx.add(b[:25], keys=[f"k{i}" for i in range(25)])
    idx.add(b[25:], keys=[f"k{i}" for i in range(25, 40)])
    path = idx.save(tmp_path / "a.sbdi")
    for mmap in (True, False):
        back = load_index(path, mmap=mmap)
        assert type(back) is DenseIndex and len(back) == 40 and back.dim == 8
        assert back.metric == "l1" and back.metadata["model"] == "x"
        assert back.keys() == [f"k{i}" for i in range(40)]
        assert back.keys_of([3, -1]) == ["k3", None]
        got = back.reconstruct_batch([0, 39, 7])
        want = b[[0, 39, 7]]
        np.testing.assert_array_equal(got.vectors, want.vectors)
        np.testing.assert_array_equal(got.extras["codes"], want.extras["codes"])
        np.testing.assert_array_equal(got.extras["sp"].indptr, want.extras["sp"].indptr)
        np.testing.assert_array_equal(got.extras["sp"].values["val"],
                                      want.extras["sp"].values["val"])
        np.testing.assert_array_equal(back.search(b[:4], 5)[1], idx.search(b[:4], 5)[1])
        assert back.info()["count"] == 40 and back.storage_lines()[0].startswith("vectors")
        # an add after a memory-mapped load works on copies
        back.add(b[:2], keys=["n0", "n1"])
        assert len(back) == 42 and back.keys()[-1] == "n1"


def test_empty_index(tmp_path):
    idx = DenseIndex(metric="l2")
    d, i = idx.search(np.zeros((2, 4), np.float32), 3)
    assert (i == -1).all() and np.isinf(d).all()
    back = DenseIndex.load(idx.save(tmp_path / "e.sbdi"))
    assert len(back) == 0
    idx.add(np.zeros((0, 4), np.float32), keys=[])
    assert idx.has_keys


def test_batches_select_and_concat():
    rng = np.random.default_rng(7)
    b = _batch(rng, 10)
    s = b[np.array([9, 0, 4])]
    assert len(s) == 3 and s.extras["codes"].shape == (3, 5)
    assert len(b[b.vectors[:, 0] > 0]) == int((b.vectors[:, 0] > 0).sum())
    c = DenseBatch.concat([b[:3], b[3:]])
    np.testing.assert_array_equal(c.extras["sp"].values["col"], b.extras["sp"].values["col"])
    with pytest.raises(IndexError):
        b[[10]]
    with pytest.raises(ValueError, match="different side data"):
        DenseBatch.concat([b, DenseBatch(b.vectors)])


def test_index_bad_input_errors():
    idx = DenseIndex(metric="ip")
    idx.add(np.ones((3, 4), np.float32), keys=["a", "b", "c"])
    with pytest.raises(ValueError, match="dim 5, the index 4"):
        idx.add(np.ones((1, 5), np.float32), keys=["d"])
    with pytest.raises(ValueError, match="pass keys"):
        idx.add(np.ones((1, 4), np.float32))
    with pytest.raises(ValueError, match="single string"):
        idx.add(np.ones((1, 4), np.float32), keys="d")
    with pytest.raises(ValueError, match="queries have dim 3"):
        idx.search(np.ones((1, 3), np.float32), 1)
    with pytest.raises(ValueError, match="k must be"):
        idx.search(np.ones((1, 4), np.float32), 0)
    with pytest.raises(KeyError, match="not in the index"):
        idx.reconstruct([3])
    with pytest.raises(ValueError, match="finite"):
        DenseBatch(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="one row per image"):
        DenseBatch(np.ones((2, 2)), {"a": np.ones(3)})
    with pytest.raises(ValueError, match="without ':'"):
        DenseBatch(np.ones((2, 2)), {"a:b": np.ones(2)})
    with pytest.raises(ValueError, match="metric must be one of"):
        DenseIndex(metric="cos")
    with pytest.raises(ValueError, match="needs a signature or a metric"):
        DenseIndex()


def test_corrupt_truncated_and_foreign_files(tmp_path):
    rng = np.random.default_rng(8)
    idx = DenseIndex(metric="l2")
    idx.add(_batch(rng, 30), keys=[str(i) for i in range(30)])
    path = idx.save(tmp_path / "a.sbdi")
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / "bad.sbdi").write_bytes(bytes(raw))
    with pytest.raises(IndexFormatError, match="checksum"):
        DenseIndex.load(tmp_path / "bad.sbdi")
    (tmp_path / "short.sbdi").write_bytes(path.read_bytes()[:-100])
    with pytest.raises(IndexFormatError, match="truncated"):
        load_index(tmp_path / "short.sbdi")
    from semcbir_fast.index import SBSIndex

    with pytest.raises(IndexFormatError, match="not a semcbir-sbs-index"):
        SBSIndex.load(path)
    import semcbir_fast as sf

    sbs = SBSIndex(sf.sbs_layout(5, 1))
    sbs.add(sf.encode_sbs(np.zeros((2, 8, 8), np.uint8), num_classes=5, levels=1))
    spath = sbs.save(tmp_path / "s.sbsi")
    with pytest.raises(IndexFormatError, match="not a semcbir-dense-index"):
        DenseIndex.load(spath)
    (tmp_path / "text.sbdi").write_text("hello")
    with pytest.raises(IndexFormatError, match="not a semcbir index"):
        load_index(tmp_path / "text.sbdi")
    with pytest.raises(FileNotFoundError):
        load_index(tmp_path / "missing.sbdi")
