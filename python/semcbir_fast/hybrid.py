"""Hybrid semantic signature with a semantic-histogram filter — paper 001 section 3, SPEC.md
section 4.

Per image:

- the **semantic signature**: an ``M x D`` matrix whose row ``c`` is the mean descriptor
  (k-means with k = 1) of the keypoints labelled ``c``, and zero where no keypoint has class
  ``c`` (binary descriptors are unpacked to bits first, so ``D = 8 * bytes``);
- the **semantic histogram**: the proportion of each class among the non-void pixels of the
  label map (all zeros for a map with no valid pixel).

Search (:func:`hybrid_topk`): candidates are ranked by the L2 distance between the matrices
(flattened), except that those the histogram filter calls dissimilar come after all the
others. With ``Sim = sum_c |P_query,c - P_candidate,c|`` (an L1 distance in ``[0, 2]``),
a candidate is **penalised when Sim > epsilon** (paper: epsilon = 0.9). Paper 001 writes the
test as "Sim <= epsilon" while defining Sim as this distance; we read it as "keep the
semantically similar ones", i.e. small distances, which is also what its figure 5 shows.
Ranking key: ``(penalised, L2 distance, id)`` ascending.

The L2 step uses the sparse C++ search of :mod:`semcbir_fast.sbovp`: only the rows of
classes present in an image are stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._convert import check_threads, to_numpy
from .sbovp import (
    _as_float,
    _csr_rows,
    _feature_list,
    _index,
    _label_list,
    keypoint_classes,
)

__all__ = [
    "HybridSignatures",
    "filtered_topk",
    "histogram_filter",
    "hybrid_signatures",
    "hybrid_topk",
    "resolve_epsilon",
    "semantic_histograms",
]

#: Paper 001's filter threshold.
DEFAULT_EPSILON = 0.9


def resolve_epsilon(epsilon: float | str | None, signature: str,
                    histogram_weight: float = 0.0) -> float | None:
    """The filter threshold to use: ``"auto"`` is paper 001's 0.9 for the hybrid signature
    and for SBoVP without the appended histogram, and no filter for SBoVP signatures that
    carry the histogram themselves (``histogram_weight > 0``; measured: the filter then only
    lowers MAP, README). A number must be finite and >= 0; None = no filter."""
    if isinstance(epsilon, str):
        if epsilon != "auto":
            raise ValueError(f"epsilon must be a number, None or 'auto', got {epsilon!r}")
        return None if signature == "sbovp" and histogram_weight > 0 else DEFAULT_EPSILON
    if epsilon is None:
        return None
    eps = float(epsilon)
    if not np.isfinite(eps) or eps < 0:
        raise ValueError(f"epsilon must be a finite number >= 0 or None, got {epsilon}")
    return eps


@dataclass
class HybridSignatures:
    """Hybrid signatures of a batch of images.

    Attributes
    ----------
    matrices : numpy.ndarray
        float32 ``(N, M, D)``: per-class mean descriptors, zero rows for absent classes.
    histograms : numpy.ndarray
        float32 ``(N, M)``: class proportions of each label map (rows sum to 1, or 0 when the
        map has no valid pixel).
    method : str or None
        Descriptor method.
    """

    matrices: np.ndarray
    histograms: np.ndarray
    method: str | None = None

    def __post_init__(self) -> None:
        self.matrices = np.ascontiguousarray(self.matrices, dtype=np.float32)
        self.histograms = np.ascontiguousarray(self.histograms, dtype=np.float32)
        if self.matrices.ndim != 3 or self.histograms.ndim != 2 \
                or self.matrices.shape[:2] != self.histograms.shape:
            raise ValueError(
                f"matrices must be (N, M, D) and histograms (N, M), got shapes "
                f"{self.matrices.shape} and {self.histograms.shape}")

    def __len__(self) -> int:
        return int(self.matrices.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.matrices.shape[1])

    def __getitem__(self, rows: Any) -> HybridSignatures:
        idx = np.atleast_1d(np.arange(len(self))[rows])
        return HybridSignatures(self.matrices[idx], self.histograms[idx], self.method)

    def _csr(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The flattened matrices as CSR arrays (indptr, indices, data): non-zeros only."""
        n, m, d = self.matrices.shape
        flat = self.matrices.reshape(n, m * d)
        r, c = np.nonzero(flat)
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(r, minlength=n), out=indptr[1:])
        return indptr, c.astype(np.int64), np.ascontiguousarray(flat[r, c], dtype=np.float32)


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


def hybrid_signatures(
    features: Any,
    label_maps: Any,
    num_classes: int,
    *,
    ignore_index: int | None = None,
) -> HybridSignatures:
    """Hybrid signatures (per-class mean descriptors + semantic histograms) of a batch.

    Parameters
    ----------
    features : Features or sequence of Features
        One per image, all of one method.
    label_maps : sequence of (H, W) integer arrays, or (N, H, W)
        One per image (any size: keypoints are scaled to it, see
        :func:`semcbir_fast.sbovp.keypoint_classes`).
    num_classes : int
        ``M``, the number of classes of the segmentation model.
    ignore_index : int, optional
        Void label value (negative values and values ``>= M`` are void too).

    Returns
    -------
    HybridSignatures
        Images without (labelled) keypoints get an all-zero matrix.
    """
    num_classes = _index(num_classes, "num_classes", 1)
    feats = _feature_list(features)
    maps = _label_list(label_maps, len(feats))
    methods = {f.method for f in feats}
    if len(methods) > 1:
        raise ValueError(f"features must all come from one method, got {sorted(methods)}")
    dims = {(f.descriptors.shape[1], f.binary) for f in feats if len(f)}
    if len(dims) > 1:
        raise ValueError(f"features must all have one descriptor type and width, got {dims}")
    if dims:
        d, binary = dims.pop()
        width = 8 * d if binary else d
    else:  # no keypoint anywhere: widths of the (empty) descriptor arrays
        width = max((f.descriptors.shape[1] * (8 if f.binary else 1) for f in feats), default=0)
    mats = np.zeros((len(feats), num_classes, width), dtype=np.float32)
    for i, (f, m) in enumerate(zip(feats, maps)):
        if not len(f):
            continue
        cls = keypoint_classes(f.xy, f.image_size, m, ignore_index=ignore_index,
                               num_classes=num_classes)
        keep = cls >= 0
        if not keep.any():
            continue
        x = _as_float(f.descriptors[keep], f.binary).astype(np.float64)
        c = cls[keep].astype(np.int64)
        sums = np.zeros((num_classes, width), dtype=np.float64)
        np.add.at(sums, c, x)
        cnt = np.bincount(c, minlength=num_classes).astype(np.float64)
        nz = cnt > 0
        mats[i, nz] = (sums[nz] / cnt[nz, None]).astype(np.float32)
    hist = semantic_histograms(maps, num_classes, ignore_index=ignore_index)
    return HybridSignatures(mats, hist, methods.pop() if methods else None)


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


def hybrid_topk(
    queries: HybridSignatures,
    database: HybridSignatures,
    k: int,
    *,
    epsilon: float | None = DEFAULT_EPSILON,
    threads: int = 0,
    return_penalised: bool = False,
) -> tuple[np.ndarray, ...]:
    """The ``k`` best database images per query with the hybrid signature.

    Parameters
    ----------
    queries, database : HybridSignatures
        Same ``M`` and ``D``; ``database`` may be empty.
    k : int
        Results per query (>= 1); with ``k > N`` the missing slots hold id ``-1`` and
        distance ``+inf``.
    epsilon : float or None
        Histogram filter threshold (paper: 0.9): candidates with L1 histogram distance
        ``> epsilon`` are penalised, i.e. ranked after every other candidate. None disables
        the filter (pure L2 ranking).
    threads : int
        0 = all cores (L2 step); results never depend on it.
    return_penalised : bool
        Also return a bool ``(nq, k)`` array: which results were penalised.

    Returns
    -------
    distances, ids[, penalised]
        float32 L2 distances between the matrices and int64 ids, ``(nq, k)``, ordered by
        ``(penalised, distance, id)``. With the filter on, distances are ascending within
        the unpenalised results and within the penalised ones, not across the two.
    """
    from .sbovp import _core

    for name, s in (("queries", queries), ("database", database)):
        if not isinstance(s, HybridSignatures):
            raise ValueError(  # noqa: TRY004
                f"{name} must be HybridSignatures, got {type(s).__name__}")
    if queries.matrices.shape[1:] != database.matrices.shape[1:]:
        raise ValueError(
            f"queries and database must have the same (M, D), got {queries.matrices.shape[1:]} "
            f"and {database.matrices.shape[1:]} (different models or descriptors?)")
    if queries.method and database.method and queries.method != database.method:
        raise ValueError(f"queries use {queries.method} descriptors, database "
                         f"{database.method}; build both with one method")
    k = _index(k, "k", 1)
    t = check_threads(threads)
    if epsilon is not None:
        epsilon = float(epsilon)
        if not np.isfinite(epsilon) or epsilon < 0:
            raise ValueError(f"epsilon must be a finite number >= 0 or None, got {epsilon}")
    core = _core()
    qp, qi, qd = queries._csr()
    dp, di, dd = database._csr()
    cols = queries.matrices.shape[1] * queries.matrices.shape[2]

    def search(rows: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
        bp, bi, bd = _csr_rows(qp, qi, qd, rows)
        return core.phrase_l2_topk(bp, bi, bd, dp, di, dd, cols, kk, t)

    return filtered_topk(search, queries.histograms, database.histograms, len(database), k,
                         epsilon=epsilon, return_penalised=return_penalised)


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
    after the ones listed).
    """
    nq = int(query_histograms.shape[0])
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
