"""Ranking metrics over full rankings (SPEC.md section 5)."""

from __future__ import annotations

import numpy as np

__all__ = ["average_precision", "mean_average_precision", "precision_at_k"]


def _relevance(ranked_labels: np.ndarray, query_labels: np.ndarray) -> np.ndarray:
    ranked = np.asarray(ranked_labels)
    q = np.asarray(query_labels).reshape(-1, 1)
    if ranked.ndim != 2 or ranked.shape[0] != q.shape[0]:
        raise ValueError(
            f"ranked_labels must be (nq, n) with nq == len(query_labels), got {ranked.shape} "
            f"and {q.shape[0]} query labels"
        )
    return ranked == q


def average_precision(
    ranked_labels: np.ndarray, query_labels: np.ndarray, *, n_relevant: np.ndarray | None = None
) -> np.ndarray:
    """Non-interpolated average precision of each ranking.

    Parameters
    ----------
    ranked_labels
        ``(nq, n)`` category of the result at each rank (the full ranking).
    query_labels
        ``(nq,)`` category of each query; a result is relevant when the categories match.
    n_relevant
        Relevant items per query (defaults to those present in the ranking).

    Returns
    -------
    numpy.ndarray
        float64 ``(nq,)``; 0 for a query with no relevant item.
    """
    rel = _relevance(ranked_labels, query_labels)
    hits = np.cumsum(rel, axis=1)
    ranks = np.arange(1, rel.shape[1] + 1)
    prec_sum = np.where(rel, hits / ranks, 0.0).sum(axis=1)
    total = hits[:, -1] if n_relevant is None else np.asarray(n_relevant, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.where(total > 0, prec_sum / np.maximum(total, 1), 0.0)
    return ap


def mean_average_precision(ranked_labels: np.ndarray, query_labels: np.ndarray) -> float:
    """MAP: mean of :func:`average_precision` over the queries."""
    return float(average_precision(ranked_labels, query_labels).mean())


def precision_at_k(ranked_labels: np.ndarray, query_labels: np.ndarray, k: int) -> np.ndarray:
    """Precision of the first ``k`` results of each ranking, ``(nq,)``."""
    if k <= 0:
        raise ValueError(f"k must be >= 1, got {k}")
    rel = _relevance(ranked_labels, query_labels)
    if k > rel.shape[1]:
        raise ValueError(f"k={k} exceeds the ranking length {rel.shape[1]}")
    return rel[:, :k].mean(axis=1)
