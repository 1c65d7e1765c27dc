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

__all__ = ["MODES", "EvalResult", "LevelResult", "evaluate_sbs", "library_versions"]

MODES = ("query-in-db", "disjoint")


@dataclass
class LevelResult:
    """Scores of one SBS setting (one number of blocks)."""

    levels: int
    blocks: int
    nbits: int
    nbytes: int
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "levels": self.levels,
            "blocks": self.blocks,
            "nbits": self.nbits,
            "nbytes": self.nbytes,
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
class EvalResult:
    """Everything an evaluation measured, with its settings; see :meth:`to_dict`."""

    settings: dict[str, Any]
    results: list[LevelResult]
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
            "paper": reference_for(self.settings.get("dataset", "")),
        }

    def best(self) -> LevelResult:
        """The setting with the highest MAP (the first on ties)."""
        return max(self.results, key=lambda r: r.map)

    def table(self) -> str:
        """Plain-text table in paper 000 Table 3's layout (MAP per number of blocks)."""
        from .paper import reference_for

        s = self.settings
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
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if exclude_query and mode != "query-in-db":
        raise ValueError(
            "exclude_query only applies to mode='query-in-db' (disjoint queries "
            "are never in the database)"
        )
    levels = [int(v) for v in levels]
    if not levels:
        raise ValueError("levels must name at least one level, e.g. [0, 1, 2, 3]")
    cats = dataset.categories
    n = len(dataset)
    if mode == "query-in-db":
        q_idx = np.arange(n)
        db_idx = np.arange(n)
    else:
        q_idx, db_idx = split_disjoint(cats, queries_per_category)
    nq, ndb = q_idx.shape[0], db_idx.shape[0]
    ranking_len = ndb - 1 if exclude_query else ndb
    if ranking_len < 1:
        raise ValueError(f"the database has {ndb} images: nothing to rank")
    ks = sorted({int(k) for k in ks if 0 < int(k) <= ranking_len})
    top = max(1, min(int(top), ranking_len))
    qcat = cats[q_idx]
    dbcat = cats[db_idx]
    counts = {int(c): int(np.sum(dbcat == c)) for c in np.unique(dbcat)}
    n_rel = np.array([counts.get(int(c), 0) for c in qcat], dtype=np.float64)
    if exclude_query:
        n_rel -= 1
    names = {c: dataset.category_name(c) for c in np.unique(cats).tolist()}

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
        ap = np.zeros(nq)
        ap_t = np.zeros(nq)
        p_r = np.zeros(nq)
        p_k = {k: np.zeros(nq) for k in ks}
        pr = np.zeros(11)
        top_ids = np.zeros((nq, top), dtype=np.int64)
        top_d = np.zeros((nq, top), dtype=np.int32)
        t_search = 0.0
        chunk = max(1, (1 << 22) // max(ndb, 1))
        for s in range(0, nq, chunk):
            e = min(nq, s + chunk)
            t0 = time.perf_counter()
            dist, rows = _rank(qc[s:e], dbc, threads)
            t_search += time.perf_counter() - t0
            if exclude_query:
                keep = db_idx[rows] != q_idx[s:e, None]
                rows = rows[keep].reshape(e - s, ndb - 1)
                dist = dist[keep].reshape(e - s, ndb - 1)
            ranked = dbcat[rows]
            qs = qcat[s:e]
            nr = n_rel[s:e]
            ap[s:e] = average_precision(ranked, qs, n_relevant=nr)
            ap_t[s:e] = average_precision(ranked, qs, n_relevant=nr, distances=dist)
            p_r[s:e] = precision_at_r(ranked, qs, nr)
            for k in ks:
                p_k[k][s:e] = precision_at_k(ranked, qs, k)
            _, prc = precision_recall_curve(ranked, qs, n_relevant=nr)
            pr += prc * (e - s)
            top_ids[s:e] = db_idx[rows[:, :top]]
            top_d[s:e] = dist[:, :top]
        results.append(
            LevelResult(
                levels=lv,
                blocks=layout.blocks,
                nbits=layout.nbits,
                nbytes=layout.nbytes,
                map=float(ap.mean()),
                map_ties_avg=float(ap_t.mean()),
                p_at_r=float(p_r.mean()),
                p_at_k={k: float(v.mean()) for k, v in p_k.items()},
                per_category_ap={str(k): v for k, v in per_category_ap(ap, qcat, names).items()},
                pr_recall=np.linspace(0, 1, 11).tolist(),
                pr_precision=(pr / nq).tolist(),
                encode_ms_per_image=1e3 * t_enc / n,
                search_ms_per_query=1e3 * t_search / nq,
                ap=ap,
                top_ids=top_ids,
                top_distances=top_d,
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
