"""Exact sparse L2 top-k (mirrors cpp/src/sparse_l2.cpp).

``e = |q|^2 + |d|^2 - 2 q.d`` in float64, the products added in ascending column order
starting from 0 exactly as the C++ does (every product of two float32 values is exact in
float64, so the sums are bit-identical), clamped at 0; where ``e`` may have cancelled
(``e < 2**26 * bound``, see ``pair_d2`` in the C++) the pair's squared distance is the direct
sum of ``(q_c - d_c)**2`` over the union of the columns instead. Rows sorted by (squared
distance, id), the square root rounded to float32; ``k > N`` pads with id -1 and distance
+inf.

``threads`` is accepted for the contract; the kernels run on one thread (the results never
depend on it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from .._convert import check_topk_size
from .csr import csr_view, validate_csr
from .parallel import check_threads_arg
from .topk import write_sorted_row

__all__ = ["SparseL2Index", "sparse_l2_topk"]

_INT32_MAX = np.iinfo(np.int32).max
_ULP_UNIT = 2.0**-52  # kUlpUnit
_DIRECT_TRUST = 2.0**26  # kDirectTrust


@njit(cache=True, nogil=True)
def _direct_d2(qc, qv, qb, qe, dc, dv, db, de):
    """sum of (q_c - d_c)^2 over the union of the columns, ascending (direct_d2)."""
    total = 0.0
    i = qb
    j = db
    while i < qe and j < de:
        if qc[i] < dc[j]:
            x = np.float64(qv[i])
            i += 1
        elif dc[j] < qc[i]:
            x = np.float64(dv[j])
            j += 1
        else:
            x = np.float64(qv[i]) - np.float64(dv[j])
            i += 1
            j += 1
        total += x * x
    while i < qe:
        x = np.float64(qv[i])
        total += x * x
        i += 1
    while j < de:
        x = np.float64(dv[j])
        total += x * x
        j += 1
    return total


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
def _search(q_indptr, q_indices, q_data, ucols, start, post_row, post_val, sq, d_indptr,
            d_indices, d_data, k):
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
        qb = q_indptr[r]
        qe = q_indptr[r + 1]
        for j in range(n_db):
            total = qn + sq[j]
            x = total - 2.0 * acc[j]
            e = x if x > 0.0 else 0.0  # noqa: FURB136  (std::max(0.0, x): never -0.0)
            acc[j] = 0.0
            entries = (qe - qb) + (d_indptr[j + 1] - d_indptr[j])
            bound = (4.0 * np.float64(entries) + 16.0) * _ULP_UNIT * total
            if e >= _DIRECT_TRUST * bound:
                d2[j] = e
            else:  # e may have cancelled: the direct sum (pair_d2)
                d2[j] = _direct_d2(q_indices, q_data, qb, qe, d_indices, d_data,
                                   d_indptr[j], d_indptr[j + 1])
        write_sorted_row(d2, ids, k, np.inf, row_d2, out_i[r])
        for t in range(k):
            out_d[r, t] = np.float32(np.sqrt(row_d2[t]))  # sqrt(inf) = inf: the padding
    return out_d, out_i


class SparseL2Index:
    """Same as ``_core.SparseL2Index``: the database transposed into posting lists."""

    def __init__(self, indptr: Any, indices: Any, data: Any, cols: int, threads: int) -> None:
        check_threads_arg(threads)
        indptr, indices, data, cols = csr_view(indptr, indices, data, cols, "database")
        if indptr.shape[0] - 1 > _INT32_MAX:
            raise ValueError("database must have fewer than 2^31 rows")
        validate_csr(indptr, indices, data, cols, "database")
        self._rows = int(indptr.shape[0] - 1)
        self._cols = cols
        self._nnz = int(indices.shape[0])
        # the rows are kept (copies: the caller may change its arrays) for pair_d2
        rows = (indptr.copy(), indices.copy(), data.copy())
        self._inv = (*_build_inverted(*rows), *rows)

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
        check_threads_arg(threads)
        qi, qx, qd, _ = csr_view(q_indptr, q_indices, q_data, self._cols, "queries")
        k = int(k)
        check_topk_size(qi.shape[0] - 1, k)
        validate_csr(qi, qx, qd, self._cols, "queries")
        return _search(qi, qx, qd, *self._inv, np.int64(k))


def sparse_l2_topk(q_indptr: Any, q_indices: Any, q_data: Any, d_indptr: Any, d_indices: Any,
                   d_data: Any, cols: int, k: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """Same as ``_core.sparse_l2_topk``: (float32 distances, int64 ids), both ``(nq, k)``."""
    qi, qx, qd, cols = csr_view(q_indptr, q_indices, q_data, cols, "queries")
    di, dx, dd, _ = csr_view(d_indptr, d_indices, d_data, cols, "database")
    k = int(k)
    check_topk_size(qi.shape[0] - 1, k)
    validate_csr(qi, qx, qd, cols, "queries")
    index = SparseL2Index(di, dx, dd, cols, threads)
    return _search(qi, qx, qd, *index._inv, np.int64(k))
