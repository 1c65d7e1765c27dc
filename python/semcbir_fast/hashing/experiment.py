"""Paper 002's evaluation: MAP over the top-k results on a disjoint train / test split,
for the proposed network, its no-segmentation baseline, ITQ, PCA-sign and SBS.

Protocol (Lin et al. 2015, paper 002 section III-B: "passing all the images of the
training set through the framework generates the table of hash codes"): each category is
split once, at random with a fixed seed (:data:`SPLIT_SEED`), into a training part
(``train_fraction``) and a test part. Networks, ITQ and PCA-sign are fitted on the
training part only; the database is the training part, the queries are the test part (no
query is ever trained on). Relevant = same category.

Metric (paper 002's [18], Lin et al., as in their released evaluation code): for a query
with ranked results ``rel_1 .. rel_k`` (1 = same category),

    AP@k = sum_{i <= k} rel_i * P@i / sum_{i <= k} rel_i      (0 when no relevant result)

and MAP@k is its mean over the queries (:func:`map_at_k`); reported for k = 10 and 50,
beside the full-ranking MAP of the library (:mod:`semcbir_fast.eval.metrics`, tied
distances scored by their expected value over all orders). Hamming distances tie often;
for MAP@k the ties are broken by database position after one random permutation of the
database (seeded by :data:`SPLIT_SEED`), so that no method profits from the file order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["SPLIT_SEED", "hashing_experiment", "map_at_k", "split_train_test"]

#: Seed of the train / test split and of the database permutation.
SPLIT_SEED = 20240615


def map_at_k(ranked_labels: Any, query_labels: Any, k: int) -> float:
    """Paper 002's MAP@k (see the module docstring) of rankings ``(nq, >= k)``."""
    from ..eval.metrics import average_precision

    r = np.asarray(ranked_labels)
    if r.ndim != 2 or r.shape[1] < k:
        raise ValueError(f"rankings must be (nq, >= {k}), got shape {r.shape}")
    return float(np.mean(average_precision(r[:, :k], query_labels)))


def split_train_test(categories: Any, train_fraction: float = 0.5,
                     seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, test_idx)``: per category a random ``train_fraction`` (at least one
    image each side) for training, the rest for testing; ascending positions."""
    cats = np.asarray(categories).reshape(-1)
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction!r}")
    rng = np.random.default_rng(seed)
    tr: list[int] = []
    for c in np.unique(cats):
        members = np.flatnonzero(cats == c)
        if members.size < 2:
            raise ValueError(f"category {c} has {members.size} image(s); a train / test split "
                             "needs at least 2 per category")
        perm = rng.permutation(members)
        n = min(max(1, round(train_fraction * members.size)), members.size - 1)
        tr += perm[:n].tolist()
    train = np.array(sorted(tr), dtype=np.int64)
    test = np.setdiff1d(np.arange(cats.shape[0]), train)
    return train, test


def score_codes(db_codes: np.ndarray, q_codes: np.ndarray, db_labels: np.ndarray,
                q_labels: np.ndarray, ks: Sequence[int] = (10, 50), *, threads: int = 0
                ) -> dict[str, float]:
    """MAP@k (randomised tie order) and full MAP (tie-averaged) of Hamming rankings."""
    from ..eval.metrics import average_precision
    from ..hamming import hamming_topk

    perm = np.random.default_rng(SPLIT_SEED).permutation(db_codes.shape[0])
    db = np.ascontiguousarray(db_codes[perm])
    lab = db_labels[perm]
    d, ids = hamming_topk(np.ascontiguousarray(q_codes), db, db.shape[0], threads=threads)
    ranked = lab[ids]
    out = {f"map@{k}": map_at_k(ranked, q_labels, k) for k in ks}
    out["map"] = float(np.mean(average_precision(ranked, q_labels, distances=d)))
    return out


def _summary(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
            "n": int(a.size)}


def hashing_experiment(
    dataset: Any,
    masks: Sequence[np.ndarray],
    *,
    mask_values: int,
    mask_ignore_index: int | None = None,
    sbs_classes: int | None = None,
    sbs_levels: Sequence[int] = (0,),
    seeds: Sequence[int] = (0, 1, 2),
    bits: int = 48,
    fc: tuple[int, int] = (4096, 4096),
    train: Any = None,
    train_fraction: float = 0.5,
    ks: Sequence[int] = (10, 50),
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    **net_options: Any,
) -> dict[str, Any]:
    """Train and score every method on ``dataset`` (see the module docstring).

    ``masks``: one label map per image of the data set (ground truth or pseudo-masks),
    used to train the segmentation branch (training part only) and to encode SBS (levels
    ``sbs_levels``, ``sbs_classes`` classes, void ``mask_ignore_index``). Returns a JSON-
    ready dict: settings, per-seed scores per method, mean / std per method and of the
    deltas proposed - baseline (in MAP points x 100: percentage points)."""
    import dataclasses

    from ..sbs import encode_sbs
    from .codes import pack_bits
    from .data import backbone_maps
    from .train import TrainConfig, train_hashnet
    from .unsupervised import ITQ, PCASign

    say = log or (lambda _m: None)
    tc = train or TrainConfig()
    cats = np.asarray(dataset.categories)
    tr, te = split_train_test(cats, train_fraction)
    paths = [str(p) for p in dataset.images]
    if len(masks) != len(paths):
        raise ValueError(f"masks must have one map per image: {len(paths)} images, "
                         f"{len(masks)} masks")
    ytr, yte = cats[tr], cats[te]
    t0 = time.perf_counter()
    maps = backbone_maps(paths, progress=progress)
    t_maps = time.perf_counter() - t0
    glob = maps["glob"].astype(np.float64)
    glob = glob / np.maximum(np.linalg.norm(glob, axis=1, keepdims=True), 1e-12)

    def sub(m: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v[rows] for k, v in m.items()}

    per_seed: dict[str, list[dict[str, float]]] = {}
    timings: dict[str, list[float]] = {}

    def add(name: str, sc: dict[str, float]) -> None:
        per_seed.setdefault(name, []).append(sc)
        say(f"  {name:<22} " + "  ".join(f"{k} {v:.4f}" if k == "final_loss" else
                                          f"{k} {100 * v:.2f}" for k, v in sc.items()))

    # SBS (no training, full label space of the masks)
    for lv in sbs_levels:
        codes = encode_sbs(list(masks), num_classes=sbs_classes or mask_values, levels=int(lv),
                           ignore_index=mask_ignore_index)
        codes = codes.reshape(len(paths), -1)
        nb = 5 * (sbs_classes or mask_values) * 4 ** int(lv)
        add(f"SBS level {lv} ({nb} bits)", score_codes(codes[tr], codes[te], ytr, yte, ks))
    # PCA-sign: deterministic
    pca = PCASign(bits=bits).fit(glob[tr])
    add(f"PCA-sign ({bits} bits)", score_codes(pca.encode(glob[tr]), pca.encode(glob[te]),
                                               ytr, yte, ks))
    train_masks = [masks[i] for i in tr]
    for seed in seeds:
        say(f"seed {seed}:")
        itq = ITQ(bits=bits, seed=int(seed)).fit(glob[tr])
        add(f"ITQ ({bits} bits)", score_codes(itq.encode(glob[tr]), itq.encode(glob[te]), ytr,
                                              yte, ks))
        for name, use_seg in (("baseline", False), ("proposed", True)):
            t1 = time.perf_counter()
            res = train_hashnet([paths[i] for i in tr], ytr,
                                train_masks if use_seg else None, use_segmentation=use_seg,
                                bits=bits, fc=fc, train=dataclasses.replace(tc, seed=int(seed)),
                                num_mask_values=mask_values,
                                mask_ignore_index=mask_ignore_index, progress=progress,
                                **net_options)
            timings.setdefault(name, []).append(time.perf_counter() - t1)
            m = res.model
            rdb = m.outputs_from_maps(sub(maps, tr))
            rq = m.outputs_from_maps(sub(maps, te))
            sc = score_codes(pack_bits((rdb >= 0.5).astype(np.uint8)),
                             pack_bits((rq >= 0.5).astype(np.uint8)), ytr, yte, ks)
            sc["final_loss"] = float(res.history[-1]["loss"])
            add(f"{name} ({bits} bits)", sc)
    summary = {name: {k: _summary([s[k] for s in runs]) for k in runs[0]}
               for name, runs in per_seed.items()}
    prop, base = per_seed[f"proposed ({bits} bits)"], per_seed[f"baseline ({bits} bits)"]
    metrics = [f"map@{k}" for k in ks] + ["map"]
    deltas = {k: _summary([100 * (p[k] - b[k]) for p, b in zip(prop, base)]) for k in metrics}
    return {
        "dataset": dataset.name, "images": len(paths), "train": int(tr.size),
        "test": int(te.size), "protocol": "database = training part, queries = test part",
        "bits": bits, "fc": list(fc), "seeds": list(map(int, seeds)),
        "train_config": dataclasses.asdict(tc), "net_options": dict(net_options),
        "backbone_seconds": round(t_maps, 1),
        "train_seconds": {k: _summary(v) for k, v in timings.items()},
        "per_seed": per_seed, "summary": summary, "delta_points": deltas,
    }
