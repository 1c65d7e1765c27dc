"""Hybrid semantic signature (SPEC.md section 4, paper 001 section 3): per-class mean
descriptors, semantic histograms, and the L1 histogram filter in front of the L2 ranking."""

from __future__ import annotations

import numpy as np
import pytest
from semcbir_fast.features import Features
from semcbir_fast.hybrid import (
    HybridSignatures,
    hybrid_signatures,
    hybrid_topk,
    semantic_histograms,
)


def test_semantic_histograms_void_and_empty():
    lab = np.array([[0, 1, 1, 2], [2, 2, 9, -1]], np.int16)  # 9 >= M and -1 are void
    h = semantic_histograms([lab, np.full((2, 2), 9, np.int16)], 3)
    np.testing.assert_allclose(h[0], [1 / 6, 2 / 6, 3 / 6], rtol=1e-6)
    assert np.all(h[1] == 0)  # no valid pixel
    h = semantic_histograms(lab, 3, ignore_index=0)
    np.testing.assert_allclose(h[0], [0, 2 / 5, 3 / 5], rtol=1e-6)
    with pytest.raises(ValueError, match="num_classes"):
        semantic_histograms(lab, 0)
    with pytest.raises(ValueError, match="2-D integer map"):
        semantic_histograms([lab.astype(np.float32)], 3)


def test_hybrid_signatures_means_and_zero_rows():
    lab = np.array([[0, 0, 1, 1], [0, 0, 1, 1]], np.uint8)  # left half class 0, right class 1
    xy = np.array([[0, 0], [1, 1], [3, 0], [3, 1], [2.6, 1]], np.float32)
    desc = np.array([[1, 2], [3, 4], [10, 10], [20, 30], [0, 5]], np.float32)
    f = Features(xy, desc, (2, 4), "kaze")
    empty = Features(np.zeros((0, 2)), np.zeros((0, 2), np.float32), (2, 4), "kaze")
    s = hybrid_signatures([f, empty], [lab, lab], 4)
    assert s.matrices.shape == (2, 4, 2) and s.histograms.shape == (2, 4)
    np.testing.assert_allclose(s.matrices[0, 0], [2, 3])
    np.testing.assert_allclose(s.matrices[0, 1], [10, 15])
    assert np.all(s.matrices[0, 2:] == 0)  # absent classes: zero rows
    assert np.all(s.matrices[1] == 0)  # no keypoint: zero matrix, histogram still set
    np.testing.assert_allclose(s.histograms[1], [0.5, 0.5, 0, 0])
    # void keypoints (ignore_index) do not count
    s = hybrid_signatures([f], [lab], 4, ignore_index=1)
    assert np.all(s.matrices[0, 1] == 0)
    np.testing.assert_allclose(s.histograms[0], [1, 0, 0, 0])


def test_hybrid_signatures_binary_and_scaled_map():
    bits = np.array([[0b10000000], [0b11000000]], np.uint8)
    f = Features(np.array([[1, 1], [5, 5]], np.float32), bits, (8, 8), "orb")
    lab = np.zeros((2, 2), np.uint8)  # a 4x smaller map
    s = hybrid_signatures([f], [lab], 1)
    assert s.matrices.shape == (1, 1, 8)
    np.testing.assert_allclose(s.matrices[0, 0], [1, 0.5, 0, 0, 0, 0, 0, 0])


def test_hybrid_signatures_errors():
    f = Features(np.zeros((1, 2)), np.zeros((1, 4), np.float32), (2, 2), "kaze")
    g = Features(np.zeros((1, 2)), np.zeros((1, 4), np.float32), (2, 2), "sift")
    lab = np.zeros((2, 2), np.uint8)
    with pytest.raises(ValueError, match="one method"):
        hybrid_signatures([f, g], [lab, lab], 2)
    with pytest.raises(ValueError, match="one map per image"):
        hybrid_signatures([f, f], [lab], 2)
    with pytest.raises(ValueError, match="Features"):
        hybrid_signatures([np.zeros((1, 4))], [lab], 2)


def _sig(mats, hists, method="kaze"):
    return HybridSignatures(np.asarray(mats, np.float32), np.asarray(hists, np.float32), method)


def test_filter_hand_made():
    # query: class 0 only. A: closest matrix but its histogram is all class 1 (L1 = 2 > 0.9):
    # penalised. B: further matrix, same semantics (L1 = 0.2). C: far, L1 = 1.0 > 0.9.
    q = _sig([[[1, 0], [0, 0]]], [[1.0, 0.0]])
    db = _sig([[[1, 0], [0.1, 0]],    # A, L2 0.1
               [[3, 0], [0, 0]],      # B, L2 2
               [[9, 0], [0, 0]]],     # C, L2 8
              [[0.0, 1.0], [0.9, 0.1], [0.5, 0.5]])
    d, i, pen = hybrid_topk(q, db, 3, return_penalised=True)
    assert i.tolist() == [[1, 0, 2]]
    assert pen.tolist() == [[False, True, True]]
    np.testing.assert_allclose(d, [[2.0, 0.1, 8.0]], rtol=1e-6)
    d, i = hybrid_topk(q, db, 3, epsilon=None)
    assert i.tolist() == [[0, 1, 2]]
    np.testing.assert_allclose(d, [[0.1, 2.0, 8.0]], rtol=1e-6)
    d, i = hybrid_topk(q, db, 3, epsilon=1.0)  # L1 = 1.0 is kept (penalised iff > epsilon)
    assert i.tolist() == [[1, 2, 0]]
    d, i = hybrid_topk(q, db, 1)
    assert i.tolist() == [[1]]


def test_l2_against_numpy_and_padding():
    rng = np.random.default_rng(0)
    mats = rng.standard_normal((30, 5, 3)).astype(np.float32)
    mats[rng.random((30, 5)) < 0.5] = 0  # absent classes
    hist = rng.random((30, 5)).astype(np.float32)
    hist /= hist.sum(axis=1, keepdims=True)
    s = _sig(mats, hist)
    flat = mats.reshape(30, -1).astype(np.float64)
    d2 = ((flat[:, None] - flat[None]) ** 2).sum(-1)
    for eps in (None, 0.9, 0.3):
        d, i, pen = hybrid_topk(s[:7], s, 35, epsilon=eps, return_penalised=True, threads=1)
        assert d.shape == (7, 35)
        assert np.all(i[:, 30:] == -1) and np.all(np.isinf(d[:, 30:]))
        l1 = np.abs(hist[:7, None].astype(np.float64) - hist[None]).sum(-1)
        p = np.zeros_like(l1, bool) if eps is None else l1 > eps
        for r in range(7):
            want = np.lexsort((np.arange(30), d2[r], p[r]))
            assert i[r, :30].tolist() == want.tolist()
            np.testing.assert_allclose(d[r, :30], np.sqrt(d2[r, want]), rtol=1e-5, atol=1e-5)
            assert pen[r, :30].tolist() == p[r, want].tolist()
        _, i1 = hybrid_topk(s[:7], s, 4, epsilon=eps, threads=2)
        np.testing.assert_array_equal(i1, i[:, :4])


def test_topk_errors_and_empty_database():
    s = _sig(np.zeros((2, 3, 4)), np.zeros((2, 3)))
    empty = _sig(np.zeros((0, 3, 4)), np.zeros((0, 3)))
    d, i = hybrid_topk(s, empty, 3)
    assert np.all(i == -1) and np.all(np.isinf(d)) and d.shape == (2, 3)
    with pytest.raises(ValueError, match=r"same \(M, D\)"):
        hybrid_topk(s, _sig(np.zeros((1, 3, 5)), np.zeros((1, 3))), 1)
    with pytest.raises(ValueError, match="k must be"):
        hybrid_topk(s, s, 0)
    with pytest.raises(ValueError, match="epsilon"):
        hybrid_topk(s, s, 1, epsilon=-1)
    with pytest.raises(ValueError, match="HybridSignatures"):
        hybrid_topk(np.zeros((2, 3, 4)), s, 1)
    with pytest.raises(ValueError, match="sift"):
        hybrid_topk(s, _sig(np.zeros((1, 3, 4)), np.zeros((1, 3)), "sift"), 1)
    with pytest.raises(ValueError, match=r"\(N, M, D\)"):
        HybridSignatures(np.zeros((2, 3)), np.zeros((2, 3)))


def test_histogram_filter_on_any_ranking():
    from semcbir_fast.hybrid import histogram_filter

    hq = np.array([[1.0, 0.0]])
    hd = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [0.05, 0.95]])
    d = np.array([[0.1, 0.2, 0.3, 0.4, np.inf]], np.float32)
    i = np.array([[0, 1, 2, 3, -1]])
    d2, i2, pen = histogram_filter(d, i, hq, hd, epsilon=1.0, return_penalised=True)
    assert i2.tolist() == [[1, 2, 0, 3, -1]]  # L1: 2, 0, 1, 1.9 -> kept 1, 2; padding last
    assert pen.tolist() == [[False, False, True, True, False]]
    np.testing.assert_array_equal(d2, np.array([[0.2, 0.3, 0.1, 0.4, np.inf]], np.float32))
    _, i3 = histogram_filter(d, i, hq, hd)  # epsilon = 0.9: L1 = 1 is penalised too
    assert i3.tolist() == [[1, 0, 2, 3, -1]]
    with pytest.raises(ValueError, match="database_histograms has 4 rows"):
        histogram_filter(d, i + 5, hq, hd)
    with pytest.raises(ValueError, match="query_histograms must be"):
        histogram_filter(d, i, hd, hd)
