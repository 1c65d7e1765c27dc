"""The deep signatures (cnn, neural-codes, regions, fused over them) on a few real images:
encoding, index round trips, re-ranking, learned state, the descriptor cache, the pipeline
and the CLI flags; the region extraction of paper 004 on synthetic label maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("cv2")

from semcbir_fast._paths import data_root
from semcbir_fast.deep import extract as ex
from semcbir_fast.deep.regions import (
    label_regions,
    masked_region_descriptors,
    region_crops,
    sum_pool,
)
from semcbir_fast.index import DenseBatch, DenseIndex, load_index
from semcbir_fast.signatures import Inputs, create_signature, get_signature

COREL = data_root() / "corel1k" / "images"
MSRC = data_root() / "msrc_v1"
# two Corel categories (dinosaurs 4xx, horses 7xx), four images each
COREL_IDS = [400, 401, 402, 403, 700, 701, 702, 703]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMCBIR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SEMCBIR_DEVICE", "cpu")
    ex.clear_memo()
    yield
    ex.clear_memo()


@pytest.fixture(scope="module")
def corel_paths():
    if not COREL.is_dir():
        pytest.skip("Corel-1K not found")
    return [str(COREL / f"{i}.jpg") for i in COREL_IDS]


@pytest.fixture(scope="module")
def msrc():
    from semcbir_fast.eval.datasets import load_dataset

    if not (MSRC / "labels").is_dir():
        pytest.skip("MSRC v1 ground truth not found")
    ds = load_dataset("msrc", MSRC)
    rows = [0, 1, 2, 30, 31, 32, 120, 121, 122, 150]
    return ([str(ds.images[i]) for i in rows], [ds.read_label_map(i) for i in rows],
            len(ds.label_classes), ds.ignore_index, ds.categories[rows])


# ----------------------------------------------------------------------------- regions (no net)
def test_label_regions_are_connected_single_class_and_largest_first():
    lab = np.zeros((20, 20), np.uint8)
    lab[:, :10] = 1          # class 1, 200 px
    lab[2:6, 12:16] = 2      # class 2, two components of 16 px
    lab[12:16, 12:16] = 2
    lab[18:20, 18:20] = 3    # class 3, 4 px (1 %)
    lab[0, 19] = 255         # void
    regs = label_regions(lab, 10, num_classes=5, min_fraction=0.0)
    labels_areas = [(r.label, r.area) for r in regs]
    assert labels_areas[0] == (1, 200)
    assert sorted(a for c, a in labels_areas if c == 2) == [16, 16]
    assert all(r.mask.sum() == r.area and (lab[r.mask] == r.label).all() for r in regs)
    assert regs[2].bbox == (2, 12, 6, 16)  # the upper class-2 region first (ties: top-left)
    assert 255 not in [r.label for r in regs]
    assert [r.label for r in label_regions(lab, 10, num_classes=5, min_fraction=0.02)
            ].count(3) == 0  # 4 px < 2 % of 400
    assert len(label_regions(lab, 2, num_classes=5)) == 2
    assert label_regions(lab, 5, num_classes=5, ignore_index=1)[0].label != 1
    with pytest.raises(ValueError, match="2-D integer"):
        label_regions(np.zeros((2, 2), np.float32))


def test_masked_descriptors_crops_and_sum_pooling():
    lab = np.zeros((8, 8), np.uint8)
    lab[:, 4:] = 1
    regs = label_regions(lab, 3, min_fraction=0.0)
    fmap = np.zeros((2, 2, 2), np.float32)
    fmap[0, :, 0] = 1.0   # channel 0 lives in the left half
    fmap[1, :, 1] = 3.0   # channel 1 in the right half
    d, v = masked_region_descriptors(fmap, regs, 3)
    assert v.tolist() == [True, True, False]
    np.testing.assert_allclose(sorted(map(tuple, d[:2])), [(0, 3), (1, 0)])
    assert (d[2] == 0).all()
    img = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    crops = region_crops(img, regs)
    assert [c.shape for c in crops] == [(16, 8, 3), (16, 8, 3)]  # boxes scaled x2
    f = sum_pool(d[None], v[None])
    np.testing.assert_allclose(f, [[1 / 4, 3 / 4]])  # eq. 1 then eq. 2
    assert (sum_pool(np.zeros((1, 2, 3))) == 0).all()


# ----------------------------------------------------------------------------- cnn
def test_cnn_encode_search_roundtrip(corel_paths, tmp_path):
    sig = create_signature("cnn", num_classes=1)
    enc = sig.encode(Inputs(paths=corel_paths))
    assert isinstance(enc, DenseBatch) and enc.vectors.shape == (8, 1280)
    np.testing.assert_allclose(np.linalg.norm(enc.vectors, axis=1), 1, rtol=1e-5)
    index = sig.new_index()
    index.add(enc, keys=corel_paths)
    d, i = index.search(enc, 4)
    assert (i[:, 0] == np.arange(8)).all() and (np.diff(d, axis=1) >= 0).all()
    cats = np.array(COREL_IDS) // 100
    assert (cats[i] == cats[:, None]).mean() == 1.0  # dinosaurs and horses do not mix
    back = load_index(index.save(tmp_path / "c.sbdi"))
    assert isinstance(back, DenseIndex) and back.signature.name == "cnn"
    np.testing.assert_array_equal(back.search(enc, 4)[1], i)
    assert "GAP" in back.describe()


def test_cli_cnn_index_and_search_load_no_segmenter(corel_paths, tmp_path, monkeypatch,
                                                     capsys):
    """A signature that reads only the image files never loads the segmentation model."""
    import shutil

    from semcbir_fast.cli import _common, main

    def no_model(*a, **k):
        raise AssertionError("the segmenter was loaded")

    monkeypatch.setattr(_common, "load_model", no_model)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in corel_paths[:6]:
        shutil.copy(p, folder)
    out = tmp_path / "c.sbdi"
    assert main(["index", str(folder), "-o", str(out), "--signature", "cnn", "-q"]) == 0
    idx = load_index(out)
    assert len(idx) == 6 and "model" not in idx.metadata
    capsys.readouterr()
    # an image that is not in the index is encoded by the backbone, again without a model
    assert main(["search", str(out), corel_paths[7], "-k", "3", "--json", "-q"]) == 0
    import json

    res = json.loads(capsys.readouterr().out)["queries"][0]
    assert res["code_from"] == "segmented" and len(res["results"]) == 3
    cats = [int(Path(r["key"]).stem) // 100 for r in res["results"]]
    assert cats[0] == 7  # a horse finds a horse first


def test_cnn_poolings_and_whitening_state(corel_paths, tmp_path):
    inputs = Inputs(paths=corel_paths)
    crow = create_signature("cnn", num_classes=1, pooling="crow").encode(inputs)
    gap = create_signature("cnn", num_classes=1).encode(inputs)
    assert not np.allclose(crow.vectors, gap.vectors)
    sig = create_signature("cnn", num_classes=1, whiten=True, whiten_dim=4)
    assert not sig.fitted
    with pytest.raises(ValueError, match="not fitted"):
        sig.encode(inputs)
    sig.fit(inputs)
    enc = sig.encode(inputs)
    assert enc.vectors.shape == (8, 4)
    index = sig.new_index()
    index.add(enc)
    back = DenseIndex.load(index.save(tmp_path / "w.sbdi"))
    np.testing.assert_allclose(back.signature.encode(inputs).vectors, enc.vectors, rtol=1e-5)
    assert back.signature.label() == "gap+pcaw"
    with pytest.raises(ValueError, match="pooling must be one of"):
        create_signature("cnn", num_classes=1, pooling="max")


def test_neural_codes_parts_and_l1(corel_paths):
    inputs = Inputs(paths=corel_paths)
    dims = {}
    for part in ("h", "eta_tilde", "eta"):
        sig = create_signature("neural-codes", num_classes=1, part=part)
        enc = sig.encode(inputs)
        dims[part] = enc.dim
        assert sig.metric == "l1"
        index = sig.new_index()
        index.add(enc)
        d, i = index.search(enc, 3)
        assert (i[:, 0] == np.arange(8)).all() and (d[:, 0] == 0).all()
        ref = np.abs(enc.vectors[:, None] - enc.vectors[None]).sum(-1)
        np.testing.assert_allclose(d[:, 1], np.sort(ref, axis=1)[:, 1], rtol=1e-4)
    assert dims == {"h": 1280, "eta_tilde": 1472, "eta": 2752}
    sig = create_signature("neural-codes", num_classes=1, distance="l2")
    assert sig.metric == "l2"


# ----------------------------------------------------------------------------- regions
@pytest.mark.parametrize("mode", ["masked", "crop"])
def test_regions_signature(msrc, mode, tmp_path):
    paths, maps, m, ign, _cats = msrc
    sig = create_signature("regions", num_classes=m, ignore_index=ign, region_mode=mode,
                           pca_dim=6, rerank_top=5)
    inputs = Inputs(maps, None, paths)
    assert not sig.fitted
    sig.fit(inputs)
    enc = sig.encode(inputs)
    assert enc.vectors.shape == (10, 6)
    assert enc.extras["regions"].shape[:2] == (10, 5) and enc.extras["valid"].any(axis=1).all()
    index = sig.new_index()
    index.add(enc)
    d, i = index.search(enc, 10)
    assert (np.diff(d, axis=1) >= 0).all()
    assert (d[:, :5] <= 2).all() and (d[:, 5:] >= 2).all()  # re-ranked head, then the tail
    assert sorted(i[0].tolist()) == list(range(10))
    back = load_index(index.save(tmp_path / "r.sbdi"))
    np.testing.assert_array_equal(back.search(back.reconstruct_batch(range(10)), 10)[1], i)
    plain = create_signature("regions", num_classes=m, ignore_index=ign, region_mode=mode,
                             pca_dim=0)
    assert plain.fitted and plain.encode(inputs).dim == 2 * 1280


def test_fused_over_deep_components(msrc):
    paths, maps, m, ign, _cats = msrc
    sig = create_signature("fused", num_classes=m, ignore_index=ign,
                           components=("cnn", "sbs", "regions"), rerank="none")
    assert sig.requires == ("images", "labels")
    inputs = Inputs(maps, None, paths)
    sig.fit(inputs)
    enc = sig.encode(inputs)
    index = sig.new_index()
    index.add(enc)
    _, i = index.search(enc, 10)
    assert (i[:, 0] == np.arange(10)).all()


# ----------------------------------------------------------------------------- plumbing
def test_descriptor_cache_and_memo(corel_paths, tmp_path, monkeypatch):
    calls = []
    real = ex.get_backbone("efficientnet-lite0").extract

    def counting(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    bb = ex.get_backbone("efficientnet-lite0")
    monkeypatch.setattr(bb, "extract", counting)
    a = ex.extract_cached(corel_paths[:3], "gap-test", "gap", use_cache=True)
    b = ex.extract_cached(corel_paths[:3], "gap-test", "gap", use_cache=True)  # memo
    np.testing.assert_array_equal(a["gap"], b["gap"])
    ex.clear_memo()
    c = ex.extract_cached(corel_paths[:3], "gap-test", "gap", use_cache=True)  # disk
    assert len(calls) == 1
    np.testing.assert_array_equal(a["gap"], c["gap"])
    assert list((tmp_path / "cache" / "deep").glob("*.npz"))
    ex.extract_cached(corel_paths[:3], "gap-test", "gap", extra_key=1, use_cache=True)
    assert len(calls) == 2  # another key


def test_pipeline_reads_files_and_skips_unreadable_ones(corel_paths, tmp_path):
    from semcbir_fast.pipeline import Retriever, build_index, load_inputs

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    sig = create_signature("cnn", num_classes=1)
    inputs, failed = load_inputs([*corel_paths[:3], str(bad)], sig, progress=False)
    assert inputs.paths == corel_paths[:3] and [f[0] for f in failed] == [str(bad)]
    built = build_index([*corel_paths, str(bad)], sig, progress=False)
    assert len(built.index) == 8 and len(built.failed) == 1
    hits = Retriever(built.index).query([corel_paths[5]], k=3)
    assert hits.ids[0, 0] == 5 and hits.source == ["index"]
    hits = Retriever(built.index).query([corel_paths[5]], k=3, resegment=True)
    assert hits.ids[0, 0] == 5 and hits.source == ["segmented"]


def test_backbone_file_from_an_index_is_not_loaded(corel_paths, tmp_path, monkeypatch):
    sig = create_signature("cnn", num_classes=1)
    index = sig.new_index()
    index.add(sig.encode(Inputs(paths=corel_paths[:2])))
    header = sig.to_header()
    header["params"]["backbone"] = str(tmp_path / "evil.pt")
    back = get_signature("cnn").from_header(header, {})
    with pytest.raises(ValueError, match="not loaded on the index's word"):
        back.encode(Inputs(paths=corel_paths[:1]))
    monkeypatch.setenv("SEMCBIR_TRUSTED_BACKBONE", str(tmp_path / "evil.pt"))
    with pytest.raises(FileNotFoundError):  # trusted now, so it is opened (and missing)
        back.encode(Inputs(paths=corel_paths[:1]))


def test_missing_paths_and_cli_flags():
    sig = create_signature("cnn", num_classes=1)
    with pytest.raises(ValueError, match="Inputs\\(paths"):
        sig.encode(Inputs([np.zeros((2, 2), np.uint8)]))
    from semcbir_fast.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["eval", "--dataset", "msrc", "--signature", "fused",
                              "--components", "cnn", "regions", "--qe", "alpha", "--k1", "10"])
    assert args.components == ["cnn", "regions"] and args.qe == "alpha" and args.k1 == 10
    args = parser.parse_args(["eval", "--dataset", "msrc", "--signature", "neural-codes"])
    assert args.part == ["h", "eta_tilde", "eta"]


def test_evaluate_runs_a_deep_signature(msrc):
    from semcbir_fast.eval.datasets import load_dataset
    from semcbir_fast.eval.evaluate import evaluate

    paths, maps, m, ign, _cats = msrc
    ds = load_dataset("msrc", MSRC)
    rows = [0, 1, 2, 30, 31, 32, 120, 121, 122, 150]
    sub = ds.subset(rows)
    res = evaluate(sub, [create_signature("neural-codes", num_classes=m, part=p)
                         for p in ("h", "eta")], Inputs(maps, None, paths))
    assert [r.label for r in res.results] == ["h(x)", "eta(x)"]
    assert all(0 < r.map <= 1 for r in res.results)
    res = evaluate(sub, create_signature("fused", num_classes=m, ignore_index=ign),
                   Inputs(maps, None, paths))
    assert res.results[0].map > 0.5 and res.published().get("rows")


def test_paper_protocols(msrc, tmp_path):
    import cv2
    from semcbir_fast.deep.protocols import histogram_protocol, precision_protocol, rgb_histograms
    from semcbir_fast.eval.datasets import load_dataset

    img = np.zeros((4, 4, 3), np.uint8)
    img[:2, :, 0] = 255  # half the pixels: red 255, the rest 0
    cv2.imwrite(str(tmp_path / "a.png"), img[..., ::-1])
    h = rgb_histograms([str(tmp_path / "a.png")], bins=25)
    assert h.shape == (1, 75) and h[0, 0] == 1 and h[0, 24] == 1 and h[0, 25] == 1
    assert rgb_histograms([str(tmp_path / "a.png")], norm="sum")[0, :25].sum() == 1
    paths, maps, m, _ign, cats = msrc
    ds = load_dataset("msrc", MSRC).subset([0, 1, 2, 30, 31, 32, 120, 121, 122, 150])
    sig = create_signature("neural-codes", num_classes=m, part="eta")
    r = histogram_protocol(ds, sig, Inputs(maps, None, paths), k=2, seed=1)
    assert len(r["queries"]) == len(np.unique(cats)) and 0 < r["mean"] < 1
    assert len({int(cats[q]) for q in r["queries"]}) == len(r["queries"])  # one per class
    p = precision_protocol(ds, sig, Inputs(maps, None, paths), fraction=0.3, k=2, seed=0)
    assert len(p["queries"]) == 3 and 0 <= p["p_at_k"] <= 1


def test_evaluate_fills_paths_and_needs_no_maps_for_image_signatures(msrc):
    """``evaluate`` takes the image files from the data set when the inputs carry none, and
    a signature that reads only the files (cnn) is evaluated without any label map."""
    from semcbir_fast.eval.datasets import load_dataset
    from semcbir_fast.eval.evaluate import evaluate

    _paths, maps, m, ign, _cats = msrc
    sub = load_dataset("msrc", MSRC).subset([0, 1, 2, 30, 31, 32, 120, 121, 122, 150])
    res = evaluate(sub, create_signature("regions", num_classes=m, ignore_index=ign,
                                         pca_dim=0), Inputs(maps))
    assert 0 < res.results[0].map <= 1
    res = evaluate(sub, create_signature("cnn", num_classes=1), Inputs(), keep_label_maps=True)
    assert 0 < res.results[0].map <= 1 and res.label_maps is None
    with pytest.raises(ValueError, match="one map per image"):
        evaluate(sub, create_signature("regions", num_classes=m), Inputs())


def test_cli_eval_of_an_image_signature_segments_nothing(monkeypatch, capsys):
    from semcbir_fast.cli import main
    from semcbir_fast.eval import cache

    if not (MSRC / "labels").is_dir():
        pytest.skip("MSRC v1 not found")

    def no_model(*a, **k):
        raise AssertionError("the data set was segmented")

    monkeypatch.setattr(cache, "segment_cached", no_model)
    assert main(["eval", "--dataset", "msrc", "--root", str(MSRC), "--signature", "cnn",
                 "--limit", "16", "-q", "--json"]) == 0
    import json

    out = json.loads(capsys.readouterr().out)
    assert out["settings"]["segmentation"] == "image files only"
    assert 0 < out["results"][0]["map"] <= 1


class _ThresholdSegmenter:
    """A stand-in segmenter (the Segmenter's streaming contract): 2 classes, dark / bright
    pixels of a 28 x 28 thumbnail. Records the images it segments."""

    num_classes = 2

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.meta = type("M", (), {"name": "threshold"})()
        self.device = "cpu"

    def segment(self, *a, **k):  # marks it as a loaded segmenter
        raise AssertionError

    def iter_batches(self, paths, *, batch_size, on_error, progress):
        from types import SimpleNamespace

        import cv2

        for s in range(0, len(paths), batch_size):
            idx, labs = [], []
            for j in range(s, min(s + batch_size, len(paths))):
                self.seen.append(paths[j])
                g = cv2.resize(cv2.imread(paths[j], cv2.IMREAD_GRAYSCALE), (28, 28))
                idx.append(j)
                labs.append((g > g.mean()).astype(np.uint8))
            yield SimpleNamespace(indices=idx, labels=labs, failed=[])


def test_build_index_fits_the_state_on_other_images(corel_paths):
    """``fit_paths``: the learned state (here the regions PCA, which needs label maps of
    its training images) comes from those images, described as the signature needs."""
    from semcbir_fast.pipeline import Retriever, build_index

    indexed, other = corel_paths[:3], corel_paths[3:]
    seg = _ThresholdSegmenter()
    sig = create_signature("regions", num_classes=2, pca_dim=4)
    built = build_index(indexed, sig, segmenter=seg, fit_paths=other, progress=False,
                        use_cache=False)
    assert sorted(seg.seen) == sorted(indexed + other)  # the fitting set was segmented
    got = built.index.signature.pca
    ref = create_signature("regions", num_classes=2, pca_dim=4)
    ref.fit(Inputs([seg_map for _, seg_map in zip(other, _labels(seg, other))], None, other))
    assert got.dim == 4  # 3 indexed images alone allow 2 components at most
    np.testing.assert_allclose(got.mean, ref.pca.mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.abs(got.components), np.abs(ref.pca.components),
                               rtol=1e-5, atol=1e-6)
    hits = Retriever(built.index, seg, use_cache=False).query([corel_paths[1], other[0]], k=3)
    assert hits.ids[0, 0] == 1 and hits.source == ["index", "segmented"]
    assert hits.ids.shape == (2, 3) and (hits.ids >= 0).all()


def _labels(seg, paths):
    return [lab for b in seg.iter_batches(list(paths), batch_size=8, on_error="skip",
                                          progress=False) for lab in b.labels]


def test_cli_index_fit_on_another_folder(corel_paths, tmp_path, capsys):
    """``semcbir index A --fit-on B``: the whitening of cnn --whiten is fitted on B's images;
    searching the index works; --fit-on is refused where there is nothing to fit."""
    import json
    import shutil

    from semcbir_fast.cli import main

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    for p in corel_paths[:3]:
        shutil.copy(p, a)
    for p in corel_paths[3:]:
        shutil.copy(p, b)
    out = tmp_path / "w.sbdi"
    base = ["index", str(a), "-o", str(out), "--signature", "cnn", "--whiten",
            "--whiten-dim", "4", "-q"]
    assert main([*base, "--fit-on", str(b)]) == 0
    idx = load_index(out)
    assert len(idx) == 3 and idx.metadata["whitening_set"] == str(b.resolve())
    w = idx.signature.whitening
    ref = create_signature("cnn", num_classes=1, whiten=True, whiten_dim=4)
    ref.fit(Inputs(paths=sorted(str(p) for p in b.iterdir())))
    assert w.dim == 4  # 3 indexed images alone allow 2 dimensions at most
    np.testing.assert_allclose(w.mean, ref.whitening.mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(w.eigenvalues, ref.whitening.eigenvalues, rtol=1e-4)
    capsys.readouterr()
    assert main(["search", str(out), str(a / Path(corel_paths[1]).name), corel_paths[4],
                 "-k", "2", "--json", "-q"]) == 0
    qs = json.loads(capsys.readouterr().out)["queries"]
    assert Path(qs[0]["results"][0]["key"]).name == Path(corel_paths[1]).name
    assert [q["code_from"] for q in qs] == ["index", "segmented"]
    assert len(qs[1]["results"]) == 2
    # nothing to fit: settings without learned state, or an existing index
    assert main(["index", str(a), "-o", str(tmp_path / "x.sbdi"), "--signature", "cnn",
                 "--fit-on", str(b), "-q"]) == 1
    assert "no learned state" in capsys.readouterr().err
    assert main([*base, "--append", "--fit-on", str(b)]) == 1
    assert "build a new index" in capsys.readouterr().err
    assert main([*base, "--overwrite", "--fit-on", str(tmp_path / "missing")]) == 1
    assert "no such folder" in capsys.readouterr().err
