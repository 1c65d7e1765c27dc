"""LocalIndex: persistent SBoVP / hybrid index, and the exact filtered top-k behind it.

References: full rankings from ``phrase_l2_topk`` (checked against SciPy in test_sbovp.py)
reordered by ``histogram_filter`` (checked against a hand-made case in test_hybrid.py),
i.e. the paper's filter applied to the complete ranking.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp
from semcbir_fast.features import Features
from semcbir_fast.hybrid import filtered_topk, histogram_filter, semantic_histograms
from semcbir_fast.index import IndexFormatError, SBSIndex
from semcbir_fast.local_index import LocalIndex, load_index
from semcbir_fast.sbovp import PhraseSignatures, Vocabulary, phrase_l2_topk

M = 5


def _features(rng: np.random.Generator, n: int, method: str = "kaze", dim: int = 16):
    out = []
    for _ in range(n):
        m = int(rng.integers(0, 40))
        out.append(Features(rng.uniform(0, 64, (m, 2)), rng.normal(size=(m, dim)).astype(
            np.float32), (64, 64), method))
    return out


def _maps(rng: np.random.Generator, n: int):
    # blocky maps: large regions (several keypoints per region) with varied class mixes
    return [np.kron(rng.integers(0, M, (4, 4)), np.ones((8, 8), np.int64)).astype(np.uint8)
            for _ in range(n)]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    feats, maps = _features(rng, 70), _maps(rng, 70)
    maps[3][:] = 2  # one single-class image, one image without keypoints
    feats[5] = Features(np.zeros((0, 2)), np.zeros((0, 16), np.float32), (64, 64), "kaze")
    vocab = Vocabulary.fit(feats, 8, seed=0)
    return feats, maps, vocab


def _make(sig: str, data, **kw) -> LocalIndex:
    vocab = data[2]
    return LocalIndex(sig, num_classes=M, method="kaze",
                      vocabulary=vocab if sig == "sbovp" else None, **kw)


def _csr(index: LocalIndex, sig) -> sp.csr_matrix:
    if isinstance(sig, PhraseSignatures):
        return sig.to_scipy()
    n, m, d = sig.matrices.shape
    return sp.csr_matrix(sig.matrices.reshape(n, m * d))


def _reference(index: LocalIndex, q, qh, db, dbh, k: int, epsilon):
    """Full ranking + the paper's filter on it, then the first k."""
    n = dbh.shape[0]
    d, i = phrase_l2_topk(_csr(index, q), _csr(index, db), n)
    if epsilon is not None:
        d, i = histogram_filter(d, i, qh, dbh, epsilon=epsilon)
    kk = min(k, n)
    out_d = np.full((d.shape[0], k), np.inf, np.float32)
    out_i = np.full((d.shape[0], k), -1, np.int64)
    out_d[:, :kk], out_i[:, :kk] = d[:, :kk], i[:, :kk]
    return out_d, out_i


@pytest.mark.parametrize(("sig", "hw"), [("sbovp", 1.0), ("sbovp", 0.0), ("hybrid", 0.0)])
@pytest.mark.parametrize("epsilon", [0.9, 0.3, None])
@pytest.mark.parametrize("k", [1, 4, 69, 80])
def test_search_matches_filtered_full_ranking(data, sig, hw, epsilon, k):
    feats, maps, _ = data
    index = _make(sig, data, epsilon=epsilon, histogram_weight=hw,
                  normalize="hellinger" if hw else "l2")
    index.add(feats[:60], maps[:60])
    q = index.encode(feats[55:], maps[55:])
    qh = index.histograms(maps[55:])
    db, dbh = index.reconstruct(np.arange(60))
    d, i, pen = index.search(feats[55:], maps[55:], k, return_penalised=True)
    rd, ri = _reference(index, q, qh, db, dbh, k, epsilon)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_array_equal(d, rd)
    # the penalised flags are the L1 test of each returned candidate
    l1 = np.abs(qh[:, None, :].astype(np.float64) - dbh[np.maximum(i, 0)]).sum(axis=2)
    want = (l1 > epsilon) & (i >= 0) if epsilon is not None else np.zeros_like(pen)
    np.testing.assert_array_equal(pen, want)
    # images in the database find themselves first, at distance 0 (never penalised)
    assert (i[:5, 0] == np.arange(55, 60)).all() and (d[:5, 0] == 0).all()


def test_filtered_topk_grows_the_candidate_list_exactly():
    rng = np.random.default_rng(3)
    n, nq, m = 500, 40, 6
    hq = rng.dirichlet(np.ones(m), nq).astype(np.float32)
    hd = rng.dirichlet(np.ones(m), n).astype(np.float32)
    dist = rng.integers(0, 50, (nq, n)).astype(np.float32)  # many ties
    calls = []

    def search(rows, kk):
        calls.append(kk)
        order = np.lexsort((np.broadcast_to(np.arange(n), (rows.size, n)), dist[rows]))[:, :kk]
        return np.take_along_axis(dist[rows], order, axis=1), order.astype(np.int64)

    full_d, full_i = search(np.arange(nq), n)
    calls.clear()
    for eps in (0.2, 0.5, 1.0):
        for k in (1, 5, 100):
            rd, ri, rp = histogram_filter(full_d, full_i, hq, hd, epsilon=eps,
                                          return_penalised=True)
            d, i, p = filtered_topk(search, hq, hd, n, k, epsilon=eps, return_penalised=True)
            np.testing.assert_array_equal(i, ri[:, :k])
            np.testing.assert_array_equal(d, rd[:, :k])
            np.testing.assert_array_equal(p, rp[:, :k])
    assert max(calls) == n and min(calls) == 64  # it started short and grew where needed


@pytest.mark.parametrize("sig", ["sbovp", "hybrid"])
def test_save_load_roundtrip_and_batches(data, sig, tmp_path):
    feats, maps, _ = data
    one = _make(sig, data, metadata={"model": "m"})
    one.add(feats, maps, keys=[f"img{i}.jpg" for i in range(70)])
    two = _make(sig, data)
    ids_a = two.add(feats[:25], maps[:25], keys=[f"img{i}.jpg" for i in range(25)])
    ids_b = two.add(feats[25:], maps[25:], keys=[f"img{i}.jpg" for i in range(25, 70)])
    assert ids_a.tolist() == list(range(25)) and ids_b.tolist() == list(range(25, 70))
    np.testing.assert_array_equal(one._indptr, two._indptr)
    np.testing.assert_array_equal(one._indices, two._indices)
    np.testing.assert_array_equal(one._data, two._data)
    path = one.save(tmp_path / f"{sig}.sbli")
    want = one.search(feats[:9], maps[:9], 7)
    for mmap in (True, False):
        back = LocalIndex.load(path, mmap=mmap)
        assert type(load_index(path)) is LocalIndex
        assert len(back) == 70 and back.keys() == one.keys() and back.params == one.params
        assert back.metadata["model"] == "m"
        got = back.search(feats[:9], maps[:9], 7)
        for a, b in zip(want, got):
            np.testing.assert_array_equal(a, b)
        assert back.keys_of(got[1][0][:2]) == [f"img{j}.jpg" for j in got[1][0][:2]]
    # a loaded index takes more images
    back = LocalIndex.load(path)
    back.add(feats[:2], maps[:2], keys=["x.jpg", "y.jpg"])
    assert len(back) == 72 and back.keys()[-1] == "y.jpg"
    info = back.info()
    assert info["count"] == 72 and info["params"]["signature"] == sig


@pytest.mark.parametrize("sig", ["sbovp", "hybrid"])
def test_reconstruct_gives_the_encoded_signatures(data, sig):
    feats, maps, _ = data
    index = _make(sig, data)
    index.add(feats, maps)
    enc = index.encode(feats[10:14], maps[10:14])
    got, hist = index.reconstruct([10, 11, 12, 13])
    np.testing.assert_array_equal(_csr(index, got).toarray(), _csr(index, enc).toarray())
    np.testing.assert_array_equal(hist, semantic_histograms(maps[10:14], M))
    with pytest.raises(KeyError, match="not in the index"):
        index.reconstruct([70])


def test_epsilon_auto(data):
    assert _make("hybrid", data).epsilon == 0.9
    assert _make("sbovp", data).epsilon is None  # the signature carries the histogram
    assert _make("sbovp", data, histogram_weight=0).epsilon == 0.9
    assert _make("sbovp", data, epsilon=0.5).epsilon == 0.5
    with pytest.raises(ValueError, match="'auto'"):
        _make("hybrid", data, epsilon="on")
    with pytest.raises(ValueError, match="histogram_weight must be"):
        _make("sbovp", data, normalize="l1")


def test_threads_do_not_change_results(data):
    feats, maps, _ = data
    index = _make("sbovp", data)
    index.add(feats, maps)
    a = index.search(feats[:20], maps[:20], 9, threads=1)
    b = index.search(feats[:20], maps[:20], 9, threads=3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_empty_index_and_padding(data):
    feats, maps, _ = data
    for sig in ("sbovp", "hybrid"):
        index = _make(sig, data)
        d, i = index.search(feats[:2], maps[:2], 3)
        assert (i == -1).all() and np.isinf(d).all()
        index.add(feats[:2], maps[:2])
        d, i = index.search(feats[:1], maps[:1], 4)
        assert (i[0, 2:] == -1).all() and sorted(i[0, :2].tolist()) == [0, 1]


def test_bad_input_errors(data, tmp_path):
    feats, maps, vocab = data
    with pytest.raises(ValueError, match="signature must be one of"):
        LocalIndex("sbs", num_classes=M)
    with pytest.raises(ValueError, match="needs vocabulary"):
        LocalIndex("sbovp", num_classes=M)
    with pytest.raises(ValueError, match="takes no vocabulary"):
        LocalIndex("hybrid", num_classes=M, vocabulary=vocab)
    with pytest.raises(ValueError, match="fitted on kaze"):
        LocalIndex("sbovp", num_classes=M, method="sift", vocabulary=vocab)
    with pytest.raises(ValueError, match="epsilon"):
        LocalIndex("hybrid", num_classes=M, epsilon=-1)
    index = _make("sbovp", data)
    sift = [Features(f.xy, f.descriptors, f.image_size, "sift") for f in feats[:2]]
    with pytest.raises(ValueError, match="sift features"):
        index.add(sift, maps[:2])
    with pytest.raises(ValueError, match="one map per image"):
        index.add(feats[:2], maps[:3])
    index.add(feats[:3], maps[:3], keys=["a", "b", "c"])
    with pytest.raises(ValueError, match="has keys"):
        index.add(feats[:1], maps[:1])
    with pytest.raises(ValueError, match="keys must be 2 strings"):
        index.add(feats[:2], maps[:2], keys=["a"])
    sig = index.encode(feats[:2], maps[:2])
    assert sig.histograms is not None  # encoded signatures carry their histograms
    with pytest.raises(ValueError, match="semantic histograms"):
        index.search(dataclasses.replace(sig, histograms=None), 2)
    with pytest.raises(ValueError, match="histograms must be"):
        index.search_signatures(sig, 2, histograms=np.zeros((2, M + 1)))
    other = Vocabulary.fit(feats, 4, seed=0)
    foreign = LocalIndex("sbovp", num_classes=M, vocabulary=other).encode(feats[:2], maps[:2])
    with pytest.raises(ValueError, match="encode them with the index's signature"):
        index.search_signatures(foreign, 2, histograms=index.histograms(maps[:2]))
    hyb = _make("hybrid", data)
    hyb.add(feats[:3], maps[:3])
    wide = _features(np.random.default_rng(1), 2, dim=32)
    with pytest.raises(ValueError, match="width 32"):
        hyb.add(wide, maps[:2])
    with pytest.raises(ValueError, match="must be HybridSignatures"):
        hyb.search_signatures(sig, 2)
    with pytest.raises(ValueError, match="k must be"):
        hyb.search(feats[:1], maps[:1], 0)


def test_corrupt_and_foreign_files(data, tmp_path):
    feats, maps, _ = data
    index = _make("sbovp", data)
    index.add(feats, maps, keys=[str(i) for i in range(70)])
    path = index.save(tmp_path / "a.sbli")
    raw = bytearray(path.read_bytes())
    bad = tmp_path / "bad.sbli"
    raw[len(raw) // 2] ^= 0xFF
    bad.write_bytes(bytes(raw))
    with pytest.raises(IndexFormatError, match="checksum"):
        LocalIndex.load(bad)
    short = tmp_path / "short.sbli"
    short.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(IndexFormatError, match="truncated"):
        load_index(short)
    with pytest.raises(IndexFormatError, match="not a semcbir-sbs-index"):
        SBSIndex.load(path)
    import semcbir_fast as sf

    sbs = SBSIndex(sf.sbs_layout(M, 1))
    sbs.add(sf.encode_sbs(np.stack(maps[:4]), num_classes=M, levels=1))
    spath = sbs.save(tmp_path / "s.sbsi")
    assert type(load_index(spath)) is SBSIndex
    with pytest.raises(IndexFormatError, match="SBSIndex.load"):
        LocalIndex.load(spath)
    with pytest.raises(FileNotFoundError):
        load_index(tmp_path / "missing.sbli")
    (tmp_path / "text.sbli").write_text("hello")
    with pytest.raises(IndexFormatError, match="not a semcbir index"):
        load_index(tmp_path / "text.sbli")
