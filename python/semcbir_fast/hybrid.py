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

The L2 step uses the sparse C++ search of :mod:`semcbir_fast.sparse_l2`: only the rows of
classes present in an image are stored. The histogram and its filter live in
:mod:`semcbir_fast.semantic_histogram` (re-exported here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _backend
from ._convert import check_int as _index
from ._convert import check_threads
from ._inputs import feature_list as _feature_list
from ._inputs import label_list as _label_list
from .sbovp.keypoints import keypoint_classes
from .sbovp.vocabulary import descriptors_as_float as _as_float
from .semantic_histogram import (
    DEFAULT_EPSILON,
    check_epsilon,
    filtered_topk,
    histogram_filter,
    semantic_histograms,
)
from .sparse_l2 import csr_rows as _csr_rows

__all__ = [
    "DEFAULT_EPSILON",
    "HybridSignatures",
    "filtered_topk",
    "histogram_filter",
    "hybrid_signatures",
    "hybrid_topk",
    "semantic_histograms",
]


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
    epsilon = check_epsilon(epsilon)
    core = _backend.core()
    qp, qi, qd = queries._csr()
    dp, di, dd = database._csr()
    cols = queries.matrices.shape[1] * queries.matrices.shape[2]

    def search(rows: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
        bp, bi, bd = _csr_rows(qp, qi, qd, rows)
        return core.sparse_l2_topk(bp, bi, bd, dp, di, dd, cols, kk, t)

    return filtered_topk(search, queries.histograms, database.histograms, len(database), k,
                         epsilon=epsilon, return_penalised=return_penalised)

