"""Exact Hamming search over packed binary codes (SPEC.md section 2)."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _backend
from ._convert import as_codes, check_alloc, check_k, check_threads

__all__ = ["hamming_distances", "hamming_topk"]


def _same_width(a: np.ndarray, b: np.ndarray, na: str, nb: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{na} and {nb} must have the same code width: {na} has {a.shape[1]} bytes, "
            f"{nb} has {b.shape[1]} bytes (codes from different layouts?)"
        )


def hamming_topk(
    queries: Any, database: Any, k: int, *, threads: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` database codes nearest to each query in Hamming distance.

    Parameters
    ----------
    queries
        uint8 codes ``(nq, width)``, or one code ``(width,)`` (then ``nq = 1``).
    database
        uint8 codes ``(N, width)``; ``N = 0`` is allowed.
    k
        Results per query, ``1 <= k <= MAX_K`` (2**24) and ``nq * k <= MAX_RESULT_SLOTS``
        (2**28; search more queries in several calls). With ``k > N`` the missing slots hold
        id ``-1`` and distance ``INT32_MAX``; only ``min(k, N)`` of them are searched.
    threads
        0 = all cores (an upper bound: small searches use fewer; at most 1024). Results
        never depend on it.

    Returns
    -------
    distances, ids
        int32 and int64 arrays ``(nq, k)``, each row sorted by ascending distance, ties broken
        by the smaller id (the row index in ``database``).
    """
    q = as_codes(queries, "queries")
    db = as_codes(database, "database")
    k = check_k(k, q.shape[0])
    _same_width(q, db, "queries", "database")
    t = check_threads(threads)
    return _backend.core().hamming_topk(q, db, k, t)


def hamming_distances(a: Any, b: Any, *, threads: int = 0) -> np.ndarray:
    """All pairwise Hamming distances: int32 ``(na, nb)`` between uint8 codes ``a`` and ``b``.

    MemoryError (before anything is allocated) when the matrix would not fit in this
    machine's memory; ``threads`` as for :func:`hamming_topk`.
    """
    x = as_codes(a, "a")
    y = as_codes(b, "b")
    _same_width(x, y, "a", "b")
    t = check_threads(threads)
    check_alloc(4 * x.shape[0] * y.shape[0],
                f"hamming_distances: a {x.shape[0]} x {y.shape[0]} int32 matrix")
    return _backend.core().hamming_distances(x, y, t)
