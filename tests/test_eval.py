"""Retrieval metrics (hand-computed, brute force, torchmetrics), data sets, evaluation runs,
label-map cache and reports."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from semcbir_fast.eval import (
    Dataset,
    average_precision,
    evaluate_sbs,
    mean_average_precision,
    per_category_ap,
    precision_at_k,
    precision_at_r,
    precision_recall_curve,
    split_disjoint,
)
from semcbir_fast.eval import datasets as dsets
from semcbir_fast.eval.cache import (
    LabelStore,
    label_cache_path,
    load_label_cache,
    save_label_cache,
)

# MSRC v1 ground truth ("oracle"), query-in-db, query kept, ties by smaller id; measured with
# `semcbir eval --dataset msrc --oracle` (also printed by examples/msrc_demo.py).
MSRC_ORACLE_MAP = {0: 0.8474, 1: 0.8895, 2: 0.8948, 3: 0.8907}


# ----------------------------------------------------------------------------- hand-computed
def test_average_precision_hand_computed():
    ranked = np.array([[1, 0, 1, 0, 0], [0, 0, 0, 1, 1], [2, 2, 2, 2, 2]])
    q = np.array([1, 1, 1])
    # query 0: hits at ranks 1 and 3 -> (1/1 + 2/3) / 2
    # query 1: hits at ranks 4 and 5 -> (1/4 + 2/5) / 2
    # query 2: no relevant item -> 0
    np.testing.assert_allclose(
        average_precision(ranked, q), [(1 + 2 / 3) / 2, (1 / 4 + 2 / 5) / 2, 0.0]
    )
    # a truncated ranking: 3 relevant items exist, the third was not retrieved
    np.testing.assert_allclose(
        average_precision(ranked[:1], [1], n_relevant=[3]), [(1 + 2 / 3) / 3]
    )
    assert mean_average_precision(ranked[:2], q[:2]) == pytest.approx(((5 / 3) / 2 + 0.65 / 2) / 2)
    np.testing.assert_allclose(precision_at_k(ranked, q, 2), [0.5, 0.0, 0.0])
    np.testing.assert_allclose(precision_at_k(ranked, q, 5), [0.4, 0.4, 0.0])
    np.testing.assert_allclose(precision_at_r(ranked, q), [0.5, 0.0, 0.0])  # R = 2, 2, 0
    np.testing.assert_allclose(precision_at_r(ranked[:1], [1], [3]), [2 / 3])


def test_ties_by_id_and_tie_averaged_hand_computed():
    # distances 0, 0, 1; the tied pair is [non-relevant, relevant] in id order
    ranked = np.array([[0, 1, 1]])
    dist = np.array([[0, 0, 1]])
    # as ranked (ties by smaller id): hits at ranks 2, 3 -> (1/2 + 2/3) / 2
    assert average_precision(ranked, [1])[0] == pytest.approx((1 / 2 + 2 / 3) / 2)
    # the other order of the tie: hits at 1, 3 -> (1 + 2/3) / 2; expected value = the mean
    expected = ((1 / 2 + 2 / 3) / 2 + (1 + 2 / 3) / 2) / 2
    assert average_precision(ranked, [1], distances=dist)[0] == pytest.approx(expected)
    # P@1: 0 as ranked, 1/2 in expectation
    assert precision_at_k(ranked, [1], 1)[0] == 0.0
    assert precision_at_k(ranked, [1], 1, distances=dist)[0] == pytest.approx(0.5)
    # no ties: identical to the plain value
    d2 = np.array([[0, 1, 2]])
    assert average_precision(ranked, [1], distances=d2)[0] == pytest.approx(
        average_precision(ranked, [1])[0]
    )


def test_tie_averaged_metrics_equal_brute_force_over_orders():
    rng = np.random.default_rng(1)
    for _ in range(150):
        n = int(rng.integers(1, 7))
        lab = rng.integers(0, 2, n)
        d = np.sort(rng.integers(0, 3, n))
        r_total = int(lab.sum() + rng.integers(0, 2))
        groups = [np.flatnonzero(d == v) for v in np.unique(d)]
        aps, pks = [], {k: [] for k in range(1, n + 1)}
        for perms in itertools.product(*[list(itertools.permutations(g)) for g in groups]):
            order = np.concatenate(perms)
            lo = lab[order]
            aps.append(average_precision(lo[None], [1], n_relevant=[r_total])[0])
            for k, vals in pks.items():
                vals.append(lo[:k].mean())
        got = average_precision(lab[None], [1], n_relevant=[r_total], distances=d[None])[0]
        assert got == pytest.approx(np.mean(aps), abs=1e-12)
        for k, vals in pks.items():
            assert precision_at_k(lab[None], [1], k, distances=d[None])[0] == pytest.approx(
                np.mean(vals)
            )


def test_precision_recall_curve_hand_computed():
    # hits at ranks 1 and 3 of 5, R = 2: recall 0.5 at P=1, recall 1 at P=2/3
    rec, prec = precision_recall_curve(np.array([[1, 0, 1, 0, 0]]), [1])
    np.testing.assert_allclose(rec, np.linspace(0, 1, 11))
    np.testing.assert_allclose(prec, [1] * 6 + [2 / 3] * 5)
    # with R = 4 (two never retrieved) precision is 0 beyond recall 0.5
    _, prec = precision_recall_curve(np.array([[1, 0, 1, 0, 0]]), [1], n_relevant=[4])
    np.testing.assert_allclose(prec, [1, 1, 1, 2 / 3, 2 / 3, 2 / 3, 0, 0, 0, 0, 0])
    rec, prec = precision_recall_curve(np.array([[0, 1]]), [1], recall_levels=[0.0, 1.0])
    np.testing.assert_allclose(prec, [0.5, 0.5])


def test_per_category_ap():
    out = per_category_ap([1.0, 0.5, 0.2, 0.4], [3, 3, 7, 7], {3: "cats", 7: "dogs"})
    assert out == {"cats": pytest.approx(0.75), "dogs": pytest.approx(0.3)}
    assert list(per_category_ap([1.0, 0.0], [1, 0])) == [0, 1]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: average_precision(np.zeros((2, 3)), [0]), r"\(nq, n\)"),
        (lambda: precision_at_k(np.zeros((1, 3)), [0], 0), "k must be"),
        (lambda: precision_at_k(np.zeros((1, 3)), [0], 4), "exceeds the ranking length"),
        (lambda: average_precision(np.ones((1, 3)), [1], n_relevant=[1]), "smaller than"),
        (lambda: average_precision(np.ones((1, 3)), [1], distances=[[2, 1, 0]]), "sorted"),
        (lambda: average_precision(np.ones((1, 3)), [1], distances=[[0, 1]]), "shape"),
        (lambda: precision_recall_curve(np.ones((1, 3)), [1], recall_levels=1), ">= 2"),
    ],
)
def test_metric_argument_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ----------------------------------------------------------------------------- torchmetrics
def test_metrics_match_torchmetrics_on_random_rankings():
    torch = pytest.importorskip("torch")
    tmf = pytest.importorskip("torchmetrics.functional.retrieval")
    rng = np.random.default_rng(7)
    for _ in range(40):
        n = int(rng.integers(5, 60))
        # distinct (no ties) and > 0: torchmetrics counts a result with score <= 0 as
        # non-relevant whatever its target
        scores = rng.permutation(n).astype(np.float64) + 1.0
        target = rng.random(n) < rng.uniform(0.05, 0.6)
        if not target.any():
            target[rng.integers(0, n)] = True
        order = np.argsort(-scores, kind="stable")
        ranked = target[order].astype(np.int64)[None]
        p, t = torch.tensor(scores), torch.tensor(target)
        assert average_precision(ranked, [1])[0] == pytest.approx(
            float(tmf.retrieval_average_precision(p, t)), abs=1e-6
        )
        k = int(rng.integers(1, n + 1))
        assert precision_at_k(ranked, [1], k)[0] == pytest.approx(
            float(tmf.retrieval_precision(p, t, top_k=k)), abs=1e-6
        )
        assert precision_at_r(ranked, [1])[0] == pytest.approx(
            float(tmf.retrieval_r_precision(p, t)), abs=1e-6
        )


# ----------------------------------------------------------------------------- data sets
def _tree(tmp_path: Path) -> Path:
    import cv2

    rng = np.random.default_rng(0)
    root = tmp_path / "tree"
    for cat, n in (("cats", 4), ("dogs", 3), ("empty", 0)):
        (root / cat / "sub").mkdir(parents=True)
        for i in range(n):
            where = root / cat / ("sub" if i == 0 else "")
            cv2.imwrite(
                str(where / f"img{i + 1}0.png"), rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
            )
    (root / "cats" / "notes.txt").write_text("not an image")
    (root / "cats" / ".hidden.png").write_bytes(b"")
    return root


def test_folders_dataset_and_find_images(tmp_path):
    root = _tree(tmp_path)
    ds = dsets.folders(root)
    assert len(ds) == 7
    assert ds.category_names == {0: "cats", 1: "dogs"}
    assert ds.categories.tolist() == [0, 0, 0, 0, 1, 1, 1]
    names = [p.relative_to(root).as_posix() for p in ds.images[:4]]
    assert names == ["cats/img20.png", "cats/img30.png", "cats/img40.png", "cats/sub/img10.png"]
    assert dsets.natural_key("a2") < dsets.natural_key("a10")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dsets.find_images(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no images"):
        dsets.folders(root / "empty")
    with pytest.raises(ValueError, match="dataset must be one of"):
        dsets.load_dataset("imagenet")


def test_limit_is_stratified_and_split_disjoint():
    ds = Dataset("x", Path("."), [Path(f"{i}.jpg") for i in range(30)], np.repeat([0, 1, 2], 10))
    sub = ds.limit(7)
    assert len(sub) == 7 and sorted(np.bincount(sub.categories).tolist()) == [2, 2, 3]
    assert ds.limit(100) is ds
    q, db = split_disjoint(ds.categories, 2)
    assert q.tolist() == [0, 1, 10, 11, 20, 21]
    assert len(db) == 24 and not set(q) & set(db)
    with pytest.raises(ValueError, match="cannot take 10 queries"):
        split_disjoint(ds.categories, 10)
    with pytest.raises(ValueError, match="one entry per image"):
        Dataset("x", Path("."), [Path("a")], np.array([0, 1]))


@pytest.fixture(scope="module")
def msrc_ds():
    try:
        ds = dsets.msrc()
    except FileNotFoundError:
        pytest.skip("MSRC v1 data not found (set SEMCBIR_DATA)")
    if not ds.has_ground_truth:
        pytest.skip("MSRC v1 ground-truth label maps not found")
    return ds


@pytest.fixture(scope="module")
def msrc_maps(msrc_ds):
    return [msrc_ds.read_label_map(i) for i in range(len(msrc_ds))]


def test_real_dataset_layouts(msrc_ds):
    assert len(msrc_ds) == 240 and np.bincount(msrc_ds.categories).tolist()[1:] == [30] * 8
    assert msrc_ds.label_classes[0] == "void" and msrc_ds.ignore_index == 0
    assert msrc_ds.label_colors[7] == (128, 128, 128)  # sky
    try:
        corel = dsets.corel1k()
    except FileNotFoundError:
        pytest.skip("Corel-1K not found")
    assert len(corel) == 1000 and np.bincount(corel.categories).tolist() == [100] * 10
    assert corel.images[10].name == "10.jpg" and corel.category_names[3] == "buses"


# ----------------------------------------------------------------------------- evaluation
def test_msrc_oracle_map_per_blocks(msrc_ds, msrc_maps):
    res = evaluate_sbs(msrc_ds, msrc_maps, num_classes=14, ignore_index=0, levels=[0, 1, 2, 3])
    got = {r.levels: round(r.map, 4) for r in res.results}
    assert got == MSRC_ORACLE_MAP
    best = res.best()
    assert best.blocks == 16
    assert 0.8 < best.p_at_r < best.map < 1 and best.p_at_k[20] > 0.85
    # paper 000 Table 3's layout, with the paper's rows beside ours
    table = res.table()
    assert "4^3=64" in table and "paper 000 Table 3, Mseg" in table and "0.8948" in table
    d = res.to_dict()
    assert d["paper"]["rows"]["paper 000 Table 3, Mseg"] == [0.79, 0.83, 0.81, 0.89]
    json.dumps(d)


def test_exclude_query_and_disjoint_modes(msrc_ds, msrc_maps):
    ds = msrc_ds.limit(60)
    maps = [msrc_maps[msrc_ds.images.index(p)] for p in ds.images]
    inc = evaluate_sbs(ds, maps, num_classes=14, ignore_index=0, levels=[1], top=5)
    exc = evaluate_sbs(
        ds, maps, num_classes=14, ignore_index=0, levels=[1], exclude_query=True, top=5
    )
    # the query is never among its own results when excluded
    assert not np.any(exc.results[0].top_ids == np.arange(60)[:, None])
    assert exc.results[0].map < inc.results[0].map
    dis = evaluate_sbs(
        ds,
        maps,
        num_classes=14,
        ignore_index=0,
        levels=[1],
        mode="disjoint",
        queries_per_category=2,
    )
    assert dis.settings["queries"] == 16 and dis.settings["database"] == 44
    assert not set(dis.query_idx) & set(dis.db_idx)
    with pytest.raises(ValueError, match="only applies"):
        evaluate_sbs(ds, maps, num_classes=14, mode="disjoint", exclude_query=True)
    with pytest.raises(ValueError, match="one map per image"):
        evaluate_sbs(ds, maps[:3], num_classes=14)


def test_evaluation_ranks_ties_by_smaller_id():
    # four identical maps: every query ties with all; ranking = ids ascending
    maps = [np.zeros((4, 4), np.uint8)] * 4
    ds = Dataset("t", Path("."), [Path(f"{i}.png") for i in range(4)], [0, 1, 0, 1])
    res = evaluate_sbs(ds, maps, num_classes=2, levels=[0], top=4)
    assert res.results[0].top_ids.tolist() == [[0, 1, 2, 3]] * 4
    # category 0 queries: relevant at ranks 1, 3; category 1: ranks 2, 4
    ap0, ap1 = (1 + 2 / 3) / 2, (1 / 2 + 2 / 4) / 2
    assert res.results[0].map == pytest.approx((ap0 + ap1) / 2)
    # averaged over tie orders both categories get the same expected AP
    assert res.results[0].map_ties_avg == pytest.approx(
        average_precision(np.array([[1, 1, 0, 0]]), [1], distances=[[0, 0, 0, 0]])[0]
    )


# ----------------------------------------------------------------------------- cache + report
def test_label_cache_roundtrip(tmp_path):
    maps = [np.arange(6, dtype=np.uint8).reshape(2, 3), np.full((4, 1), 300, np.uint16)]
    folder = label_cache_path("my model/x", "ab" * 32, tmp_path)
    assert folder.parent == tmp_path / "labels" and "/" not in folder.name
    path = folder / "entry.npz"
    save_label_cache(path, maps, ["a.jpg", "b.jpg"])
    back = load_label_cache(path, ["a.jpg", "b.jpg"])
    assert back is not None and [m.tolist() for m in back] == [m.tolist() for m in maps]
    assert load_label_cache(path, ["a.jpg", "c.jpg"]) is None  # other images: a miss
    path.write_bytes(b"garbage")
    assert load_label_cache(path) is None
    assert load_label_cache(tmp_path / "none.npz") is None


def test_label_store_per_image(tmp_path):
    """One entry per image, keyed by the image file's path, size and mtime."""
    imgs = []
    for i in range(3):
        f = tmp_path / f"im{i}.png"
        f.write_bytes(bytes([i]) * 10)
        imgs.append(f)
    store = LabelStore(tmp_path / "store")
    maps = [np.full((2, i + 1), i, np.uint8) for i in range(3)]
    assert all(store.get(f) is None for f in imgs)
    for f, m in zip(imgs, maps):
        store.put(f, m)
    for f, m in zip(imgs, maps):
        np.testing.assert_array_equal(store.get(f), m)
    assert len(list((tmp_path / "store").glob("*/*.npz"))) == 3
    imgs[1].write_bytes(b"changed!!!!")  # another size: a miss
    assert store.get(imgs[1]) is None
    store.entry(imgs[0]).write_bytes(b"junk")  # corrupt entry: a miss, then rewritten
    assert store.get(imgs[0]) is None
    store.put(imgs[0], maps[0])
    np.testing.assert_array_equal(store.get(imgs[0]), maps[0])
    # an entry copied onto another image's name is refused (the path is checked)
    store.entry(imgs[2]).write_bytes(store.entry(imgs[0]).read_bytes())
    assert store.get(imgs[2]) is None


class _CountingSegmenter:
    """A stand-in with the Segmenter's streaming contract: labels = first pixel value."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.meta = type("M", (), {"name": "count"})()
        self.device = "cpu"

    def segment(self, *a, **k):  # marks it as a loaded segmenter
        raise AssertionError

    def iter_batches(self, paths, *, batch_size, on_error, progress):
        from types import SimpleNamespace

        for s in range(0, len(paths), batch_size):
            idx, labs, bad = [], [], []
            for j in range(s, min(s + batch_size, len(paths))):
                data = Path(paths[j]).read_bytes()
                self.seen.append(paths[j])
                if data == b"bad":
                    bad.append((j, paths[j], "not an image"))
                else:
                    idx.append(j)
                    labs.append(np.full((2, 2), data[0], np.uint8))
            yield SimpleNamespace(indices=idx, labels=labs, failed=bad)


def test_segment_paths_segments_only_the_misses(tmp_path):
    from semcbir_fast.eval.cache import segment_paths

    imgs = []
    for i in range(5):
        f = tmp_path / f"{i}.img"
        f.write_bytes(b"bad" if i == 3 else bytes([10 + i]))
        imgs.append(str(f))
    store = LabelStore(tmp_path / "s")
    seg = _CountingSegmenter()
    ok, labs, failed, hits = segment_paths(imgs[:2], seg, store=store, batch_size=2)
    assert hits == 0 and ok == imgs[:2] and seg.seen == imgs[:2]
    seg.seen.clear()
    ok, labs, failed, hits = segment_paths(imgs, seg, store=store, batch_size=2)
    assert hits == 2 and seg.seen == imgs[2:]  # the first two came from the cache
    assert ok == [imgs[i] for i in (0, 1, 2, 4)]
    assert [int(m[0, 0]) for m in labs] == [10, 11, 12, 14]
    assert failed == [(imgs[3], "not an image")]
    # a factory is called only when something misses
    calls = []
    ok2, _, _, hits = segment_paths([imgs[0], imgs[4]], lambda: calls.append(1) or seg,
                                    store=store)
    assert hits == 2 and not calls and ok2 == [imgs[0], imgs[4]]
    seg.seen.clear()
    segment_paths(imgs[:2], seg, store=store, use_cache=False)
    assert seg.seen == imgs[:2]  # no cache: segmented again


def test_report_files(msrc_ds, msrc_maps, tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("cv2")
    from semcbir_fast.report import write_report

    ds = msrc_ds.limit(48)
    maps = [msrc_maps[msrc_ds.images.index(p)] for p in ds.images]
    res = evaluate_sbs(
        ds,
        maps,
        num_classes=14,
        ignore_index=0,
        levels=[0, 2],
        top=6,
        settings={"segmentation": "oracle", "class_names": ds.label_classes},
        keep_label_maps=True,
    )
    files = write_report(res, tmp_path / "rep", gallery_queries=1, gallery_k=5, command="test")
    for key in ("markdown", "json", "map_vs_blocks", "pr_curves", "per_category_ap", "gallery"):
        assert files[key].is_file() and files[key].stat().st_size > 200, key
    for png in ("map_vs_blocks.png", "pr_curves.png", "per_category_ap.png", "gallery.png"):
        assert (tmp_path / "rep" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(files["json"].read_text())
    assert [r["params"]["levels"] for r in data["results"]] == [0, 2]
    assert data["settings"]["mode"] == "query-in-db" and "semcbir_fast" in data["versions"]
    md = files["markdown"].read_text()
    assert "Table 3" in md and "paper 000 Table 3, Mseg, HRNet-W48" in md and "gallery.html" in md
    html = files["gallery"].read_text()
    assert html.count('class="q"') == 8  # one query per category
    assert 'class="ok"' in html and 'class="ov"' in html and 'id="ovt"' in html
    thumbs = [s.split('"')[0] for s in html.split('src="')[1:]]
    assert thumbs and all((tmp_path / "rep" / t).is_file() for t in thumbs)  # relative links
    emb = write_report(res, tmp_path / "rep2", gallery_queries=[0], gallery_k=2, embed=True)
    assert "data:image/jpeg;base64," in emb["gallery"].read_text()
    assert not (tmp_path / "rep2" / "thumbs").exists()


# ----------------------------------------------------------------------------- sbovp / hybrid
@pytest.fixture(scope="module")
def msrc_small(msrc_ds, msrc_maps):
    pytest.importorskip("cv2")
    from semcbir_fast.features import available_methods, extract_features

    if "kaze" not in available_methods():
        pytest.skip("KAZE needs opencv-contrib-python-headless (the package's dependency)")
    ds = msrc_ds.limit(32)
    maps = [msrc_maps[msrc_ds.images.index(p)] for p in ds.images]
    feats = extract_features([str(p) for p in ds.images], "kaze", progress=False)
    return ds, maps, feats


def test_evaluate_signature_sbovp_and_hybrid(msrc_small):
    from semcbir_fast.eval.evaluate import SignatureResult, evaluate_signature
    from semcbir_fast.hybrid import hybrid_signatures, hybrid_topk

    ds, maps, feats = msrc_small
    kw = {"num_classes": 14, "ignore_index": 0, "features": feats, "top": 5}
    res = evaluate_signature(ds, maps, signature="sbovp", n_words=[8, 16], n=[2, 4], **kw)
    assert [r.label for r in res.results] == [
        "kaze L=8 n=2",
        "kaze L=8 n=4",
        "kaze L=16 n=2",
        "kaze L=16 n=4",
    ]
    for r in res.results:
        assert isinstance(r, SignatureResult) and 0.6 < r.map <= 1 and 0 < r.p_at_r <= r.map
        assert r.top_ids.shape == (32, 5) and r.top_distances.dtype == np.float32
        # defaults: semantic words, Hellinger, histogram appended, so no filter ("auto")
        assert r.params["semantic_words"] and r.params["epsilon"] is None
        assert r.params["normalize"] == "hellinger" and r.params["histogram_weight"] == 1.0
    assert res.settings["signature"] == "sbovp" and res.settings["vocabulary"] == "evaluated set"
    plain = evaluate_signature(ds, maps, signature="sbovp", n_words=8, histogram_weight=0,
                               normalize="l2", **kw)
    assert plain.results[0].params["epsilon"] == 0.9  # "auto": the filter without histogram
    assert "kaze L=16 n=4" in res.table() and "P@20" in res.table()
    json.dumps(res.to_dict())

    # hybrid without the filter = plain L2 ranking of hybrid_topk, scored by our metrics
    hyb = evaluate_signature(ds, maps, signature="hybrid", epsilon=None, **kw)
    h = hybrid_signatures(feats, maps, 14, ignore_index=0)
    _, ids = hybrid_topk(h, h, len(ds), epsilon=None)
    want = average_precision(ds.categories[ids], ds.categories).mean()
    (r,) = hyb.results
    assert r.map == pytest.approx(want) and np.array_equal(r.top_ids, ids[:, :5])
    filt = evaluate_signature(ds, maps, signature="hybrid", **kw)
    assert filt.results[0].label == "kaze filter eps 0.9"
    _, fids = hybrid_topk(h, h, 5, epsilon=0.9)
    assert np.array_equal(filt.results[0].top_ids, fids)

    # modes
    exc = evaluate_signature(ds, maps, signature="sbovp", n_words=8, exclude_query=True, **kw)
    assert not np.any(exc.results[0].top_ids == np.arange(32)[:, None])
    dis = evaluate_signature(
        ds, maps, signature="hybrid", mode="disjoint", queries_per_category=1, **kw
    )
    assert dis.settings["queries"] == 8 and dis.settings["database"] == 24


def test_evaluate_signature_errors(msrc_small):
    from semcbir_fast.eval.evaluate import evaluate_signature

    ds, maps, feats = msrc_small
    kw = {"num_classes": 14, "ignore_index": 0, "features": feats}
    with pytest.raises(ValueError, match="'hybrid' or 'sbovp'"):
        evaluate_signature(ds, maps, signature="sbs", **kw)
    with pytest.raises(ValueError, match="one map per image"):
        evaluate_signature(ds, maps[:3], signature="hybrid", **kw)
    with pytest.raises(ValueError, match="one entry per image"):
        evaluate_signature(ds, maps, signature="hybrid", num_classes=14, features=feats[:3])
    with pytest.raises(ValueError, match="epsilon"):
        evaluate_signature(ds, maps, signature="hybrid", epsilon=-1.0, **kw)
    with pytest.raises(ValueError, match="n must be in"):
        evaluate_signature(ds, maps, signature="sbovp", n_words=8, n=5, **kw)


def test_signature_table_published_rows_keep_each_signature():
    """Published rows are labelled by their signature (SBoVP's and hybrid's "Mseg KAZE"
    are different numbers), a per-setting row shows its best, a column without the row '-'."""
    from semcbir_fast.eval.summary import TableColumn, _published, signature_table

    class Stub:
        def __init__(self, title: str, rows: dict) -> None:
            self.signature_class = type("C", (), {"title": title})
            self._rows = rows

        def published(self) -> dict:
            return {"rows": self._rows}

    cols = [TableColumn("A", [Stub("SBoVP", {"Mseg KAZE": 0.88}),
                              Stub("Hybrid", {"Mseg KAZE": 0.73, "T3": [0.7, None, 0.9]})]),
            TableColumn("B", [Stub("Hybrid", {"Mseg KAZE": 0.79})])]
    assert _published(cols) == [("published, SBoVP: Mseg KAZE", ["0.88", "-"]),
                                ("published, Hybrid: Mseg KAZE", ["0.73", "0.79"]),
                                ("published, Hybrid: T3 (best)", ["0.90", "-"])]
    with pytest.raises(ValueError, match="at least one column"):
        signature_table([TableColumn("A")])


def _pairs_and_a_single() -> tuple[Dataset, list[np.ndarray]]:
    """Five one-class maps: two of class 0 (category 0), two of class 1 (category 1) and the
    only image of category 2 (class 2). Same-category maps are identical."""
    maps = [np.full((4, 4), c, np.uint8) for c in (0, 0, 1, 1, 2)]
    ds = Dataset("t", Path("."), [Path(f"{i}.png") for i in range(5)], [0, 0, 1, 1, 2])
    return ds, maps


def test_query_with_nothing_to_find_is_left_out_of_the_scores():
    ds, maps = _pairs_and_a_single()
    cli = {"dataset_label": "t", "segmentation": "oracle"}  # what the CLI adds
    res = evaluate_sbs(ds, maps, num_classes=3, levels=[0], exclude_query=True, top=3,
                       settings=cli)
    # queries 0-3 find their twin first (AP 1); query 4 has no other image of its
    # category: left out, not scored 0 (which would make MAP 4 / 5)
    r = res.results[0]
    assert r.map == pytest.approx(1.0) and r.p_at_r == pytest.approx(1.0)
    assert r.ap.tolist() == [1.0] * 4 and res.query_idx.tolist() == [0, 1, 2, 3]
    assert res.settings["queries"] == 4 and res.settings["queries_without_relevant"] == 1
    assert "1 query left out" in res.run_line()
    # kept in the database: the other queries rank it, after their twin
    assert r.top_ids[:, 0].tolist() == [1, 0, 3, 2]
    inc = evaluate_sbs(ds, maps, num_classes=3, levels=[0], top=3, settings=cli)  # all scored
    assert inc.settings["queries_without_relevant"] == 0 and inc.settings["queries"] == 5
    assert "left out" not in inc.run_line()
    lone = Dataset("t", Path("."), ds.images[:3], [0, 1, 2])
    with pytest.raises(ValueError, match="nothing to score"):
        evaluate_sbs(lone, maps[:3], num_classes=3, levels=[0], exclude_query=True)


def test_report_of_a_fused_evaluation(tmp_path):
    # result_info of the fused signature is a list of names, not a number
    pytest.importorskip("matplotlib")
    from semcbir_fast import create_signature
    from semcbir_fast.eval.evaluate import evaluate
    from semcbir_fast.report import write_report

    ds, maps = _pairs_and_a_single()
    sig = create_signature("fused", num_classes=3, components=("sbs",), rerank="none")
    res = evaluate(ds, sig, label_maps=maps, exclude_query=True, top=3,
                   settings={"segmentation": "oracle"})
    assert res.results[0].map == pytest.approx(1.0)
    files = write_report(res, tmp_path / "rep", gallery_queries=None, command="test")
    md = files["markdown"].read_text()
    assert "| components | sbs |" in md
    assert "4 queries, database of 5" in md and "1 query left out" in md
    assert json.loads(files["json"].read_text())["results"][0]["info"] == {"components": ["sbs"]}
