"""Run a retrieval evaluation of Semantic Binary Signatures on a data set.

:func:`evaluate_sbs` takes one label map per image (from a model, or the ground truth:
"oracle" segmentation), encodes them at each requested number of blocks, ranks the
database for every query by Hamming distance (ties by the smaller database id, see
:mod:`semcbir_fast.eval.metrics`) and scores the rankings:

- ``map``: MAP over the full ranking (paper 000 Table 3);
- ``map_ties_avg``: the same with tied distances scored by their expected value over all
  orderings (independent of the id order; reported beside it);
- ``p_at_r``: precision of the first R results, R = relevant items of the query (paper
  000's Corel protocol, "first 100 neighbours among 1000");
- ``p_at_k``: precision of the first k (k = 20: paper 000 Table 7 / paper 001 Table 5);
- per-category AP and the 11-point interpolated precision-recall curve.

Modes (paper 000 Table 1): ``"query-in-db"`` -- every image is a query and stays in the
database (its own first result, normally); ``"disjoint"`` -- the first
``queries_per_category`` images of each category are the queries, the rest the database.
``exclude_query=True`` (query-in-db only) removes each query from its own ranking and
from its relevant count.

:func:`evaluate_signature` scores SBoVP (paper 000 section 3.2) and the hybrid signature
(paper 001) with the same protocol and metrics, one :class:`SignatureResult` per setting.
Its defaults are those of ``semcbir eval --signature sbovp|hybrid``: KAZE, ``L = 64``,
``n = 2``, semantic words on (SPEC.md's plain ``L x L`` form ranks poorly), the
semantic-histogram filter on (epsilon 0.9), and a vocabulary fitted on the evaluated images
themselves unless ``vocab_features`` names another training set.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .datasets import Dataset, split_disjoint
from .metrics import (
    average_precision,
    per_category_ap,
    precision_at_k,
    precision_at_r,
    precision_recall_curve,
)

__all__ = [
    "MODES",
    "EvalResult",
    "LevelResult",
    "SignatureResult",
    "evaluate_sbs",
    "evaluate_signature",
    "library_versions",
]

MODES = ("query-in-db", "disjoint")


@dataclass
class _Scores:
    """Retrieval scores shared by every signature's result."""

    map: float
    map_ties_avg: float
    p_at_r: float
    p_at_k: dict[int, float]
    per_category_ap: dict[str, float]
    pr_recall: list[float]
    pr_precision: list[float]
    encode_ms_per_image: float
    search_ms_per_query: float
    ap: np.ndarray = field(repr=False)
    top_ids: np.ndarray = field(repr=False)  # (nq, top) database positions
    top_distances: np.ndarray = field(repr=False)

    def _scores_dict(self) -> dict[str, Any]:
        return {
            "map": self.map,
            "map_ties_avg": self.map_ties_avg,
            "p_at_r": self.p_at_r,
            "p_at_k": {str(k): v for k, v in self.p_at_k.items()},
            "per_category_ap": self.per_category_ap,
            "pr_curve": {"recall": self.pr_recall, "precision": self.pr_precision},
            "encode_ms_per_image": self.encode_ms_per_image,
            "search_ms_per_query": self.search_ms_per_query,
        }


@dataclass
class LevelResult(_Scores):
    """Scores of one SBS setting (one number of blocks)."""

    levels: int
    blocks: int
    nbits: int
    nbytes: int

    @property
    def name(self) -> str:
        """Short column label: ``"16 blocks"``."""
        return f"{self.blocks} block{'s' if self.blocks != 1 else ''}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "levels": self.levels,
            "blocks": self.blocks,
            "nbits": self.nbits,
            "nbytes": self.nbytes,
            **self._scores_dict(),
        }


@dataclass
class SignatureResult(_Scores):
    """Scores of one SBoVP or hybrid setting (one column of :meth:`EvalResult.table`)."""

    signature: str
    label: str
    params: dict[str, Any]

    @property
    def name(self) -> str:
        """Short column label: the setting's label (e.g. ``"kaze L=64 n=2"``)."""
        return self.label

    def to_dict(self) -> dict[str, Any]:
        return {
            "signature": self.signature,
            "label": self.label,
            **self.params,
            **self._scores_dict(),
        }


@dataclass
class EvalResult:
    """Everything an evaluation measured, with its settings; see :meth:`to_dict`."""

    settings: dict[str, Any]
    results: list[Any]  # LevelResult (sbs) or SignatureResult (sbovp, hybrid)
    dataset: Dataset = field(repr=False)
    query_idx: np.ndarray = field(repr=False)
    db_idx: np.ndarray = field(repr=False)
    label_maps: list[np.ndarray] | None = field(default=None, repr=False)
    versions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: settings, versions, per-level numbers and the paper's numbers."""
        from .paper import reference_for

        return {
            "settings": self.settings,
            "versions": self.versions,
            "results": [r.to_dict() for r in self.results],
            "paper": reference_for(self.settings.get("dataset", ""), self.signature),
        }

    @property
    def signature(self) -> str:
        """``"sbs"``, ``"sbovp"`` or ``"hybrid"``."""
        return str(self.settings.get("signature", "sbs"))

    def best(self) -> LevelResult | SignatureResult:
        """The setting with the highest MAP (the first on ties)."""
        return max(self.results, key=lambda r: r.map)

    def table(self) -> str:
        """Plain-text table in paper 000 Table 3's layout (MAP per number of blocks)."""
        from .paper import reference_for

        s = self.settings
        if self.results and isinstance(self.results[0], SignatureResult):
            return self._signature_table()
        ref = reference_for(s.get("dataset", ""))
        name = f"{s.get('dataset_label', s.get('dataset'))} ({s.get('segmentation', '?')})"
        rows: list[tuple[str, list[float | None]]] = [
            (f"MAP {name}", [r.map for r in self.results]),
            ("MAP, ties averaged", [r.map_ties_avg for r in self.results]),
            ("P@R (R = category size)", [r.p_at_r for r in self.results]),
        ]
        for k in self.results[0].p_at_k if self.results else {}:
            rows.append((f"P@{k}", [r.p_at_k[k] for r in self.results]))
        for label, vals in ref.get("table3", {}).items():
            rows.append(
                (
                    f"paper 000 Table 3, {label}",
                    [vals[r.levels] if r.levels < len(vals) else None for r in self.results],
                )
            )
        width = max(len("Number of blocks"), *(len(lab) for lab, _ in rows))
        cols = [f"4^{r.levels}={r.blocks}" for r in self.results]
        lines = [f"{'Number of blocks':<{width}} | " + " | ".join(f"{c:>8}" for c in cols)]
        lines.append("-" * len(lines[0]))
        for label, vals in rows:
            lines.append(
                f"{label:<{width}} | "
                + " | ".join(f"{'-' if v is None else f'{v:.4f}':>8}" for v in vals)
            )
        return "\n".join(lines)

    def _signature_table(self) -> str:
        """SBoVP / hybrid: one column per setting, rows MAP, P@R, P@k."""
        s = self.settings
        name = f"{s.get('dataset_label', s.get('dataset'))} ({s.get('segmentation', '?')})"
        rows: list[tuple[str, list[str]]] = [
            (f"MAP {name}", [f"{r.map:.4f}" for r in self.results]),
            ("MAP, ties averaged", [f"{r.map_ties_avg:.4f}" for r in self.results]),
            ("P@R (R = category size)", [f"{r.p_at_r:.4f}" for r in self.results]),
        ]
        for k in self.results[0].p_at_k:
            rows.append((f"P@{k}", [f"{r.p_at_k[k]:.4f}" for r in self.results]))
        rows.append(
            ("ms/image (signature)", [f"{r.encode_ms_per_image:.2f}" for r in self.results])
        )
        rows.append(("ms/query (search)", [f"{r.search_ms_per_query:.3f}" for r in self.results]))
        cols = [r.label for r in self.results]
        width = max(len("Setting"), *(len(lab) for lab, _ in rows))
        cw = max(8, *(len(c) for c in cols))
        lines = [f"{'Setting':<{width}} | " + " | ".join(f"{c:>{cw}}" for c in cols)]
        lines.append("-" * len(lines[0]))
        for label, vals in rows:
            lines.append(f"{label:<{width}} | " + " | ".join(f"{v:>{cw}}" for v in vals))
        return "\n".join(lines)


def library_versions() -> dict[str, str]:
    """Versions of the library, its backend and the main dependencies."""
    import semcbir_fast as sf

    out = {
        "semcbir_fast": sf.__version__,
        "backend": sf.backend(),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        out["isa"] = sf.active_isa()
    except Exception:  # pragma: no cover - numba backend
        pass
    import sys

    for mod in ("torch", "cv2"):
        m = sys.modules.get(mod)
        if m is not None:
            out[mod] = getattr(m, "__version__", "?")
    return out


def _rank(q: np.ndarray, db: np.ndarray, threads: int) -> tuple[np.ndarray, np.ndarray]:
    from semcbir_fast import hamming_topk

    return hamming_topk(q, db, db.shape[0], threads=threads)


@dataclass
class _Split:
    """Queries and database of one evaluation, with the relevant counts per query."""

    q_idx: np.ndarray
    db_idx: np.ndarray
    qcat: np.ndarray
    dbcat: np.ndarray
    n_rel: np.ndarray
    counts: dict[int, int]
    names: dict[int, str]
    exclude_query: bool

    @property
    def ndb(self) -> int:
        return int(self.db_idx.shape[0])

    @property
    def ranking_len(self) -> int:
        return self.ndb - 1 if self.exclude_query else self.ndb

    @classmethod
    def make(
        cls, dataset: Dataset, mode: str, exclude_query: bool, queries_per_category: int
    ) -> _Split:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if exclude_query and mode != "query-in-db":
            raise ValueError(
                "exclude_query only applies to mode='query-in-db' (disjoint queries "
                "are never in the database)"
            )
        cats = dataset.categories
        n = len(dataset)
        if mode == "query-in-db":
            q_idx = np.arange(n)
            db_idx = np.arange(n)
        else:
            q_idx, db_idx = split_disjoint(cats, queries_per_category)
        ndb = db_idx.shape[0]
        if (ndb - 1 if exclude_query else ndb) < 1:
            raise ValueError(f"the database has {ndb} images: nothing to rank")
        qcat = cats[q_idx]
        dbcat = cats[db_idx]
        counts = {int(c): int(np.sum(dbcat == c)) for c in np.unique(dbcat)}
        n_rel = np.array([counts.get(int(c), 0) for c in qcat], dtype=np.float64)
        if exclude_query:
            n_rel -= 1
        names = {c: dataset.category_name(c) for c in np.unique(cats).tolist()}
        return cls(q_idx, db_idx, qcat, dbcat, n_rel, counts, names, bool(exclude_query))

    def cutoffs(self, ks: Sequence[int]) -> list[int]:
        return sorted({int(k) for k in ks if 0 < int(k) <= self.ranking_len})

    def top(self, top: int) -> int:
        return max(1, min(int(top), self.ranking_len))


def _score(
    ranker: Any, split: _Split, ks: Sequence[int], top: int, dist_dtype: Any, chunk: int
) -> dict[str, Any]:
    """Score full rankings. ``ranker(s, e)`` ranks queries ``s:e`` against the whole database:
    ``(distances, rows, tie_keys)``, ``(e - s, ndb)`` each, rows = database positions in rank
    order, ``tie_keys`` non-decreasing along each row (equal keys = tied results)."""
    q_idx, db_idx, ndb = split.q_idx, split.db_idx, split.ndb
    nq = q_idx.shape[0]
    ap = np.zeros(nq)
    ap_t = np.zeros(nq)
    p_r = np.zeros(nq)
    p_k = {k: np.zeros(nq) for k in ks}
    pr = np.zeros(11)
    top_ids = np.zeros((nq, top), dtype=np.int64)
    top_d = np.zeros((nq, top), dtype=dist_dtype)
    t_search = 0.0
    for s in range(0, nq, chunk):
        e = min(nq, s + chunk)
        t0 = time.perf_counter()
        dist, rows, key = ranker(s, e)
        t_search += time.perf_counter() - t0
        if split.exclude_query:
            keep = db_idx[rows] != q_idx[s:e, None]
            rows = rows[keep].reshape(e - s, ndb - 1)
            dist = dist[keep].reshape(e - s, ndb - 1)
            key = key[keep].reshape(e - s, ndb - 1)
        ranked = split.dbcat[rows]
        qs = split.qcat[s:e]
        nr = split.n_rel[s:e]
        ap[s:e] = average_precision(ranked, qs, n_relevant=nr)
        ap_t[s:e] = average_precision(ranked, qs, n_relevant=nr, distances=key)
        p_r[s:e] = precision_at_r(ranked, qs, nr)
        for k in ks:
            p_k[k][s:e] = precision_at_k(ranked, qs, k)
        _, prc = precision_recall_curve(ranked, qs, n_relevant=nr)
        pr += prc * (e - s)
        top_ids[s:e] = db_idx[rows[:, :top]]
        top_d[s:e] = dist[:, :top]
    return {
        "map": float(ap.mean()),
        "map_ties_avg": float(ap_t.mean()),
        "p_at_r": float(p_r.mean()),
        "p_at_k": {k: float(v.mean()) for k, v in p_k.items()},
        "per_category_ap": {
            str(k): v for k, v in per_category_ap(ap, split.qcat, split.names).items()
        },
        "pr_recall": np.linspace(0, 1, 11).tolist(),
        "pr_precision": (pr / nq).tolist(),
        "search_ms_per_query": 1e3 * t_search / nq,
        "ap": ap,
        "top_ids": top_ids,
        "top_distances": top_d,
    }


def evaluate_sbs(
    dataset: Dataset,
    label_maps: Sequence[np.ndarray],
    *,
    num_classes: int,
    levels: Sequence[int] = (0, 1, 2, 3),
    ignore_index: int | None = None,
    pyramid: bool = False,
    mode: str = "query-in-db",
    exclude_query: bool = False,
    queries_per_category: int = 10,
    ks: Sequence[int] = (10, 20),
    top: int = 20,
    threads: int = 0,
    settings: dict[str, Any] | None = None,
    keep_label_maps: bool = False,
) -> EvalResult:
    """Score SBS retrieval on ``dataset`` at each number of blocks.

    Parameters
    ----------
    dataset : Dataset
        Images and categories (:mod:`semcbir_fast.eval.datasets`).
    label_maps : sequence of numpy.ndarray
        One ``(H, W)`` label map per image of ``dataset``, same order.
    num_classes : int
        ``M`` of the codes (the segmentation's number of classes).
    levels : sequence of int, default (0, 1, 2, 3)
        SBS levels ``n`` to evaluate (``4**n`` blocks each).
    ignore_index : int, optional
        Label value treated as void (e.g. 0 for MSRC's ground truth).
    pyramid : bool, default False
        Encode levels ``0..n`` concatenated (SPEC extension).
    mode : {"query-in-db", "disjoint"}
    exclude_query : bool, default False
        Query-in-db only: leave each query out of its own ranking.
    queries_per_category : int, default 10
        Disjoint mode: queries taken from each category.
    ks : sequence of int, default (10, 20)
        Cut-offs for P@k.
    top : int, default 20
        Results kept per query for galleries (``LevelResult.top_ids``).
    threads : int, default 0
        Threads for encoding and search (0 = all cores).
    settings : dict, optional
        Extra entries for ``EvalResult.settings`` (model, device, ...).
    keep_label_maps : bool, default False
        Keep ``label_maps`` on the result (for overlays in a gallery).

    Returns
    -------
    EvalResult
    """
    from semcbir_fast import encode_sbs, sbs_layout

    if len(label_maps) != len(dataset):
        raise ValueError(
            f"label_maps must have one map per image: {len(dataset)} images, {len(label_maps)} maps"
        )
    levels = [int(v) for v in levels]
    if not levels:
        raise ValueError("levels must name at least one level, e.g. [0, 1, 2, 3]")
    n = len(dataset)
    split = _Split.make(dataset, mode, exclude_query, queries_per_category)
    q_idx, db_idx, ndb = split.q_idx, split.db_idx, split.ndb
    nq = q_idx.shape[0]
    ks = split.cutoffs(ks)
    top = split.top(top)
    counts = split.counts
    results: list[LevelResult] = []
    for lv in levels:
        layout = sbs_layout(num_classes, lv, pyramid=pyramid)
        t0 = time.perf_counter()
        codes = encode_sbs(
            list(label_maps),
            num_classes=num_classes,
            levels=lv,
            ignore_index=ignore_index,
            pyramid=pyramid,
            threads=threads,
        )
        t_enc = time.perf_counter() - t0
        codes = codes.reshape(n, layout.stride)
        qc, dbc = codes[q_idx], np.ascontiguousarray(codes[db_idx])

        def ranker(s: int, e: int, qc: np.ndarray = qc, dbc: np.ndarray = dbc) -> Any:
            dist, rows = _rank(qc[s:e], dbc, threads)
            return dist, rows, dist

        sc = _score(ranker, split, ks, top, np.int32, max(1, (1 << 22) // max(ndb, 1)))
        results.append(
            LevelResult(
                levels=lv,
                blocks=layout.blocks,
                nbits=layout.nbits,
                nbytes=layout.nbytes,
                encode_ms_per_image=1e3 * t_enc / n,
                **sc,
            )
        )
    st: dict[str, Any] = {
        "dataset": dataset.name,
        "root": str(dataset.root),
        "images": n,
        "categories": len(counts),
        "queries": int(nq),
        "database": int(ndb),
        "mode": mode,
        "exclude_query": bool(exclude_query),
        "queries_per_category": int(queries_per_category) if mode == "disjoint" else None,
        "signature": "sbs",
        "levels": levels,
        "pyramid": bool(pyramid),
        "num_classes": int(num_classes),
        "ignore_index": ignore_index,
        "ks": ks,
        "ties": "by smaller database id (as hamming_topk); map_ties_avg averages over tie orders",
    }
    st.update(settings or {})
    return EvalResult(
        settings=st,
        results=results,
        dataset=dataset,
        query_idx=q_idx,
        db_idx=db_idx,
        label_maps=list(label_maps) if keep_label_maps else None,
        versions=library_versions(),
    )


SIGNATURES = ("sbs", "sbovp", "hybrid")


def _features_cache_path(paths: Sequence[Any], method: str, max_keypoints: int | None) -> Any:
    import hashlib
    import json
    import os
    from pathlib import Path

    from semcbir_fast._paths import cache_dir

    try:
        import cv2

        cv = cv2.__version__
    except ImportError:  # pragma: no cover
        cv = "?"
    parts: dict[str, Any] = {
        "method": method,
        "max_keypoints": max_keypoints,
        "opencv": cv,
        "images": [],
    }
    for p in paths:
        st = os.stat(p)
        parts["images"].append([os.path.abspath(p), st.st_size, st.st_mtime_ns])
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return Path(cache_dir()) / "sbovp" / f"features-{method}-{key[:24]}.npz"


def features_cached(
    paths: Sequence[Any],
    method: str = "kaze",
    *,
    max_keypoints: int | None = None,
    threads: int = 0,
    progress: bool = False,
    use_cache: bool = True,
    log: Any = None,
) -> list[Any]:
    """Keypoints and descriptors of ``paths`` (:func:`semcbir_fast.features.extract_features`),
    cached under ``cache_dir()/sbovp/features-<method>-<key>.npz``; the key hashes the method,
    ``max_keypoints``, the OpenCV version and each file's absolute path, size and mtime."""
    from semcbir_fast.features import extract_features, load_features, save_features

    paths = [str(p) for p in paths]
    cpath = _features_cache_path(paths, method, max_keypoints) if use_cache else None
    if cpath is not None and cpath.is_file():
        try:
            feats = load_features(cpath)
        except (OSError, ValueError, KeyError):
            feats = []
        if len(feats) == len(paths):
            if log is not None:
                log(f"features ({method}) of {len(paths)} images read from {cpath}")
            return feats
    feats = extract_features(
        paths, method, max_keypoints=max_keypoints, threads=threads, progress=progress
    )
    if cpath is not None:
        try:
            cpath.parent.mkdir(parents=True, exist_ok=True)
            tmp = cpath.with_name(cpath.stem + ".tmp.npz")
            save_features(tmp, feats)
            tmp.replace(cpath)
        except OSError:  # pragma: no cover - read-only cache: just recompute next time
            pass
    return feats


def _tie_keys(dist: np.ndarray, penalised: np.ndarray | None) -> np.ndarray:
    """Non-decreasing float64 keys of filtered rankings: penalised results after the rest."""
    d = dist.astype(np.float64)
    if penalised is None or not penalised.any():
        return d
    fin = np.where(np.isfinite(d), d, 0.0)
    off = fin.max(axis=1, keepdims=True) + 1.0
    return np.where(penalised, d + off, d)


def evaluate_signature(
    dataset: Dataset,
    label_maps: Sequence[np.ndarray],
    *,
    signature: str,
    num_classes: int,
    features: Sequence[Any] | None = None,
    method: str = "kaze",
    vocab_features: Sequence[Any] | None = None,
    n_words: Sequence[int] | int = (16,),
    n: Sequence[int] | int = (2,),
    semantic_words: bool = True,
    normalize: str | None = "hellinger",
    histogram_weight: float = 1.0,
    epsilon: float | str | None = "auto",
    seed: int = 0,
    ignore_index: int | None = None,
    mode: str = "query-in-db",
    exclude_query: bool = False,
    queries_per_category: int = 10,
    ks: Sequence[int] = (10, 20),
    top: int = 20,
    threads: int = 0,
    progress: bool = False,
    settings: dict[str, Any] | None = None,
    keep_label_maps: bool = False,
) -> EvalResult:
    """Score SBoVP (paper 000 section 3.2) or the hybrid signature (paper 001) on ``dataset``.

    Same protocol, modes and metrics as :func:`evaluate_sbs`; one
    :class:`SignatureResult` per setting (SBoVP: every vocabulary size x phrase length).

    Parameters
    ----------
    dataset, label_maps
        As for :func:`evaluate_sbs`.
    signature : {"sbovp", "hybrid"}
    num_classes : int
        ``M`` of the segmentation.
    features : sequence of Features, optional
        Keypoints / descriptors of the images of ``dataset`` (same order); default: extracted
        with ``method`` (not cached here; see :func:`features_cached`).
    method : str
        Detector when ``features`` is not given (default KAZE, paper 000's best).
    vocab_features : sequence of Features, optional
        SBoVP: the vocabulary's training set. Default: the evaluated images themselves
        (paper 000 fits on another data set, Pascal VOC; pass another set's features for
        that protocol).
    n_words : int or sequence of int
        SBoVP vocabulary size(s) ``L`` (default 16: the best of 16-128 with semantic words
        and the histogram, README).
    n : int or sequence of int
        SBoVP phrase length(s), 2..4 (default 2).
    semantic_words : bool
        SBoVP: words tagged with their region's class (default **True** here: SPEC.md's
        plain ``L x L`` form ranks far worse; see :func:`semcbir_fast.sbovp.sbovp_signatures`).
    normalize : {"hellinger", "l2", "l1", None}
        SBoVP per-image normalisation (default hellinger: square roots, then L2).
    histogram_weight : float
        SBoVP: weight of the semantic histogram appended to each signature (default 1;
        0 = none; :func:`semcbir_fast.sbovp.append_histograms`).
    epsilon : float, None or "auto"
        Semantic-histogram filter of paper 001, applied to the full ranking: results at L1
        histogram distance ``> epsilon`` from the query go after the others;
        ``map_ties_avg`` then treats equal distances inside each part as ties. "auto"
        (default): 0.9 for the hybrid signature and for SBoVP without the histogram, off
        for SBoVP with it (:func:`semcbir_fast.hybrid.resolve_epsilon`); None = off.
    seed : int
        k-means seed of the vocabulary.
    ignore_index, mode, exclude_query, queries_per_category, ks, top, threads, settings,
    keep_label_maps
        As for :func:`evaluate_sbs`.
    progress : bool
        Progress bar of the feature extraction.
    """
    from semcbir_fast.features import extract_features
    from semcbir_fast.hybrid import (
        histogram_filter,
        hybrid_signatures,
        hybrid_topk,
        resolve_epsilon,
    )
    from semcbir_fast.sbovp import PhraseIndex, Vocabulary, sbovp_signatures

    if signature not in ("sbovp", "hybrid"):
        raise ValueError(
            f"signature must be 'sbovp' or 'hybrid' (evaluate_sbs for 'sbs'), got {signature!r}"
        )
    if len(label_maps) != len(dataset):
        raise ValueError(
            f"label_maps must have one map per image: {len(dataset)} images, {len(label_maps)} maps"
        )
    words_list = [int(v) for v in np.atleast_1d(n_words).tolist()]
    n_list = [int(v) for v in np.atleast_1d(n).tolist()]
    if signature == "sbovp" and (not words_list or not n_list):
        raise ValueError("n_words and n must name at least one value")
    epsilon = resolve_epsilon(epsilon, signature,
                              histogram_weight if signature == "sbovp" else 0.0)
    size = len(dataset)
    split = _Split.make(dataset, mode, exclude_query, queries_per_category)
    q_idx, db_idx, ndb = split.q_idx, split.db_idx, split.ndb
    nq = q_idx.shape[0]
    ks = split.cutoffs(ks)
    top = split.top(top)

    t0 = time.perf_counter()
    if features is None:
        features = extract_features(
            [str(p) for p in dataset.images], method, threads=threads, progress=progress
        )
    feats = list(features)
    t_feat = time.perf_counter() - t0
    if len(feats) != size:
        raise ValueError(
            f"features must have one entry per image: {size} images, {len(feats)} feature sets"
        )
    methods = {f.method for f in feats}
    used_method = methods.pop() if len(methods) == 1 else method
    kp = np.array([len(f) for f in feats])
    maps = list(label_maps)
    chunk = max(1, (1 << 21) // max(ndb, 1))

    t0 = time.perf_counter()
    hyb = hybrid_signatures(feats, maps, num_classes, ignore_index=ignore_index)
    t_hyb = time.perf_counter() - t0
    hq, hd = hyb.histograms[q_idx], hyb.histograms[db_idx]
    filt = "off" if epsilon is None else f"eps {epsilon:g}"

    results: list[SignatureResult] = []
    info: dict[str, Any] = {}
    if signature == "hybrid":
        qh, dh = hyb[q_idx], hyb[db_idx]

        def ranker(s: int, e: int) -> Any:
            d, r, p = hybrid_topk(
                qh[np.arange(s, e)],
                dh,
                ndb,
                epsilon=epsilon,
                threads=threads,
                return_penalised=True,
            )
            return d, r, _tie_keys(d, p)

        sc = _score(ranker, split, ks, top, np.float32, chunk)
        results.append(
            SignatureResult(
                signature="hybrid",
                label=f"{used_method} filter {filt}",
                params={"method": used_method, "epsilon": epsilon},
                encode_ms_per_image=1e3 * t_hyb / size,
                **sc,
            )
        )
    else:
        t0 = time.perf_counter()
        train = feats if vocab_features is None else list(vocab_features)
        vocabs = {L: Vocabulary.fit(train, L, seed=seed, threads=threads) for L in words_list}
        t_vocab = time.perf_counter() - t0
        info = {
            "vocab_fit_seconds": round(t_vocab, 2),
            "vocab_train_images": len(train),
            "vocab_train_descriptors": int(sum(len(f) for f in train)),
        }
        for L in words_list:
            for nn in n_list:
                t0 = time.perf_counter()
                sig = sbovp_signatures(
                    feats,
                    maps,
                    vocabs[L],
                    n=nn,
                    normalize=normalize,
                    ignore_index=ignore_index,
                    num_classes=num_classes,
                    semantic_words=semantic_words,
                    histogram_weight=histogram_weight,
                    histograms=hyb.histograms,
                    threads=threads,
                )
                t_sig = time.perf_counter() - t0
                qs, pindex = sig[q_idx], PhraseIndex(sig[db_idx], threads=threads)

                def ranker(s: int, e: int, qs: Any = qs, pindex: Any = pindex) -> Any:
                    d, r = pindex.search(qs[np.arange(s, e)], ndb, threads=threads)
                    if epsilon is None:
                        return d, r, d
                    d, r, p = histogram_filter(
                        d, r, hq[s:e], hd, epsilon=epsilon, return_penalised=True
                    )
                    return d, r, _tie_keys(d, p)

                sc = _score(ranker, split, ks, top, np.float32, chunk)
                results.append(
                    SignatureResult(
                        signature="sbovp",
                        label=f"{used_method} L={L} n={nn}",
                        params={
                            "method": used_method,
                            "n_words": L,
                            "n": nn,
                            "semantic_words": bool(semantic_words),
                            "normalize": normalize,
                            "histogram_weight": float(histogram_weight),
                            "epsilon": epsilon,
                            "nnz_per_image": sig.nnz / max(size, 1),
                        },
                        encode_ms_per_image=1e3 * t_sig / size,
                        **sc,
                    )
                )
    st: dict[str, Any] = {
        "dataset": dataset.name,
        "root": str(dataset.root),
        "images": size,
        "categories": len(split.counts),
        "queries": int(nq),
        "database": int(ndb),
        "mode": mode,
        "exclude_query": bool(exclude_query),
        "queries_per_category": int(queries_per_category) if mode == "disjoint" else None,
        "signature": signature,
        "method": used_method,
        "filter": filt,
        "num_classes": int(num_classes),
        "ignore_index": ignore_index,
        "ks": ks,
        "keypoints_per_image": {
            "mean": float(kp.mean()) if size else 0.0,
            "min": int(kp.min()) if size else 0,
            "max": int(kp.max()) if size else 0,
        },
        "features_seconds": round(t_feat, 2),
        "ties": "by (penalised, distance, smaller database id); map_ties_avg averages over "
        "orders of equal distances",
    }
    if signature == "sbovp":
        st.update(
            n_words=words_list,
            n=n_list,
            semantic_words=bool(semantic_words),
            normalize=normalize,
            histogram_weight=float(histogram_weight),
            vocab_seed=int(seed),
            vocabulary="evaluated set" if vocab_features is None else "given set",
            **info,
        )
    st.update(settings or {})
    return EvalResult(
        settings=st,
        results=results,
        dataset=dataset,
        query_idx=q_idx,
        db_idx=db_idx,
        label_maps=maps if keep_label_maps else None,
        versions=library_versions(),
    )
