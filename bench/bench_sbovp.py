"""SBoVP and hybrid signature: speed benchmarks (pytest-benchmark) and a quality runner.

Speed (run from the repository root)::

    PYTHONPATH=python .venv/bin/python -m pytest bench/bench_sbovp.py --benchmark-only \
        --benchmark-group-by=group --benchmark-columns=min,median,rounds

- group ``sparse_l2_topk``: exact sparse L2 top-k (k = 10) of 1,000 queries against a
  database of 10,000 synthetic SBoVP signatures: ``semcbir_fast.sparse_l2_topk`` (one-shot:
  transposes the queries and streams the database, or builds the inverted index when the
  queries need many blocks), ``SparseL2Index.search`` (index built once) and
  ``SparseL2Index`` construction alone, at threads 1 and 2, vs the SciPy peer (``A @ B.T`` +
  precomputed norms + ``argpartition``; SciPy is single-threaded). The synthetic
  signatures mimic real ones (see :func:`synthetic_signatures`); results are checked
  against the SciPy ranking / ``sparse_l2_topk`` outside the timer.
- group ``sbovp_build``: signature construction per image, excluding keypoint detection
  and segmentation (paper 000 Fig. 11 counts it so): word assignment + keypoint labels +
  phrases + L2 normalisation, and the C++ phrase step alone, on 100 synthetic images of
  500 keypoints (L = 1024, a 256x384 label map with 6 regions).

Quality (MAP, P@20 over full rankings, every image a query and in the database)::

    PYTHONPATH=python .venv/bin/python bench/bench_sbovp.py quality --dataset msrc
    PYTHONPATH=python .venv/bin/python bench/bench_sbovp.py quality --dataset corel

``msrc`` uses MSRC v1's ground-truth label maps (14 classes, 0 = void; no network);
``corel`` uses the default segmentation model's maps (cached by
:func:`semcbir_fast.eval.cache.segment_cached`; computed on first use). Vocabularies are
always fitted on Corel-1K descriptors; on Corel itself this is the same set (the paper
fits on Pascal VOC, which we do not have), and the report says so. Features and
vocabularies are cached under ``cache_dir()/sbovp``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

try:
    import pytest
except ImportError:  # pragma: no cover - the quality runner needs no pytest
    pytest = None

from semcbir_fast.sbovp import (
    PhraseSignatures,
    SparseL2Index,
    Vocabulary,
    build_phrase_signatures,
    keypoint_classes,
    normalize_signatures,
    sbovp_signatures,
    sparse_l2_topk,
)

# ---------------------------------------------------------------------------------------------
# Synthetic data
# ---------------------------------------------------------------------------------------------

L_WORDS = 1024
N_DB = 10_000
N_Q = 1_000
K = 10


def synthetic_signatures(n: int, seed: int, L: int = L_WORDS, kp: int = 520) -> PhraseSignatures:
    """Synthetic SBoVP signatures (n = 2, L2-normalised) with real-looking statistics.

    Each image has ``kp/2 .. 3kp/2`` keypoints in 50 spatial clusters; a cluster is a
    "texture" drawn from 4000 shared ones (Zipf popularity, exponent 0.7) and emits one of its
    5 words, or a uniform random word with probability 0.3; 6 horizontal class stripes. Tuned
    to match KAZE / L = 1024 / n = 2 on Corel-1K (measured with 6-stripe maps): 322 non-zeros
    per row, a query's non-zeros touch 2.8 N posting entries, the largest posting list holds
    11 % of the images; synthetic: 335, 2.6 N and 22 %.
    """
    rng = np.random.default_rng(seed)
    n_tex, tex_words, groups = 4000, 5, 50
    tex = rng.integers(0, L, size=(n_tex, tex_words))
    pop = 1.0 / np.arange(1, n_tex + 1) ** 0.7
    pop /= pop.sum()
    xs, ws, cs = [], [], []
    for _ in range(n):
        m = int(rng.integers(kp // 2, 3 * kp // 2))
        g = rng.choice(n_tex, size=groups, p=pop)
        centers = rng.uniform(0, 384, size=(groups, 2))
        member = rng.integers(0, groups, size=m)
        xy = (centers[member] + rng.normal(0, 12, size=(m, 2))).astype(np.float32)
        w = tex[g[member], rng.integers(0, tex_words, size=m)]
        w = np.where(rng.random(m) < 0.3, rng.integers(0, L, size=m), w)
        xs.append(xy)
        ws.append(w.astype(np.int32))
        cs.append(np.clip(xy[:, 1] // 64, 0, 5).astype(np.int32))
    return normalize_signatures(build_phrase_signatures(xs, ws, cs, L, n=2), "l2")


def scipy_topk(A: Any, B: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The SciPy peer: squared L2 through A @ B.T and precomputed norms, top-k by argpartition."""
    an = np.asarray(A.multiply(A).sum(axis=1)).reshape(-1, 1)
    bn = np.asarray(B.multiply(B).sum(axis=1)).reshape(1, -1)
    d2 = an + bn - 2.0 * (A @ B.T).toarray()
    np.maximum(d2, 0, out=d2)
    part = np.argpartition(d2, k - 1, axis=1)[:, :k]
    pd = np.take_along_axis(d2, part, axis=1)
    order = np.argsort(pd, axis=1, kind="stable")
    ids = np.take_along_axis(part, order, axis=1)
    return np.sqrt(np.take_along_axis(pd, order, axis=1)).astype(np.float32), ids


if pytest is not None:

    @pytest.fixture(scope="module")
    def sparse_data() -> tuple[PhraseSignatures, PhraseSignatures, Any, Any]:
        db = synthetic_signatures(N_DB, seed=1)
        q = synthetic_signatures(N_Q, seed=2)
        return q, db, q.to_scipy().astype(np.float64), db.to_scipy().astype(np.float64)

    @pytest.mark.parametrize("threads", [1, 2])
    def test_sparse_l2_topk(benchmark, sparse_data, threads):
        q, db, _, _ = sparse_data
        benchmark.group = "sparse_l2_topk"
        benchmark.extra_info.update(nq=N_Q, n=N_DB, k=K, threads=threads, L=L_WORDS,
                                    nnz_per_row=db.nnz / len(db))
        _, i = benchmark(sparse_l2_topk, q, db, K, threads=threads)
        _, wi = scipy_topk(sparse_data[2], sparse_data[3], K)
        assert (i == wi).mean() > 0.999  # float64 rounding may swap exact near-ties

    @pytest.mark.parametrize("threads", [1, 2])
    def test_phrase_index_search(benchmark, sparse_data, threads):
        q, db, _, _ = sparse_data
        benchmark.group = "sparse_l2_topk"
        index = SparseL2Index(db, threads=threads)
        benchmark.extra_info.update(nq=N_Q, n=N_DB, k=K, threads=threads, L=L_WORDS,
                                    step="search, index prebuilt")
        d, i = benchmark(index.search, q, K, threads=threads)
        wd, wi = sparse_l2_topk(q, db, K, threads=1)
        assert np.array_equal(i, wi) and np.array_equal(d, wd)

    def test_phrase_index_build(benchmark, sparse_data):
        benchmark.group = "sparse_l2_topk"
        benchmark.extra_info.update(n=N_DB, threads=1, step="SparseL2Index build")
        benchmark(SparseL2Index, sparse_data[1], threads=1)

    def test_scipy_peer(benchmark, sparse_data):
        benchmark.group = "sparse_l2_topk"
        benchmark.extra_info.update(nq=N_Q, n=N_DB, k=K, threads=1, peer="scipy")
        benchmark.pedantic(scipy_topk, args=(sparse_data[2], sparse_data[3], K), rounds=3,
                           iterations=1)

    @pytest.fixture(scope="module")
    def build_inputs() -> dict[str, Any]:
        from semcbir_fast.features import Features

        rng = np.random.default_rng(0)
        vocab = Vocabulary(rng.standard_normal((L_WORDS, 64)).astype(np.float32), "kaze", 64,
                           False, {})
        lab = np.zeros((256, 384), np.uint8)
        for r in range(6):  # 6 vertical stripes
            lab[:, r * 64:(r + 1) * 64] = r
        feats = [Features(rng.uniform(0, 384, size=(500, 2)).astype(np.float32) * [1, 2 / 3],
                          rng.standard_normal((500, 64)).astype(np.float32), (256, 384), "kaze")
                 for _ in range(100)]
        words = [vocab.assign(f) for f in feats]
        classes = [keypoint_classes(f.xy, f.image_size, lab) for f in feats]
        return {"vocab": vocab, "lab": lab, "feats": feats, "words": words, "classes": classes}

    @pytest.mark.parametrize("n", [2, 3, 4])
    def test_build_full(benchmark, build_inputs, n):
        b = build_inputs
        benchmark.group = "sbovp_build"
        benchmark.extra_info.update(images=100, keypoints=500, L=L_WORDS, n=n,
                                    step="assign+label+phrases+l2", threads=1)
        benchmark(sbovp_signatures, b["feats"], [b["lab"]] * 100, b["vocab"], n=n, threads=1)

    def test_build_cli_default(benchmark, build_inputs):
        """The CLI's SBoVP: L = 16 semantic words of 151 classes, Hellinger, histogram w = 1."""
        b = build_inputs
        vocab16 = Vocabulary(b["vocab"].centroids[:16].copy(), "kaze", 64, False, {})
        benchmark.group = "sbovp_build"
        benchmark.extra_info.update(images=100, keypoints=500, L=16, n=2, threads=1,
                                    step="assign+label+phrases+hellinger+histogram")
        benchmark(sbovp_signatures, b["feats"], [b["lab"]] * 100, vocab16, n=2,
                  normalize="hellinger", num_classes=151, semantic_words=True,
                  histogram_weight=1.0, threads=1)

    @pytest.mark.parametrize("n", [2, 3, 4])
    def test_build_phrases_only(benchmark, build_inputs, n):
        b = build_inputs
        benchmark.group = "sbovp_build"
        benchmark.extra_info.update(images=100, keypoints=500, L=L_WORDS, n=n,
                                    step="phrases (C++)", threads=1)
        benchmark(build_phrase_signatures, [f.xy for f in b["feats"]], b["words"], b["classes"],
                  L_WORDS, n=n, threads=1)


# ---------------------------------------------------------------------------------------------
# Quality runner
# ---------------------------------------------------------------------------------------------


def _cache() -> Path:
    from semcbir_fast._paths import cache_dir

    p = cache_dir() / "sbovp"
    p.mkdir(parents=True, exist_ok=True)
    return p


def cached_features(name: str, images: list[Path], method: str, threads: int) -> list[Any]:
    from semcbir_fast.features import extract_features, load_features, save_features

    path = _cache() / f"features-{name}-{method}.npz"
    if path.is_file():
        feats = load_features(path)
        if len(feats) == len(images):
            return feats
    t = time.perf_counter()
    feats = extract_features(images, method, threads=threads)
    print(f"# {method} on {name}: {len(images)} images in {time.perf_counter() - t:.1f} s",
          file=sys.stderr)
    save_features(path, feats)
    return feats


def cached_vocabulary(feats: list[Any], method: str, n_words: int, seed: int = 0) -> Vocabulary:
    path = _cache() / f"vocab-corel1k-{method}-{n_words}-s{seed}.npz"
    if path.is_file():
        return Vocabulary.load(path)
    t = time.perf_counter()
    v = Vocabulary.fit(feats, n_words, seed=seed)
    print(f"# vocabulary {method} L={n_words}: {time.perf_counter() - t:.1f} s "
          f"({v.info})", file=sys.stderr)
    v.save(path)
    return v


def score(ids: np.ndarray, cats: np.ndarray, dist: np.ndarray | None = None) -> dict[str, float]:
    from semcbir_fast.eval.metrics import average_precision, precision_at_k

    ranked = np.where(ids >= 0, cats[np.maximum(ids, 0)], -1)
    out = {"map": float(average_precision(ranked, cats).mean()),
           "p20": float(precision_at_k(ranked, cats, 20).mean())}
    if dist is not None:
        out["map_ties"] = float(average_precision(ranked, cats, distances=dist).mean())
    return out


def quality(args: argparse.Namespace) -> None:
    import cv2
    import semcbir_fast as sf
    from semcbir_fast.eval import corel1k, msrc
    from semcbir_fast.hybrid import histogram_filter, hybrid_signatures, hybrid_topk

    cv2.setNumThreads(1)
    corel = corel1k()
    if args.dataset == "msrc":
        ds = msrc()
        maps = [ds.read_label_map(i) for i in range(len(ds))]
        num_classes, ignore = 14, 0
        source = "MSRC v1 ground truth (14 classes, 0 = void)"
    else:
        from semcbir_fast.eval.cache import segment_cached

        ds = corel
        maps, info = segment_cached(ds.images, model=args.model, log=print)
        num_classes, ignore = int(info["num_classes"]), None
        source = f"model {info['model_name']} ({num_classes} classes)"
    cats = ds.categories
    n = len(ds)
    rows: list[dict[str, Any]] = []

    def add(sig: str, cfg: str, s: dict[str, float]) -> None:
        rows.append({"signature": sig, "config": cfg, **s})
        extra = f"  MAP(ties avg) {s['map_ties']:.4f}" if "map_ties" in s else ""
        print(f"{sig:7s} {cfg:56s} MAP {s['map']:.4f}  P@20 {s['p20']:.4f}{extra}", flush=True)

    print(f"# {args.dataset}: {n} images, label maps: {source}; query-in-db, full ranking")
    for levels in (0, 1, 2, 3):
        codes = sf.encode_sbs(maps, num_classes=num_classes, levels=levels, ignore_index=ignore)
        d, i = sf.hamming_topk(codes, codes, n)
        add("SBS", f"levels={levels} ({4 ** levels} blocks)", score(i, cats, d))
    for method in args.methods:
        train = cached_features("corel1k", corel.images, method, args.threads)
        feats = train if args.dataset == "corel" else cached_features(
            args.dataset, ds.images, method, args.threads)
        kp = np.array([len(f) for f in feats])
        print(f"# {method}: {kp.mean():.0f} keypoints per image (min {kp.min()}, max {kp.max()})")
        h = hybrid_signatures(feats, maps, num_classes, ignore_index=ignore)
        hist = h.histograms
        for eps in (None, 0.9):
            d, i = hybrid_topk(h, h, n, epsilon=eps)
            add("hybrid", f"{method} filter={'off' if eps is None else eps}", score(i, cats))
        for L in args.words:
            vocab = cached_vocabulary(train, method, L)
            for nn in args.n:
                for tag in (False, True):
                    raw = sbovp_signatures(feats, maps, vocab, n=nn, normalize=None,
                                           ignore_index=ignore, num_classes=num_classes,
                                           semantic_words=tag)
                    kind = "semantic words" if tag else "plain"
                    for norm in args.norms:
                        sig = normalize_signatures(raw, norm)
                        d, i = sparse_l2_topk(sig, sig, n)
                        cfg = f"{method} L={L} n={nn} {kind} norm={norm}"
                        add("SBoVP", cfg, score(i, cats, d))
                        d, i = histogram_filter(d, i, hist, hist)
                        add("SBoVP", cfg + " +filter", score(i, cats))
    if args.json:
        Path(args.json).write_text(json.dumps({"dataset": args.dataset, "labels": source,
                                               "rows": rows}, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quality", help="MAP / P@20 of SBoVP, hybrid and SBS")
    q.add_argument("--dataset", choices=("msrc", "corel"), default="msrc")
    q.add_argument("--model", default="ade20k-mnv2")
    q.add_argument("--methods", nargs="+", default=["kaze", "sift"])
    q.add_argument("--words", nargs="+", type=int, default=[64, 256, 1024])
    q.add_argument("--n", nargs="+", type=int, default=[2, 3])
    q.add_argument("--norms", nargs="+", default=["l2", "l1", "none"])
    q.add_argument("--threads", type=int, default=0)
    q.add_argument("--json", default=None)
    args = p.parse_args()
    args.norms = [None if s == "none" else s for s in args.norms]
    if args.cmd == "quality":
        quality(args)


if __name__ == "__main__":
    main()
