"""Late fusion, query expansion, k-reciprocal re-ranking (against loop oracles) and the
``fused`` signature (with toy components: no network needed)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from semcbir_fast.index import DenseBatch, DenseIndex, load_index
from semcbir_fast.search import (
    KReciprocal,
    alpha_qe,
    average_qe,
    fuse_distances,
    normalize_distances,
    penalised_keys,
)
from semcbir_fast.signatures import (
    DenseSignature,
    FusedSignature,
    Inputs,
    create_signature,
    register_signature,
    unregister_signature,
)
from semcbir_fast.signatures.base import option


# ----------------------------------------------------------------------------- fusion
def test_normalisations():
    d = np.array([[1.0, 2.0, 3.0, 3.0], [5.0, 5.0, 5.0, 5.0]])
    z = normalize_distances(d, "z")
    np.testing.assert_allclose(z[0].mean(), 0, atol=1e-12)
    np.testing.assert_allclose(z[0].std(), 1)
    assert (z[1] == 0).all()  # a constant row orders nothing
    r = normalize_distances(d, "rank")
    assert r[0].tolist() == [0, 1 / 3, 2 / 3, 2 / 3]  # ties share the smallest rank
    assert (r[1] == 0).all()
    m = normalize_distances(d, "minmax")
    assert m[0].tolist() == [0, 0.5, 1, 1] and (m[1] == 0).all()
    with pytest.raises(ValueError, match="normalization must be one of"):
        normalize_distances(d, "l2")
    with pytest.raises(ValueError, match="finite"):
        normalize_distances([[np.inf, 1.0]])


def test_fuse_distances():
    a = np.array([[0.0, 1.0, 2.0]])
    b = np.array([[0.0, 10.0, 5.0]])
    f = fuse_distances([a, b])
    np.testing.assert_allclose(f, normalize_distances(a) + normalize_distances(b))
    f = fuse_distances([a, b], [1.0, 0.0], normalization="rank")
    np.testing.assert_allclose(f, normalize_distances(a, "rank"))
    with pytest.raises(ValueError, match="one value per signature"):
        fuse_distances([a, b], [1.0])
    with pytest.raises(ValueError, match="not all 0"):
        fuse_distances([a, b], [0.0, 0.0])
    with pytest.raises(ValueError, match="shape"):
        fuse_distances([a, np.zeros((2, 3))])


def test_curve_weights_hand_computed_and_properties():
    from semcbir_fast.search import curve_weights

    # row 1: distances 0, 1, 1, 1 -> similarities 1, 0, 0, 0, area 1/4, inverse 4;
    # row 2: 0, 1, 2, 3 -> 1, 2/3, 1/3, 0, area 1/2, inverse 2; scaled to sum to 2
    w = curve_weights([np.array([[0, 1, 1, 1.0]]), np.array([[0, 1, 2, 3.0]])])
    np.testing.assert_allclose(w, [[4 / 3, 2 / 3]])
    rng = np.random.default_rng(3)
    a, b = rng.random((6, 30)), rng.random((6, 30)) ** 3
    w = curve_weights([a, b])
    np.testing.assert_allclose(w.sum(axis=1), 2.0)
    # invariant to an increasing affine map of a signature's distances
    np.testing.assert_allclose(curve_weights([a * 7 + 3, b]), w)
    # a constant row orders nothing: weight 0; no signature orders anything: 1 each
    c = np.ones((6, 30))
    np.testing.assert_allclose(curve_weights([a, c]), [[2.0, 0.0]] * 6)
    np.testing.assert_allclose(curve_weights([c, c]), np.ones((6, 2)))
    assert curve_weights([np.zeros((2, 0))]).shape == (2, 1)
    with pytest.raises(ValueError, match="one shape"):
        curve_weights([a, b[:, :5]])
    with pytest.raises(ValueError, match="at least one"):
        curve_weights([])
    with pytest.raises(ValueError, match="finite"):
        curve_weights([np.array([[0.0, np.inf]])])


def test_penalised_keys_move_penalised_results_last():
    d = np.array([[0.5, 3.0, 0.1, 2.0]])
    p = np.array([[False, False, True, False]])
    k = penalised_keys(d, p)
    assert np.argsort(k[0], kind="stable").tolist() == [0, 3, 1, 2]
    assert penalised_keys(d) is not None and (penalised_keys(d) == d).all()


# ----------------------------------------------------------------------------- QE
def test_alpha_qe_and_average_qe():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
    q = np.array([[1.0, 0.0]], np.float32)
    got = average_qe(q, x, np.array([[0, 2]]))
    want = np.array([1.0, 0.0]) + np.array([1.0, 0.0]) + np.array([1, 1]) / np.sqrt(2)
    np.testing.assert_allclose(got[0], want / np.linalg.norm(want), rtol=1e-6)
    got = alpha_qe(q, x, np.array([[2, -1]]), alpha=3.0)  # -1 padding is skipped
    w = (1 / np.sqrt(2)) ** 3
    want = np.array([1.0, 0.0]) + w * np.array([1, 1]) / np.sqrt(2)
    np.testing.assert_allclose(got[0], want / np.linalg.norm(want), rtol=1e-6)
    # a neighbour at cosine <= 0 has weight 0 with alpha > 0
    got = alpha_qe(q, x, np.array([[1]]), alpha=3.0)
    np.testing.assert_allclose(got[0], [1, 0], atol=1e-7)
    with pytest.raises(ValueError, match="alpha"):
        alpha_qe(q, x, np.array([[0]]), alpha=-1)
    with pytest.raises(ValueError, match="neighbours must be database rows"):
        alpha_qe(q, x, np.array([[3]]))


# ----------------------------------------------------------------------------- k-reciprocal
def _kr_oracle(dd: np.ndarray, dq: np.ndarray, k1: int, k2: int, lam: float) -> np.ndarray:
    """Loop oracle of semcbir_fast.search.KReciprocal's formulation (database encoded once,
    the query as one more item without a column of its own)."""
    n = dd.shape[0]
    kk = min(k1 + 1, n)
    nbr = [list(np.argsort(dd[i], kind="stable")[:kk]) for i in range(n)]

    def recip(i, k):
        return [g for g in nbr[i][:k + 1] if i in nbr[g][:k + 1]]

    kh = max(1, round(k1 / 2))
    half = [recip(g, min(kh, kk - 1)) for g in range(n)]

    def expand(r):
        out = set(r)
        for g in r:
            rg = half[g]
            if rg and len(set(rg) & set(r)) > 2 / 3 * len(rg):
                out |= set(rg)
        return sorted(out)

    def encode(row, rstar):
        v = np.zeros(n)
        w = np.exp(-row[rstar] / row.max())
        v[rstar] = w / w.sum()
        return v

    raw = np.stack([encode(dd[g], expand(recip(g, kk - 1))) for g in range(n)])
    vdb = np.stack([raw[nbr[g][:min(k2, kk)]].mean(0) for g in range(n)])
    out = np.zeros_like(dq)
    for qi, row in enumerate(dq):
        first = list(np.argsort(row, kind="stable")[:kk])
        kth = [dd[g][nbr[g][kk - 1]] for g in range(n)]
        r = [g for g in first if row[g] <= kth[g]]
        own = encode(row, expand(r)) if r else np.zeros(n)
        vq = np.mean([own, *[raw[g] for g in first[:max(0, min(k2, kk) - 1)]]], axis=0)
        mins = np.minimum(vq[None], vdb).sum(1)
        out[qi] = (1 - lam) * (1 - mins / (2 - mins)) + lam * row / row.max()
    return out


@pytest.mark.parametrize("n,k1,k2", [(30, 5, 3), (60, 20, 6), (8, 20, 6), (40, 4, 1)])
def test_k_reciprocal_matches_the_loop_oracle(n, k1, k2):
    rng = np.random.default_rng(n + k1)
    x = rng.standard_normal((n, 5))
    dd = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    q = np.concatenate([x[:3], rng.standard_normal((4, 5))])
    dq = np.sqrt(((q[:, None] - x[None]) ** 2).sum(-1))
    kr = KReciprocal(lambda s, e: dd[s:e], n, k1=k1, k2=k2, lam=0.3)
    np.testing.assert_allclose(kr.rerank(dq), _kr_oracle(dd, dq, k1, k2, 0.3), atol=1e-12)


def test_k_reciprocal_properties_and_errors():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((20, 3)) * 0.1
    b = rng.standard_normal((20, 3)) * 0.1 + 5
    x = np.concatenate([a, b])
    dd = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    kr = KReciprocal(lambda s, e: dd[s:e], 40, k1=10, k2=3, lam=0.3)
    out = kr.rerank(dd[:1])
    # the query's cluster first (its own copy need not lead: Jaccard distances tie-break)
    assert set(np.argsort(out[0], kind="stable")[:20].tolist()) == set(range(20))
    one = KReciprocal(lambda s, e: dd[s:e], 40, k1=10, k2=3, lam=1.0)
    np.testing.assert_allclose(one.rerank(dd[:2]), dd[:2] / dd[:2].max(1, keepdims=True))
    with pytest.raises(ValueError, match=">= 0"):
        kr.rerank(-dd[:1])
    with pytest.raises(ValueError, match=r"\(nq, 40\)"):
        kr.rerank(dd[:1, :5])
    with pytest.raises(ValueError, match="lam"):
        KReciprocal(lambda s, e: dd[s:e], 40, lam=2.0)


def _points_and_rows(n, dim, seed):
    """Random points, their L2 distances and a ``rows(s, e)`` that records its calls."""
    x = np.random.default_rng(seed).standard_normal((n, dim))
    dd = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    calls = []

    def rows(s, e):
        calls.append((s, e))
        return dd[s:e]

    return x, dd, rows, calls


def test_k_reciprocal_progress_bar_same_result(monkeypatch, capsys):
    from semcbir_fast.search import rerank

    monkeypatch.setattr(rerank, "_BLOCK_FLOATS", 1500 * 200)  # blocks of 200 rows
    _, dd, rows, calls = _points_and_rows(1500, 3, seed=3)
    quiet = KReciprocal(rows, 1500, k1=6, k2=2)
    assert capsys.readouterr().err == ""
    n_quiet = len(calls)
    shown = KReciprocal(rows, 1500, k1=6, k2=2, progress=True)
    err = capsys.readouterr().err
    assert "k-reciprocal graph" in err and "4500/4500" in err  # 3 passes of 1500 items
    assert len(calls) == 2 * n_quiet
    np.testing.assert_array_equal(shown.rerank(dd[:5]), quiet.rerank(dd[:5]))


@pytest.mark.parametrize("kept", [1, 3, 1000])
def test_k_reciprocal_rows_once_and_again_only_where_needed(monkeypatch, kept):
    """The build reads every row once and computes again only the rows of the items whose
    R* reaches past their kept distances (one row per call unless consecutive, at most a
    block): the same result as the loop oracle however many that are."""
    from semcbir_fast.search import rerank

    monkeypatch.setattr(rerank, "_BLOCK_FLOATS", 300 * 50)  # blocks of 50 rows
    monkeypatch.setattr(rerank, "_KEPT", kept)
    x, dd, rows, calls = _points_and_rows(300, 4, seed=7)
    rng = np.random.default_rng(8)
    kr = KReciprocal(rows, 300, k1=8, k2=3)
    first = calls[:6]
    assert first == [(s, s + 50) for s in range(0, 300, 50)]
    again = [g for s, e in calls[6:] for g in range(s, e)]
    assert len(again) == len(set(again)) == kr.rows_recomputed
    assert all(e - s <= 50 for s, e in calls[6:])
    if kept == 1000:  # everything kept: no row twice
        assert kr.rows_recomputed == 0
    if kept == 1:  # only the neighbour lists kept: most R* reach past them
        assert kr.rows_recomputed > 100
    q = rng.standard_normal((5, 4))
    dq = np.sqrt(((q[:, None] - x[None]) ** 2).sum(-1))
    np.testing.assert_allclose(kr.rerank(dq), _kr_oracle(dd, dq, 8, 3, 0.3), atol=1e-12)


def test_k_reciprocal_from_its_arrays_reranks_the_same():
    x, dd, rows, _ = _points_and_rows(120, 3, seed=11)
    kr = KReciprocal(rows, 120, k1=7, k2=3, lam=0.2)
    arrays = kr.to_arrays()
    back = KReciprocal.from_arrays(arrays, 120, k1=7, k2=3, lam=0.2)
    assert back.rows_recomputed == kr.rows_recomputed
    q = np.random.default_rng(12).standard_normal((6, 3))
    dq = np.sqrt(((q[:, None] - x[None]) ** 2).sum(-1))
    np.testing.assert_array_equal(back.rerank(dq), kr.rerank(dq))
    np.testing.assert_array_equal(back.rerank(dd[:9]), kr.rerank(dd[:9]))


@pytest.mark.parametrize("damage, match", [
    (lambda a: a.pop("vv"), "missing"),
    (lambda a: a.__setitem__("nbr", a["nbr"][:, :-1]), "nbr has"),
    (lambda a: a["nbr"].__setitem__((3, 2), 120), "outside 0..119"),
    (lambda a: a["half_idx"].__setitem__(0, -1), "outside"),
    (lambda a: a["vp"].__setitem__(5, a["vp"][4] - 1), "vp is not non-decreasing"),
    (lambda a: a.__setitem__("ic", a["ic"][:-1]), "ic is not"),
    (lambda a: a["iv"].__setitem__(0, -0.5), "iv must be"),
    (lambda a: a["vv"].__setitem__(1, np.nan), "vv must be"),
    (lambda a: a.__setitem__("kth", a["kth"].astype(np.int64)), "kth must be"),
    (lambda a: a.__setitem__("rows_recomputed", np.array([500])), "rows_recomputed"),
])
def test_k_reciprocal_from_damaged_arrays_refused(damage, match):
    _, _, rows, _ = _points_and_rows(120, 3, seed=11)
    arrays = {k: v.copy() for k, v in KReciprocal(rows, 120, k1=7, k2=3).to_arrays().items()}
    damage(arrays)
    with pytest.raises(ValueError, match=match):
        KReciprocal.from_arrays(arrays, 120, k1=7, k2=3)
    with pytest.raises(ValueError, match="nbr has"):  # other settings, other shapes
        KReciprocal.from_arrays(KReciprocal(rows, 120, k1=7, k2=3).to_arrays(), 120, k1=9)


# ----------------------------------------------------------------------------- fused
@dataclass(frozen=True)
class ToyParams:
    scale: float = option(1.0, type=float, help="toy: scale")


@pytest.fixture
def toy():
    """A dense signature computed from label maps (class proportions): no network."""

    @register_signature
    class ToyDense(DenseSignature):
        name = "toy-dense"
        title = "Toy"
        Params = ToyParams
        requires = ("labels",)

        def encode(self, inputs, *, threads=0):
            from semcbir_fast.semantic_histogram import semantic_histograms

            h = semantic_histograms(list(inputs.label_maps), self.num_classes)
            h = np.sqrt(h) * self.params.scale
            return DenseBatch(h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12))

        def label(self):
            return "toy"

        def describe(self):
            return "toy dense"

    yield ToyDense
    unregister_signature("toy-dense")


def _maps(n: int, m: int = 5, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a = np.full((16, 16), i % m, np.uint8)
        a[rng.integers(0, 16, 40), rng.integers(0, 16, 40)] = rng.integers(0, m, 40)
        out.append(a)
    return out


def _adaptive(rows: list[np.ndarray]) -> np.ndarray:
    """Query-adaptive weights written out: per row, the similarities min-max normalised and
    sorted, the area under that curve (mean height of its N unit steps), its inverse, the
    row's weights scaled to sum to the number of components."""
    inv = np.zeros((rows[0].shape[0], len(rows)))
    for j, r in enumerate(rows):
        for q in range(r.shape[0]):
            curve = np.sort((r[q].max() - r[q]) / (r[q].max() - r[q].min()))[::-1]
            inv[q, j] = 1.0 / curve.mean()
    return inv * len(rows) / inv.sum(axis=1, keepdims=True)


def _manual(sig: FusedSignature, enc: DenseBatch, q: DenseBatch) -> np.ndarray:
    """The fused distances written out: components' raw distances / their database std,
    summed (equal weights; adaptive: times the mean of the two images' adaptive weights),
    then k-reciprocal."""
    from semcbir_fast import hamming_distances
    from semcbir_fast.search import float_distances

    def raw(b1, b2):
        return [float_distances(b1.extras["c0"], b2.extras["c0"]).astype(np.float64),
                hamming_distances(b1.extras["c1"], b2.extras["c1"]).astype(np.float64)]

    sd = [r.std() for r in raw(enc, enc)]
    adaptive = sig.params.fusion_weights == "adaptive"
    ax = _adaptive(raw(enc, enc))

    def fused(a, b):
        rs = raw(a, b)
        aq = _adaptive(rs)
        return sum(r / s * ((aq[:, j, None] + ax[None, :, j]) / 2 if adaptive else 1.0)
                   for j, (r, s) in enumerate(zip(rs, sd)))
    dd = fused(enc, enc)
    if sig.params.rerank == "none":
        return fused(q, enc)
    kr = KReciprocal(lambda s, e: dd[s:e], len(enc))
    return kr.rerank(fused(q, enc))


@pytest.mark.parametrize("weights", ["fixed", "adaptive"])
@pytest.mark.parametrize("rerank", ["none", "k-reciprocal"])
def test_fused_search_is_the_written_out_fusion(toy, rerank, weights):
    maps = _maps(60)
    sig = create_signature("fused", num_classes=5, components=("toy-dense", "sbs"),
                           rerank=rerank, fusion_weights=weights)
    assert sig.requires == ("labels",)
    enc = sig.encode(Inputs(maps))
    index = sig.new_index()
    index.add(enc)
    q = enc[[0, 7, 33]]
    d, i = index.search(q, 60)
    want = _manual(sig, enc, q)
    if weights == "adaptive":
        fixed = create_signature("fused", num_classes=5, components=("toy-dense", "sbs"),
                                 rerank=rerank, fusion_weights="fixed")
        assert np.abs(_manual(fixed, enc, q) - want).max() > 1e-3  # the weights matter
        full = sig.fused_rows(index, enc)  # symmetric, as the re-ranking needs
        np.testing.assert_allclose(full, full.T, rtol=1e-9, atol=1e-12)
    for r in range(3):
        order = np.argsort(want[r].astype(np.float32), kind="stable")
        np.testing.assert_array_equal(i[r], order)
        np.testing.assert_allclose(d[r], want[r][order], rtol=1e-5, atol=1e-6)
        assert (np.diff(d[r]) >= 0).all()


@pytest.mark.parametrize("tty", [False, True])
def test_fused_graph_progress_from_the_threshold_on_a_terminal(toy, monkeypatch, capsys, tty):
    from semcbir_fast.signatures import fused

    sig = create_signature("fused", num_classes=5, components=("toy-dense", "sbs"))
    index = sig.new_index()
    index.add(sig.encode(Inputs(_maps(30))))
    monkeypatch.setattr(fused, "_GRAPH_PROGRESS_ROWS", 31)  # one row short of the bar
    monkeypatch.setattr(fused.sys.stderr, "isatty", lambda: tty, raising=False)
    index.search(index.batch[[0]], 5)
    assert capsys.readouterr().err == ""
    index.add(sig.encode(Inputs(_maps(1, seed=1))))  # 31 rows: a new graph, and its bar
    index.search(index.batch[[0]], 5)
    assert ("k-reciprocal graph" in capsys.readouterr().err) is tty


def test_fused_qe_weights_and_roundtrip(toy, tmp_path):
    maps = _maps(50, seed=2)
    sig = create_signature("fused", num_classes=5, components=("toy-dense", "sbs"),
                           qe="alpha", weights=(1.0, 0.5))
    enc = sig.encode(Inputs(maps))
    index = sig.new_index(metadata={"model": "toy"})
    index.add(enc, keys=[f"{i}.png" for i in range(50)])
    d, i = index.search(enc[:5], 10)
    assert (i[:, 0] == np.arange(5)).all() or (d[:, 0] <= d[:, 1]).all()
    path = index.save(tmp_path / "f.sbdi")
    back = load_index(path)
    assert isinstance(back, DenseIndex) and isinstance(back.signature, FusedSignature)
    assert back.signature.params == sig.params
    d2, i2 = back.search(back.reconstruct_batch(range(5)), 10)
    np.testing.assert_array_equal(i2, i)
    np.testing.assert_allclose(d2, d, rtol=1e-6)
    assert "qe" in back.signature.label() and "toy-dense x1" in back.signature.describe()
    # padding past the database
    d3, i3 = back.search(enc[:1], 60)
    assert (i3[0, 50:] == -1).all() and np.isinf(d3[0, 50:]).all()


def test_fused_prepared_index_saves_what_its_searches_derive(toy, tmp_path, monkeypatch):
    maps = _maps(60, seed=5)
    sig = create_signature("fused", num_classes=5, components=("toy-dense", "sbs"))
    enc = sig.encode(Inputs(maps))
    index = sig.new_index()
    index.add(enc)
    d, i = index.search(enc[:8], 20)  # built on this first search
    plain = load_index(index.save(tmp_path / "searched.sbdi"))  # what a search built is kept
    assert sorted(k[0] for k in plain._derived) == ["adaptive-weights", "k-reciprocal", "stats"]
    fresh = sig.new_index()
    fresh.add(enc)
    assert load_index(fresh.save(tmp_path / "bare.sbdi"))._derived == {}  # nothing built
    fresh.prepare()
    back = load_index(fresh.save(tmp_path / "prepared.sbdi"))
    assert sorted(k[0] for k in back._derived) == ["adaptive-weights", "k-reciprocal", "stats"]
    # searches of the loaded index use the loaded structures: the only distance rows
    # computed are the 8 queries' (building would take the database's 60 rows, and more)
    raw_rows = FusedSignature._raw_rows
    computed = []

    def counting(self, ix, c, queries, threads):
        computed.append(len(queries))
        return raw_rows(self, ix, c, queries, threads)

    monkeypatch.setattr(FusedSignature, "_raw_rows", counting)
    d2, i2 = back.search(back.reconstruct_batch(range(8)), 20)
    assert computed == [8, 8]  # one block of queries per component
    np.testing.assert_array_equal(i2, i)
    np.testing.assert_array_equal(d2, d)
    monkeypatch.undo()
    # an add drops them; the next save writes none until they are built again
    back.add(enc[:3])
    assert back._derived == {}
    assert load_index(back.save(tmp_path / "added.sbdi"))._derived == {}


def test_fused_derived_arrays_that_do_not_fit_are_refused(toy, tmp_path, monkeypatch):
    from semcbir_fast.index import IndexFormatError

    maps = _maps(30, seed=6)
    sig = create_signature("fused", num_classes=5, components=("toy-dense", "sbs"))
    index = sig.new_index()
    index.add(sig.encode(Inputs(maps)))
    index.prepare()
    good = sig.derived_sections(index.built)
    bad_cases = {
        "weights": [(n, -a if n == "weights" else a) for n, a in good],
        "stats": [(n, np.zeros((2, 2)) if n == "stats" else a) for n, a in good],
        "graph.nbr": [(n, a + 30 if n == "graph.nbr" else a) for n, a in good],
        "unknown": [*good, ("rotation", np.eye(2))],
    }
    for what, sections in bad_cases.items():
        monkeypatch.setattr(FusedSignature, "derived_sections", lambda self, built, s=sections: s)
        path = index.save(tmp_path / f"{what}.sbdi")
        with pytest.raises(IndexFormatError, match="corrupted: derived arrays"):
            load_index(path)
    # other settings than those the arrays were built for: refused, not used
    other = create_signature("fused", num_classes=5, components=("toy-dense", "sbs"),
                             fusion_weights="fixed")
    with pytest.raises(ValueError, match="do not belong"):
        other.restore_derived(index, dict(good))


def test_fused_with_a_sparse_component(tmp_path):
    from semcbir_fast.features import Features

    rng = np.random.default_rng(4)
    maps = _maps(30, seed=4)
    feats = [Features(rng.random((40, 2)).astype(np.float32) * 15,
                      rng.random((40, 64)).astype(np.float32), (16, 16), "kaze")
             for _ in maps]
    sig = create_signature("fused", num_classes=5, components=("sbs", "sbovp"))
    assert sig.requires == ("labels", "features") and sig.feature_method == "kaze"
    inputs = Inputs(maps, feats)
    sig.fit(inputs)
    enc = sig.encode(inputs)
    index = sig.new_index()
    index.add(enc)
    d, i = index.search(enc[:4], 30)
    assert (np.diff(d, axis=1) >= 0).all() and i.shape == (4, 30)
    back = load_index(index.save(tmp_path / "s.sbdi"))
    np.testing.assert_array_equal(back.search(back.reconstruct_batch(range(4)), 30)[1], i)


def test_fused_params_errors(toy):
    with pytest.raises(ValueError, match="repeat"):
        create_signature("fused", num_classes=5, components=("sbs", "sbs"))
    with pytest.raises(ValueError, match="itself"):
        create_signature("fused", num_classes=5, components=("fused",))
    with pytest.raises(ValueError, match="one finite value"):
        create_signature("fused", num_classes=5, components=("sbs", "toy-dense"), weights=(1,))
    with pytest.raises(ValueError, match="unknown signature"):
        create_signature("fused", num_classes=5, components=("nope",))
    with pytest.raises(ValueError, match="k1"):
        create_signature("fused", num_classes=5, k1=0)
    with pytest.raises(ValueError, match="fusion_weights"):
        create_signature("fused", num_classes=5, fusion_weights="learned")


def test_fused_backbone_reaches_its_deep_components_only():
    """``backbone`` of fused is handed to the components that run one (their Params has the
    field) and to no other; a mismatching ``component_signatures`` is refused; an index
    header written before fused had the field takes its deep components' backbone."""
    from semcbir_fast.signatures.cnn import DEFAULT_BACKBONE, FUSED_BACKBONE

    sig = create_signature("fused", num_classes=5)
    assert sig.params.backbone == FUSED_BACKBONE
    assert sig.components[0].params.backbone == FUSED_BACKBONE
    assert not hasattr(sig.components[1].params, "backbone")  # sbs
    assert FUSED_BACKBONE in sig.describe()
    assert create_signature("cnn", num_classes=5).params.backbone == DEFAULT_BACKBONE
    lite1 = create_signature("fused", num_classes=5, components=("regions", "sbs", "cnn"),
                             backbone="efficientnet-lite1")
    assert [c.params.backbone for c in lite1.components if c.name != "sbs"] == \
        ["efficientnet-lite1"] * 2
    with pytest.raises(ValueError, match="do not use the fused backbone"):
        create_signature("fused", num_classes=5, backbone="efficientnet-lite1",
                         components=("cnn", "sbs"), component_signatures=[create_signature("cnn", num_classes=5),
                                               create_signature("sbs", num_classes=5)])
    with pytest.raises(ValueError, match="backbone"):
        create_signature("fused", num_classes=5, backbone="")
    old = lite1.to_header()
    del old["params"]["backbone"]
    back = FusedSignature.from_header(old)
    assert back.params.backbone == "efficientnet-lite1" and back.params == lite1.params
    # no deep component: the field is kept but names nothing the fusion runs
    assert "efficientnet" not in create_signature("fused", num_classes=5,
                                                  components=("sbs",)).describe()


def test_fused_flip_reaches_its_deep_components_and_the_cache_key(monkeypatch):
    """``flip`` is handed like the backbone (every deep component, not sbs), a mismatching
    component is refused, an index header without the field reads as its components', and
    the descriptors asked for carry it (so a flipped and a plain descriptor never share a
    cache entry)."""
    from semcbir_fast.deep import extract
    from semcbir_fast.signatures.cnn import FUSED_BACKBONE

    sig = create_signature("fused", num_classes=5, components=("cnn", "sbs", "regions"),
                           flip=True)
    assert [c.params.flip for c in sig.components if c.name != "sbs"] == [True, True]
    assert not hasattr(sig.components[1].params, "flip")
    assert "flipped" in sig.describe() and "flip" in sig.label()
    assert create_signature("fused", num_classes=5).params.flip is False
    with pytest.raises(ValueError, match="do not use the fused flip"):
        create_signature("fused", num_classes=5, flip=True, components=("cnn", "sbs"),
                         component_signatures=[create_signature("cnn", num_classes=5,
                                                                backbone=FUSED_BACKBONE),
                                               create_signature("sbs", num_classes=5)])
    with pytest.raises(ValueError, match="flip"):
        create_signature("cnn", num_classes=5, flip="yes")
    assert sig.params.fusion_weights == "adaptive"  # the default
    old = sig.to_header()
    del old["params"]["fusion_weights"]  # an index from before the field: built fixed
    assert FusedSignature.from_header(old).params.fusion_weights == "fixed"
    old = sig.to_header()
    del old["params"]["flip"]
    back = FusedSignature.from_header(old)
    assert back.params.flip is True and back.params == sig.params
    seen = []

    def fake(paths, what, reducer, *, flip=False, **kw):
        seen.append((what, flip))
        return {"gap": np.ones((len(paths), 4), np.float32)}

    monkeypatch.setattr(extract, "extract_cached", fake)
    for flip in (False, True):
        create_signature("cnn", num_classes=5, flip=flip).raw(Inputs(paths=["a.jpg"]))
    assert seen == [("global", False), ("global", True)]


def test_backbone_flag_defaults_per_signature():
    """``--backbone`` is one flag for every deep signature; not given, each takes its own
    default (fused's may differ from cnn's), given, it reaches the signature asked for."""
    from semcbir_fast.cli import build_parser
    from semcbir_fast.cli._common import check_foreign_options, signature_params
    from semcbir_fast.signatures import get_signature
    from semcbir_fast.signatures.cnn import DEFAULT_BACKBONE, FUSED_BACKBONE

    parser = build_parser()
    for name, want in (("fused", FUSED_BACKBONE), ("cnn", DEFAULT_BACKBONE),
                       ("regions", DEFAULT_BACKBONE)):
        args = parser.parse_args(["eval", "--dataset", "msrc", "--signature", name])
        (p,) = signature_params(args, get_signature(name), several=True)
        assert p.backbone == want
        args = parser.parse_args(["eval", "--dataset", "msrc", "--signature", name,
                                  "--backbone", "efficientnet-lite1"])
        check_foreign_options(args, get_signature(name))  # fused owns the flag too
        (p,) = signature_params(args, get_signature(name), several=True)
        assert p.backbone == "efficientnet-lite1"
        assert p.flip is False
        args = parser.parse_args(["eval", "--dataset", "msrc", "--signature", name, "--flip"])
        check_foreign_options(args, get_signature(name))
        (p,) = signature_params(args, get_signature(name), several=True)
        assert p.flip is True
    # a shared flag given to a signature without it names every signature that has it
    from semcbir_fast.cli._common import CLIError

    args = parser.parse_args(["eval", "--dataset", "msrc", "--signature", "sbs", "--flip",
                              "--pooling", "gem"])
    with pytest.raises(CLIError, match="^--flip applies to --signature cnn / fused / "
                       "neural-codes / regions only; --pooling applies to --signature cnn "
                       "only$"):
        check_foreign_options(args, get_signature("sbs"))
    args = parser.parse_args(["eval", "--dataset", "msrc", "--signature", "fused",
                              "--fusion-weights", "fixed"])
    (p,) = signature_params(args, get_signature("fused"), several=True)
    assert p.fusion_weights == "fixed"
    (p,) = signature_params(parser.parse_args(["eval", "--dataset", "msrc", "--signature",
                                               "fused"]), get_signature("fused"), several=True)
    assert p.fusion_weights == "adaptive"
