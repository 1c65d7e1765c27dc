"""Paper 001's semantic histogram and the filter built on it (paper 001 section 3.2, SPEC.md
section 4), usable in front of any ranking.

The **semantic histogram** of a label map is the proportion of each class among its
non-void pixels. With ``Sim = sum_c |P_query,c - P_candidate,c|`` (an L1 distance in
``[0, 2]``), a candidate is **penalised when Sim > epsilon** (paper: 0.9) and ranked after
every unpenalised one. Paper 001 writes the test as "Sim <= epsilon" while defining Sim as
this distance; we read it as "keep the semantically similar ones", i.e. small distances,
which is also what its figure 5 shows (docs/decisions.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._convert import check_int as _index
from ._convert import to_numpy

__all__ = [
    "DEFAULT_EPSILON",
    "check_epsilon",
    "filtered_topk",
    "histogram_filter",
    "semantic_histograms",
]

#: Paper 001's filter threshold.
DEFAULT_EPSILON = 0.9


def check_epsilon(epsilon: Any) -> float | None:
    """A filter threshold: a finite number >= 0 (as float), or None (no filter)."""
    if epsilon is None:
        return None
    if isinstance(epsilon, (str, bytes, bool)):
        raise ValueError(  # noqa: TRY004 - bad input is a ValueError here, as everywhere
            f"epsilon must be a finite number >= 0 or None, got {epsilon!r}")
    eps = float(epsilon)
    if not np.isfinite(eps) or eps < 0:
        raise ValueError(f"epsilon must be a finite number >= 0 or None, got {epsilon}")
    return eps


def _void_mask(lab: np.ndarray, num_classes: int, ignore_index: int | None) -> np.ndarray:
    bad = (lab < 0) | (lab >= num_classes)
    if ignore_index is not None:
        bad |= lab == ignore_index
    return bad


def semantic_histograms(
    label_maps: Any, num_classes: int, *, ignore_index: int | None = None
) -> np.ndarray:
    """Class proportions of each label map (paper 001 section 3.2).

    Void pixels (negative, ``>= num_classes`` or ``ignore_index``) are not counted; a map
    with no valid pixel gives a zero row.

    Returns
    -------
    numpy.ndarray
        float32 ``(N, num_classes)``.
    """
    num_classes = _index(num_classes, "num_classes", 1)
    maps = label_maps
    if not isinstance(maps, (list, tuple)):
        arr = np.asarray(to_numpy(maps))
        maps = [arr] if arr.ndim == 2 else list(arr)
    out = np.zeros((len(maps), num_classes), dtype=np.float32)
    for i, m in enumerate(maps):
        lab = np.asarray(to_numpy(m))
        if lab.ndim != 2 or lab.dtype.kind not in "iu":
            raise ValueError(f"label_maps[{i}] must be a 2-D integer map, got shape "
                             f"{lab.shape} dtype {lab.dtype}")
        v = lab.reshape(-1).astype(np.int64)
        v = v[~_void_mask(v, num_classes, ignore_index)]
        if v.size:
            out[i] = np.bincount(v, minlength=num_classes) / float(v.size)
    return out



def _histogram_l1(q: np.ndarray, d: np.ndarray) -> np.ndarray:
    """float64 (nq, N) L1 distances between histograms, in memory-bounded blocks."""
    out = np.empty((q.shape[0], d.shape[0]), dtype=np.float64)
    q64, d64 = q.astype(np.float64), d.astype(np.float64)
    # keep the (block, N, M) temporary under ~32 MB
    step = max(1, (4 << 20) // max(1, d.shape[0] * d.shape[1]))
    for s in range(0, q.shape[0], step):
        out[s:s + step] = np.abs(q64[s:s + step, None, :] - d64[None, :, :]).sum(axis=2)
    return out


def histogram_filter(
    distances: Any,
    ids: Any,
    query_histograms: Any,
    database_histograms: Any,
    *,
    epsilon: float = DEFAULT_EPSILON,
    return_penalised: bool = False,
) -> tuple[np.ndarray, ...]:
    """Reorder rankings with the semantic-histogram filter (paper 001 section 3.2).

    Works with any signature (e.g. SBoVP rankings from
    :func:`semcbir_fast.sbovp.phrase_l2_topk`): results whose database histogram is at L1
    distance ``> epsilon`` from the query's move after the others, each part keeping its
    order. Apply it to full rankings (``k = N``) to get the paper's filter; on a top-k
    list it only reorders that list.

    Parameters
    ----------
    distances, ids : array-like
        ``(nq, k)`` rankings (ids ``-1`` = padding, kept last).
    query_histograms, database_histograms : array-like
        ``(nq, M)`` and ``(N, M)`` class proportions (:func:`semantic_histograms`).
    epsilon : float
        Threshold (paper: 0.9).

    Returns
    -------
    distances, ids[, penalised]
        Reordered copies (and the bool mask of penalised results).
    """
    d = np.asarray(distances)
    i = np.asarray(ids, dtype=np.int64)
    hq = np.asarray(query_histograms, dtype=np.float64)
    hd = np.asarray(database_histograms, dtype=np.float64)
    if d.shape != i.shape or d.ndim != 2:
        raise ValueError(f"distances and ids must be (nq, k) of one shape, got {d.shape} "
                         f"and {i.shape}")
    if hq.ndim != 2 or hd.ndim != 2 or hq.shape[0] != i.shape[0] or hq.shape[1] != hd.shape[1]:
        raise ValueError(f"query_histograms must be (nq={i.shape[0]}, M) and "
                         f"database_histograms (N, M), got {hq.shape} and {hd.shape}")
    if i.size and i.max() >= hd.shape[0]:
        raise ValueError(f"ids refer to row {i.max()} but database_histograms has "
                         f"{hd.shape[0]} rows")
    epsilon = float(epsilon)
    if not np.isfinite(epsilon) or epsilon < 0:
        raise ValueError(f"epsilon must be a finite number >= 0, got {epsilon}")
    valid = i >= 0
    safe = np.where(valid, i, 0)
    pen = np.zeros(i.shape, dtype=bool)
    step = max(1, (4 << 20) // max(1, i.shape[1] * hq.shape[1]))
    for s in range(0, i.shape[0], step):
        l1 = np.abs(hq[s:s + step, None, :] - hd[safe[s:s + step]]).sum(axis=2)
        pen[s:s + step] = (l1 > epsilon) & valid[s:s + step]
    key = pen.astype(np.int8) + 2 * (~valid)  # kept, penalised, padding
    order = np.argsort(key, axis=1, kind="stable")
    out = (np.take_along_axis(d, order, axis=1), np.take_along_axis(i, order, axis=1))
    return (*out, np.take_along_axis(pen, order, axis=1)) if return_penalised else out


def filtered_topk(
    search: Any,
    query_histograms: np.ndarray,
    database_histograms: np.ndarray,
    n: int,
    k: int,
    *,
    epsilon: float | None,
    return_penalised: bool = False,
) -> tuple[np.ndarray, ...]:
    """Exact top-``k`` under the histogram filter, from any ranked L2 search.

    ``search(rows, kk)`` must return float32 distances and int64 ids ``(len(rows), kk)`` of
    the query ``rows`` against the ``n`` database rows, ordered by (distance, id). With a
    filter, the ``k`` results are the first ``k`` of the ranking stably reordered so that
    penalised candidates (L1 histogram distance ``> epsilon``) come after the others — the
    same as filtering the full ranking — but the search only asks for as many candidates
    as it needs: it starts at ``max(2k, 64)`` and quadruples for the queries whose list
    holds fewer than ``k`` unpenalised candidates (exact: every candidate left out ranks
    after the ones listed). ``k`` must satisfy ``1 <= k <= 2**24`` and ``nq * k <= 2**28``
    (ValueError, before the ``(nq, k)`` outputs are allocated); ``k > n`` is padding.
    """
    from ._convert import check_k

    nq = int(query_histograms.shape[0])
    k = check_k(k, nq)
    dist = np.full((nq, k), np.inf, dtype=np.float32)
    ids = np.full((nq, k), -1, dtype=np.int64)
    pen = np.zeros((nq, k), dtype=bool)
    out = (dist, ids, pen) if return_penalised else (dist, ids)
    if n == 0 or nq == 0:
        return out
    kk = min(k, n)
    if epsilon is None:
        step = max(1, (1 << 22) // kk)
        for s in range(0, nq, step):
            rows = np.arange(s, min(nq, s + step))
            dist[rows, :kk], ids[rows, :kk] = search(rows, kk)
        return out
    todo = np.arange(nq)
    want = min(n, max(2 * k, 64))
    while todo.size:
        # blocks that keep the (block, n) histogram distances and (block, want) lists small
        step = max(1, min((4 << 20) // max(1, n * database_histograms.shape[1]),
                          (1 << 22) // want))
        again: list[np.ndarray] = []
        for s in range(0, todo.size, step):
            rows = todo[s:s + step]
            d, r = search(rows, want)
            l1 = _histogram_l1(query_histograms[rows], database_histograms)
            p = np.take_along_axis(l1, r, axis=1) > epsilon
            done = ((~p).sum(axis=1) >= k) | (want >= n)
            order = np.argsort(p[done], axis=1, kind="stable")[:, :kk]  # (distance, id) kept
            fin = rows[done]
            dist[fin, :kk] = np.take_along_axis(d[done], order, axis=1)
            ids[fin, :kk] = np.take_along_axis(r[done], order, axis=1)
            pen[fin, :kk] = np.take_along_axis(p[done], order, axis=1)
            again.append(rows[~done])
        todo = np.concatenate(again)
        want = min(n, 4 * want)
    return out
