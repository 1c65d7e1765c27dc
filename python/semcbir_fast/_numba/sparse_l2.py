"""Exact sparse L2 top-k (mirrors cpp/src/sparse_l2.cpp).

``|q|^2 + |d|^2 - 2 q.d`` in float64, the products added in ascending column order starting
from 0 exactly as the C++ does (every product of two float32 values is exact in float64, so
the sums are bit-identical), clamped at 0; rows sorted by (squared distance, id), the square
root rounded to float32; ``k > N`` pads with id -1 and distance +inf.

``threads`` is accepted for the contract; the kernels run on one thread (the results never
depend on it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from .csr import csr_view, validate_csr
from .topk import write_sorted_row

__all__ = ["SparseL2Index", "sparse_l2_topk"]

_INT32_MAX = np.iinfo(np.int32).max


@njit(cache=True, nogil=True)
def _build_inverted(indptr, indices, data):
    """Posting lists of the database: (sorted used columns, starts, rows, values, |d|^2)."""
    rows = indptr.shape[0] - 1
    nnz = indices.shape[0]
    sq = np.zeros(rows, np.float64)
    row_of = np.empty(nnz, np.int64)
    for r in range(rows):
        norm = 0.0
        for e in range(indptr[r], indptr[r + 1]):
            v = np.float64(data[e])
            norm += v * v
            row_of[e] = r
        sq[r] = norm
    order = np.argsort(indices, kind="mergesort")  # by (column, row)
    n_cols = 0
    for t in range(nnz):
        if t == 0 or indices[order[t]] != indices[order[t - 1]]:
            n_cols += 1
    ucols = np.empty(n_cols, np.int64)
    start = np.empty(n_cols + 1, np.int64)
    post_row = np.empty(nnz, np.int64)
    post_val = np.empty(nnz, np.float64)
    s = -1
    for t in range(nnz):
        e = order[t]
        if t == 0 or indices[e] != indices[order[t - 1]]:
            s += 1
            ucols[s] = indices[e]
            start[s] = t
        post_row[t] = row_of[e]
        post_val[t] = np.float64(data[e])
    start[n_cols] = nnz
    return ucols, start, post_row, post_val, sq


@njit(cache=True, nogil=True)
def _search(q_indptr, q_indices, q_data, ucols, start, post_row, post_val, sq, k):
    nq = q_indptr.shape[0] - 1
    n_db = sq.shape[0]
    out_d = np.empty((nq, k), np.float32)
    out_i = np.empty((nq, k), np.int64)
    acc = np.zeros(n_db, np.float64)
    d2 = np.empty(n_db, np.float64)
    ids = np.arange(n_db)
    row_d2 = np.empty(k, np.float64)
    n_cols = ucols.shape[0]
    for r in range(nq):
        qn = 0.0
        for e in range(q_indptr[r], q_indptr[r + 1]):
            v = np.float64(q_data[e])
            qn += v * v
            c = q_indices[e]
            s = np.searchsorted(ucols, c)
            if s >= n_cols or ucols[s] != c or v == 0.0:
                continue
            for p in range(start[s], start[s + 1]):
                acc[post_row[p]] += v * post_val[p]
        for j in range(n_db):
            x = qn + sq[j] - 2.0 * acc[j]
            d2[j] = x if x > 0.0 else 0.0  # noqa: FURB136  (std::max(0.0, x): never -0.0)
            acc[j] = 0.0
        write_sorted_row(d2, ids, k, np.inf, row_d2, out_i[r])
        for t in range(k):
            out_d[r, t] = np.float32(np.sqrt(row_d2[t]))  # sqrt(inf) = inf: the padding
    return out_d, out_i


def _check_k(k: int) -> int:
    k = int(k)
    if k <= 0:
        raise ValueError(f"k must be >= 1, got {k}")
    return k


class SparseL2Index:
    """Same as ``_core.SparseL2Index``: the database transposed into posting lists."""

    def __init__(self, indptr: Any, indices: Any, data: Any, cols: int, threads: int) -> None:
        del threads
        indptr, indices, data, cols = csr_view(indptr, indices, data, cols, "database")
        if indptr.shape[0] - 1 > _INT32_MAX:
            raise ValueError("database must have fewer than 2^31 rows")
        validate_csr(indptr, indices, data, cols, "database")
        self._rows = int(indptr.shape[0] - 1)
        self._cols = cols
        self._nnz = int(indices.shape[0])
        self._inv = _build_inverted(indptr, indices, data)

    @property
    def rows(self) -> int:
        return self._rows

    @property
    def cols(self) -> int:
        return self._cols

    @property
    def nnz(self) -> int:
        return self._nnz

    def search(self, q_indptr: Any, q_indices: Any, q_data: Any, k: int,
               threads: int) -> tuple[np.ndarray, np.ndarray]:
        """Same as ``_core.SparseL2Index.search``: (float32 distances, int64 ids), ``(nq, k)``."""
        del threads
        qi, qx, qd, _ = csr_view(q_indptr, q_indices, q_data, self._cols, "queries")
        k = _check_k(k)
        validate_csr(qi, qx, qd, self._cols, "queries")
        return _search(qi, qx, qd, *self._inv, np.int64(k))


def sparse_l2_topk(q_indptr: Any, q_indices: Any, q_data: Any, d_indptr: Any, d_indices: Any,
                   d_data: Any, cols: int, k: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """Same as ``_core.sparse_l2_topk``: (float32 distances, int64 ids), both ``(nq, k)``."""
    qi, qx, qd, cols = csr_view(q_indptr, q_indices, q_data, cols, "queries")
    di, dx, dd, _ = csr_view(d_indptr, d_indices, d_data, cols, "database")
    k = _check_k(k)
    validate_csr(qi, qx, qd, cols, "queries")
    index = SparseL2Index(di, dx, dd, cols, threads)
    return _search(qi, qx, qd, *index._inv, np.int64(k))
