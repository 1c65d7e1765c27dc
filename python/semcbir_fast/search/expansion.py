"""Query expansion of global descriptors: average QE and alpha-QE.

Given a query ``q`` and its ``n`` best database vectors ``x_1 .. x_n`` from a first search,
the expanded query is

    q' = normalise( q + sum_i max(q . x_i, 0)^alpha  x_i )

- ``alpha = 0``: average query expansion (Chum et al., "Total recall", ICCV 2007: the mean
  of the query and its top results);
- ``alpha > 0``: alpha-weighted QE (Radenovic, Tolias and Chum, "Fine-tuning CNN image
  retrieval with no human annotation", TPAMI 2018): each neighbour counts by its cosine
  similarity to the query raised to ``alpha`` (3 in the paper), so that far neighbours
  fade out and the result depends little on ``n``.

Vectors are L2-normalised first (the expansion is defined on unit vectors); the search is
then run again with ``q'``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .float_topk import as_vectors

__all__ = ["alpha_qe", "average_qe"]


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def alpha_qe(queries: Any, database: Any, neighbours: Any, *, alpha: float = 3.0) -> np.ndarray:
    """Expanded queries ``(nq, d)`` float32, unit length.

    Parameters
    ----------
    queries : array-like
        ``(nq, d)`` query vectors.
    database : array-like
        ``(N, d)`` database vectors.
    neighbours : array-like of int
        ``(nq, n)`` database rows of each query's first results (ids ``-1``, the padding of
        a short result list, are skipped).
    alpha : float
        Exponent of the weights, >= 0 (0 = average QE).
    """
    if not (isinstance(alpha, (int, float)) and np.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
    xb = _unit(as_vectors(database, "database").astype(np.float64))
    xq = _unit(as_vectors(queries, "queries", xb.shape[1]).astype(np.float64))
    nb = np.asarray(neighbours)
    if nb.ndim != 2 or nb.shape[0] != xq.shape[0] or nb.dtype.kind not in "iu":
        raise ValueError(f"neighbours must be integer (nq={xq.shape[0]}, n), got "
                         f"{nb.dtype} {nb.shape}")
    if nb.size and (nb.max() >= xb.shape[0] or nb.min() < -1):
        raise ValueError(f"neighbours must be database rows in [0, {xb.shape[0]}) or -1")
    valid = nb >= 0
    rows = xb[np.where(valid, nb, 0)]  # (nq, n, d)
    sim = np.einsum("qd,qnd->qn", xq, rows)
    w = np.where(valid, np.maximum(sim, 0.0) ** alpha if alpha else 1.0, 0.0)
    out = xq + np.einsum("qn,qnd->qd", w, rows)
    return _unit(out).astype(np.float32)


def average_qe(queries: Any, database: Any, neighbours: Any) -> np.ndarray:
    """:func:`alpha_qe` with ``alpha = 0``."""
    return alpha_qe(queries, database, neighbours, alpha=0.0)
