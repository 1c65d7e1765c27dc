"""Ranking metrics for retrieval evaluation (SPEC.md section 5).

Every function takes rankings as ``ranked_labels``: ``(nq, n)`` category of the result at
each rank, best first, and ``query_labels``: ``(nq,)`` category of each query. A result is
relevant when its category equals the query's. Slots past the end of a short ranking
(``hamming_topk`` pads them with id ``-1``) must be marked with any label that no query
has, e.g. ``-1``: they then count as non-relevant, which is what they are.

Definitions (``rel_i`` = 1 if the result at rank ``i`` is relevant, ``R`` = number of
relevant items in the database for this query, ``n_relevant``):

- ``P@k = (1/k) sum_{i<=k} rel_i``;
- ``AP = (1/R) sum_i rel_i * P@i`` over the full ranking (non-interpolated; Manning et al.,
  *Introduction to Information Retrieval*, section 8.4). ``R`` defaults to the relevant
  items present in the ranking, which is right when the ranking is the whole database;
  for a truncated (top-k) ranking pass ``n_relevant`` (relevant items not retrieved then
  contribute 0). A query with ``R = 0`` has AP 0;
- ``MAP`` = mean AP over the queries;
- ``P@R`` (R-precision) = ``P@k`` with ``k = R``: paper 000's "precision of the first 100
  nearest neighbours among 1000" on Corel-1K, whose categories have 100 images;
- the precision-recall curve is the interpolated one (``p_interp(r) = max_{r' >= r} p(r')``)
  at fixed recall levels, averaged over the queries (TREC's 11-point curve by default).

Ties
----
Hamming distances are small integers, so many results tie. The rankings this library
produces order equal distances by the **smaller id** (database row), exactly as
:func:`semcbir_fast.hamming_topk` does, and the metrics above score that order as given.
Because ids often follow the file order, which groups categories, that order can favour or
penalise a query. Pass the ranked ``distances`` to :func:`average_precision` or
:func:`precision_at_k` to get instead the **expected** value over all orderings of the tied
results (McSherry and Najork, "Computing information retrieval performance measures
efficiently in the presence of tied scores", ECIR 2008), which does not depend on ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "MSRC_V1_SYNONYMS",
    "average_precision",
    "map_classes_by_name",
    "mean_average_precision",
    "per_category_ap",
    "precision_at_k",
    "precision_at_r",
    "precision_recall_curve",
    "relevance",
    "segmentation_scores",
]


def relevance(ranked_labels: Any, query_labels: Any) -> np.ndarray:
    """Boolean ``(nq, n)``: whether the result at each rank has the query's category."""
    ranked = np.asarray(ranked_labels)
    if ranked.ndim == 1:
        ranked = ranked.reshape(1, -1)
    q = np.asarray(query_labels).reshape(-1, 1)
    if ranked.ndim != 2 or ranked.shape[0] != q.shape[0]:
        raise ValueError(
            f"ranked_labels must be (nq, n) with nq == len(query_labels), got shape "
            f"{ranked.shape} and {q.shape[0]} query labels"
        )
    return ranked == q


def _n_relevant(rel: np.ndarray, n_relevant: Any) -> np.ndarray:
    if n_relevant is None:
        return rel.sum(axis=1).astype(np.float64)
    r = np.asarray(n_relevant, dtype=np.float64).reshape(-1)
    if r.shape[0] == 1 and rel.shape[0] != 1:
        r = np.broadcast_to(r, (rel.shape[0],))
    if r.shape[0] != rel.shape[0]:
        raise ValueError(
            f"n_relevant must have one value per query ({rel.shape[0]}), got {r.shape[0]}"
        )
    hits = rel.sum(axis=1)
    if np.any(r < hits):
        bad = int(np.flatnonzero(r < hits)[0])
        raise ValueError(
            f"n_relevant is smaller than the relevant results in the ranking for query {bad} "
            f"({r[bad]:g} < {hits[bad]}); it must count every relevant database item"
        )
    return r


def _tie_groups(distances: Any, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per position: start index and size of its group of equal distances (rows sorted)."""
    d = np.asarray(distances)
    if d.ndim == 1:
        d = d.reshape(1, -1)
    if d.shape != shape:
        raise ValueError(f"distances must have the shape of the ranking {shape}, got {d.shape}")
    if shape[1] > 1 and np.any(np.diff(d.astype(np.float64), axis=1) < 0):
        raise ValueError("distances must be sorted ascending along each row (a ranking)")
    n = shape[1]
    pos = np.broadcast_to(np.arange(n), shape)
    new = np.ones(shape, dtype=bool)
    new[:, 1:] = d[:, 1:] != d[:, :-1]
    start = np.maximum.accumulate(np.where(new, pos, 0), axis=1)
    # end (exclusive) of the group: next start, scanned from the right
    is_end = np.ones(shape, dtype=bool)
    is_end[:, :-1] = new[:, 1:]
    end_at = np.where(is_end, pos + 1, n + 1)
    end = np.minimum.accumulate(end_at[:, ::-1], axis=1)[:, ::-1]
    return start, end - start


def _group_sums(
    rel: np.ndarray, start: np.ndarray, size: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per position: relevant items in its tie group, and relevant items before the group."""
    csum = np.zeros((rel.shape[0], rel.shape[1] + 1), dtype=np.int64)
    np.cumsum(rel, axis=1, out=csum[:, 1:])
    before = np.take_along_axis(csum, start, axis=1)
    in_group = np.take_along_axis(csum, start + size, axis=1) - before
    return in_group, before


def average_precision(
    ranked_labels: Any, query_labels: Any, *, n_relevant: Any = None, distances: Any = None
) -> np.ndarray:
    """Non-interpolated average precision of each ranking.

    Parameters
    ----------
    ranked_labels : array-like
        ``(nq, n)`` category of the result at each rank (best first).
    query_labels : array-like
        ``(nq,)`` category of each query.
    n_relevant : array-like, optional
        ``(nq,)`` relevant items in the database per query (default: those in the ranking).
    distances : array-like, optional
        ``(nq, n)`` distance of each ranked result (ascending per row). When given, returns
        the expected AP over all orderings of results with equal distances (see the module
        docstring) instead of the AP of the order given.

    Returns
    -------
    numpy.ndarray
        float64 ``(nq,)``; 0 for a query with no relevant item.
    """
    rel = relevance(ranked_labels, query_labels)
    total = _n_relevant(rel, n_relevant)
    n = rel.shape[1]
    ranks = np.arange(1, n + 1, dtype=np.float64)
    if distances is None:
        hits = np.cumsum(rel, axis=1)
        prec_sum = np.where(rel, hits / ranks, 0.0).sum(axis=1)
    else:
        start, size = _tie_groups(distances, rel.shape)
        r_g, h_g = _group_sums(rel, start, size)
        j = np.arange(n)[None, :] - start  # 0-based position inside the group
        # E[contribution of position s+j+1] = P(relevant) * E[hits up to it | relevant] / rank
        frac = np.where(size > 1, (r_g - 1) / np.maximum(size - 1, 1), 0.0)
        prec_sum = ((r_g / size) * (h_g + 1 + j * frac) / ranks).sum(axis=1)
    return np.where(total > 0, prec_sum / np.maximum(total, 1.0), 0.0)


def mean_average_precision(
    ranked_labels: Any, query_labels: Any, *, n_relevant: Any = None, distances: Any = None
) -> float:
    """MAP: mean of :func:`average_precision` over the queries (same arguments)."""
    return float(
        average_precision(
            ranked_labels, query_labels, n_relevant=n_relevant, distances=distances
        ).mean()
    )


def precision_at_k(
    ranked_labels: Any, query_labels: Any, k: int, *, distances: Any = None
) -> np.ndarray:
    """Precision of the first ``k`` results of each ranking, float64 ``(nq,)``.

    With ``distances``, the expected precision over orderings of tied results (a tie group
    that straddles rank ``k`` contributes its share of relevant items pro rata).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    rel = relevance(ranked_labels, query_labels)
    if k > rel.shape[1]:
        raise ValueError(
            f"k={k} exceeds the ranking length {rel.shape[1]}; compute rankings with at "
            f"least k results"
        )
    if distances is None:
        return rel[:, :k].mean(axis=1)
    start, size = _tie_groups(distances, rel.shape)
    r_g, h_g = _group_sums(rel, start, size)
    c = k - 1
    s, z = start[:, c], size[:, c]
    hits = h_g[:, c] + r_g[:, c] * (k - s) / z
    return hits / k


def precision_at_r(
    ranked_labels: Any, query_labels: Any, n_relevant: Any = None, *, distances: Any = None
) -> np.ndarray:
    """R-precision: ``P@R`` with ``R`` the number of relevant items of each query.

    ``n_relevant`` defaults to the relevant items in the ranking (the category size when
    the ranking is the whole database, including the query itself when it is in it).
    Queries with ``R = 0`` get 0.
    """
    rel = relevance(ranked_labels, query_labels)
    total = _n_relevant(rel, n_relevant).astype(np.int64)
    out = np.zeros(rel.shape[0], dtype=np.float64)
    for r in np.unique(total):
        if r <= 0:
            continue
        if r > rel.shape[1]:
            raise ValueError(f"n_relevant {r} exceeds the ranking length {rel.shape[1]}")
        sel = total == r
        d = None if distances is None else np.asarray(distances).reshape(rel.shape)[sel]
        out[sel] = precision_at_k(
            rel[sel].astype(np.int8), np.ones(int(sel.sum()), np.int8), int(r), distances=d
        )
    return out


def precision_recall_curve(
    ranked_labels: Any,
    query_labels: Any,
    *,
    n_relevant: Any = None,
    recall_levels: int | Sequence[float] = 11,
) -> tuple[np.ndarray, np.ndarray]:
    """Interpolated precision at fixed recall levels, averaged over the queries.

    Parameters
    ----------
    ranked_labels, query_labels, n_relevant
        As in :func:`average_precision`.
    recall_levels : int or sequence of float, default 11
        An int ``m`` means ``m`` equally spaced levels from 0 to 1 (11: TREC's
        0, 0.1, ..., 1); or the levels themselves.

    Returns
    -------
    recall, precision : numpy.ndarray
        float64 ``(m,)``: ``precision[j]`` is the mean over queries (with ``R > 0``) of
        ``max {P@i : recall@i >= recall[j]}`` (0 where the ranking never reaches that
        recall).
    """
    if isinstance(recall_levels, (int, np.integer)) and not isinstance(recall_levels, bool):
        if recall_levels < 2:
            raise ValueError(f"recall_levels must be >= 2 points, got {recall_levels}")
        levels = np.linspace(0.0, 1.0, int(recall_levels))
    else:
        levels = np.asarray(recall_levels, dtype=np.float64).reshape(-1)
        if levels.size == 0 or np.any((levels < 0) | (levels > 1)):
            raise ValueError("recall_levels must lie in [0, 1]")
    rel = relevance(ranked_labels, query_labels)
    total = _n_relevant(rel, n_relevant)
    keep = total > 0
    if not np.any(keep):
        return levels, np.zeros_like(levels)
    rel, total = rel[keep], total[keep]
    hits = np.cumsum(rel, axis=1)
    prec = hits / np.arange(1, rel.shape[1] + 1)
    rec = hits / total[:, None]
    # interpolated precision: running max from the right
    interp = np.maximum.accumulate(prec[:, ::-1], axis=1)[:, ::-1]
    out = np.zeros((rel.shape[0], levels.size))
    for j, lv in enumerate(levels):
        # first rank whose recall reaches lv (recall is non-decreasing)
        first = (rec < lv - 1e-12).sum(axis=1)
        ok = first < rel.shape[1]
        out[ok, j] = interp[ok, first[ok]]
    return levels, out.mean(axis=0)


def per_category_ap(
    ap: Any, query_labels: Any, names: Sequence[str] | dict[Any, str] | None = None
) -> dict[Any, float]:
    """Mean AP of the queries of each category: ``{category: mean AP}`` (sorted by category).

    ``names`` maps category values to display names (a dict, or a sequence indexed by the
    category value) used as the keys of the result.
    """
    a = np.asarray(ap, dtype=np.float64).reshape(-1)
    q = np.asarray(query_labels).reshape(-1)
    if a.shape != q.shape:
        raise ValueError(
            f"ap and query_labels must have the same length, got {a.shape[0]} and {q.shape[0]}"
        )
    out: dict[Any, float] = {}
    for c in np.unique(q):
        key: Any = c.item()
        if names is not None:
            key = names[key] if isinstance(names, dict) else names[int(key)]
        out[key] = float(a[q == c].mean())
    return out


# --------------------------------------------------------------------------------------
# Segmentation quality against ground-truth label maps (classes mapped by name)
# --------------------------------------------------------------------------------------

#: MSRC v1 ground-truth class -> the model class names (ADE20K's short names of
#: ``ade20k_labels.txt``, and the classes a Pascal VOC overlay adds) that mean it. Fixed
#: from the class definitions alone, before any score was seen. A model class not listed
#: maps to no MSRC class and counts as wrong wherever the ground truth is not void; so
#: ADE20K's single "animal" class scores 0 on cow, horse and sheep.
MSRC_V1_SYNONYMS: dict[str, tuple[str, ...]] = {
    "building": ("building", "house", "skyscraper", "tower", "wall", "hovel"),
    "grass": ("grass", "field"),
    "tree": ("tree", "palm", "plant"),
    "cow": ("cow",),
    "horse": ("horse",),
    "sheep": ("sheep",),
    "sky": ("sky",),
    "mountain": ("mountain", "hill"),
    "aeroplane": ("airplane", "aeroplane"),
    "water": ("water", "sea", "river", "lake"),
    "face": ("person",),
    "car": ("car", "van"),
    "bicycle": ("bicycle",),
}


def map_classes_by_name(source_names: Sequence[str], target_names: Sequence[str],
                        synonyms: dict[str, Sequence[str]] | None = None) -> np.ndarray:
    """Lookup table from a model's classes to ground-truth classes, by name.

    Parameters
    ----------
    source_names : sequence of str
        The model's class names (index = label value).
    target_names : sequence of str
        The ground truth's class names (index = value in its maps).
    synonyms : dict, optional
        ``{target name: source names}``; a source class whose name is listed maps to that
        target. Without it (or for targets it omits), equal names map.

    Returns
    -------
    numpy.ndarray
        int64 of ``len(source_names)``: the target class of each source class, -1 for none.

    Raises
    ------
    ValueError
        A synonym table naming a target class that does not exist, or a source name listed
        under two targets.
    """
    lut = np.full(len(source_names), -1, dtype=np.int64)
    tindex = {n: i for i, n in enumerate(target_names)}
    table: dict[str, int] = {}
    for tname, i in tindex.items():
        names = (synonyms or {}).get(tname, (tname,))
        for s in names:
            if s in table and table[s] != i:
                raise ValueError(f"synonyms: {s!r} is listed under {target_names[table[s]]!r} "
                                 f"and {tname!r}")
            table[s] = i
    unknown = set(synonyms or {}) - set(tindex)
    if unknown:
        raise ValueError(f"synonyms name classes the ground truth lacks: {sorted(unknown)} "
                         f"(it has {list(target_names)})")
    for j, n in enumerate(source_names):
        if n in table:
            lut[j] = table[n]
    return lut


def segmentation_scores(predictions: Sequence[Any], ground_truth: Sequence[Any],
                        class_map: Any, num_classes: int, *,
                        ignore_index: int | None = 0) -> dict[str, Any]:
    """Pixel accuracy and IoU of predicted label maps against ground truth.

    Parameters
    ----------
    predictions, ground_truth : sequences of 2-D integer arrays
        One predicted and one ground-truth map per image, of equal shapes.
    class_map : array-like of int
        Ground-truth class of each predicted label (:func:`map_classes_by_name`); -1 (or a
        label past its end) = no class, always wrong.
    num_classes : int
        Ground-truth classes (values ``0 .. num_classes - 1``).
    ignore_index : int or None, default 0
        Ground-truth value that is void: its pixels are not scored.

    Returns
    -------
    dict
        ``pixel_accuracy`` (correct / scored pixels), ``miou`` (mean IoU over the classes
        present in the ground truth or the mapped predictions, void excluded), ``iou``
        ``{class: IoU}`` and ``pixels`` (scored pixels). ``IoU = TP / (TP + FP + FN)`` over
        the scored pixels.
    """
    if len(predictions) != len(ground_truth):
        raise ValueError(f"predictions and ground_truth must have the same length, got "
                         f"{len(predictions)} and {len(ground_truth)}")
    lut = np.asarray(class_map, dtype=np.int64)
    n = int(num_classes)
    conf = np.zeros((n, n + 1), dtype=np.int64)  # rows: truth, cols: mapped prediction (+none)
    for i, (p, g) in enumerate(zip(predictions, ground_truth)):
        p, g = np.asarray(p), np.asarray(g)
        if p.shape != g.shape:
            raise ValueError(f"image {i}: prediction shape {p.shape} != ground truth {g.shape}")
        p = p.astype(np.int64).ravel()
        g = g.astype(np.int64).ravel()
        keep = (g >= 0) & (g < n)
        if ignore_index is not None:
            keep &= g != ignore_index
        p, g = p[keep], g[keep]
        inside = (p >= 0) & (p < lut.size)
        mp = np.full(p.shape, -1, dtype=np.int64)
        mp[inside] = lut[p[inside]]
        mp[(mp < 0) | (mp >= n)] = n
        conf += np.bincount(g * (n + 1) + mp, minlength=n * (n + 1)).reshape(n, n + 1)
    tp = np.diag(conf[:, :n])
    total = int(conf.sum())
    iou = {}
    for c in range(n):
        if c == ignore_index:
            continue
        union = conf[c].sum() + conf[:, c].sum() - tp[c]
        if union > 0:
            iou[c] = float(tp[c] / union)
    return {"pixel_accuracy": float(tp.sum() / total) if total else 0.0,
            "miou": float(np.mean(list(iou.values()))) if iou else 0.0,
            "iou": iou, "pixels": total}
