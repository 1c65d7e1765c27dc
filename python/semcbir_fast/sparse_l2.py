"""Exact top-k by L2 distance between sparse (CSR) float signatures, in the C++ core.

A general sparse-L2 search: SBoVP phrase matrices, hybrid signatures and any
``scipy.sparse`` matrix. :func:`sparse_l2_topk` is one-shot; :class:`SparseL2Index`
prepares a database once (squared norms, inverted lists) for many searches. Both give
identical results: float32 distances (square roots of float64 squared distances), ties
broken by the smaller id, ``k > N`` padded with id -1 and distance +inf (SPEC.md section 2).

The squared distance of a pair is ``e = |q|^2 + |d|^2 - 2 q.d`` in float64 (clamped at 0)
when that is accurate to ``2**-26``: ``e >= 2**26 * bound``, ``bound = (4 (n_q + n_d) + 16)
* 2**-52 * (|q|^2 + |d|^2)`` (``n_q``, ``n_d``: the rows' stored entries), an upper bound of
its rounding error. Otherwise (near-duplicates, huge values where ``e`` cancels: ``q = (1e8,
1)``, ``d = (1e8, 0)``) it is the sum of ``(q_c - d_c)**2`` over the union of the columns in
ascending order, also in float64. Every path, SIMD level and backend computes it the same
way, bit for bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _backend
from ._convert import check_k, check_threads

__all__ = ["PhraseIndex", "SparseL2Index", "as_csr", "csr_rows", "phrase_l2_topk",
           "sparse_l2_topk"]


def csr_rows(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray,
             rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The CSR arrays of a subset of rows (in the order given)."""
    rows = np.asarray(rows, dtype=np.int64)
    starts, ends = indptr[rows], indptr[rows + 1]
    counts = ends - starts
    out = np.zeros(rows.size + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    take = np.repeat(starts - out[:-1], counts) + np.arange(out[-1], dtype=np.int64)
    return out, indices[take], data[take]


_Csr = tuple[np.ndarray, np.ndarray, np.ndarray, int, Any]


def as_csr(x: Any, name: str) -> _Csr:
    """``(indptr, indices, data, columns, signatures or None)`` of a CSR signature batch
    (any object with ``indptr``, ``indices``, ``data`` and ``shape``, such as
    :class:`~semcbir_fast.sbovp.PhraseSignatures`) or a ``scipy.sparse`` matrix."""
    if hasattr(x, "tocsr") and hasattr(x, "shape"):  # scipy.sparse matrix or array
        m = x.tocsr()
        if not m.has_canonical_format:
            m = m.copy()
            m.sum_duplicates()
        return (np.ascontiguousarray(m.indptr, dtype=np.int64),
                np.ascontiguousarray(m.indices, dtype=np.int64),
                np.ascontiguousarray(m.data, dtype=np.float32), int(m.shape[1]), None)
    if all(hasattr(x, a) for a in ("indptr", "indices", "data", "shape")):
        return x.indptr, x.indices, x.data, int(x.shape[1]), x
    raise ValueError(f"{name} must be PhraseSignatures or a scipy.sparse matrix, "
                     f"got {type(x).__name__}")


def _check_pair(qc: int, dc: int, qs: Any, ds: Any) -> None:
    if qc != dc:
        raise ValueError(f"queries and database must have the same number of columns, got "
                         f"{qc} and {dc} (signatures from vocabularies of different sizes?)")
    if qs is not None and ds is not None and hasattr(qs, "check_compatible"):
        qs.check_compatible(ds)


def sparse_l2_topk(
    queries: Any, database: Any, k: int, *, threads: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` database signatures nearest to each query in L2 (equation 3 of paper 000).

    A one-shot call transposes the (usually smaller) query batch and streams the database
    once per block of queries, or builds the database's inverted index when the queries need
    many blocks (``nq * min(k, N)`` large); both give identical results. To search one database
    many times, build a :class:`SparseL2Index` once.

    Parameters
    ----------
    queries, database : PhraseSignatures or scipy.sparse matrix
        Same number of columns (same vocabulary); ``database`` may have 0 rows.
    k : int
        Results per query, ``1 <= k <= MAX_K`` (2**24) and ``nq * k <= MAX_RESULT_SLOTS``
        (2**28). With ``k > N`` the missing slots hold id ``-1`` and distance ``+inf``
        (only ``min(k, N)`` are searched).
    threads : int
        0 = all cores (at most 1024); results never depend on it.

    Returns
    -------
    distances, ids
        float32 and int64 ``(nq, k)``: the Euclidean distance (square root of the float64
        squared distance of the module docstring), rows sorted ascending by the float64
        squared distance, ties broken by the smaller id. Signatures with 0 columns are all
        at distance 0; a distance beyond float32's range (> 3.4e38, values near that
        limit only) is +inf with its id (the ranking still follows the float64 value).
    """
    qi, qx, qd, qc, qs = as_csr(queries, "queries")
    di, dx, dd, dc, ds = as_csr(database, "database")
    k = check_k(k, len(qi) - 1)
    t = check_threads(threads)
    _check_pair(qc, dc, qs, ds)
    return _backend.core().sparse_l2_topk(qi, qx, qd, di, dx, dd, qc, k, t)


class SparseL2Index:
    """A database of sparse signatures prepared once for exact L2 search.

    Holds the squared norms and an inverted index (posting list per non-zero column) built
    in C++; :meth:`search` gives exactly what :func:`sparse_l2_topk` gives against the same
    database, without rebuilding. The index is immutable (concurrent searches are safe); it
    keeps its own copy of the rows (for the exact distance of near-ties), not the input
    arrays: about 20 bytes per non-zero in all.

    Parameters
    ----------
    database : PhraseSignatures or scipy.sparse matrix
        May have 0 rows.
    threads : int
        Threads used to build (0 = all cores).
    """

    def __init__(self, database: Any, *, threads: int = 0) -> None:
        di, dx, dd, dc, ds = as_csr(database, "database")
        t = check_threads(threads)
        self._meta = None if ds is None else ds[np.zeros(0, np.int64)]
        self._cols = dc
        self._index = _backend.core().SparseL2Index(di, dx, dd, dc, t)

    def __len__(self) -> int:
        return int(self._index.rows)

    @property
    def nnz(self) -> int:
        """Non-zeros of the database."""
        return int(self._index.nnz)

    def search(self, queries: Any, k: int, *, threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` of each query: same contract as :func:`sparse_l2_topk`."""
        qi, qx, qd, qc, qs = as_csr(queries, "queries")
        k = check_k(k, len(qi) - 1)
        t = check_threads(threads)
        _check_pair(qc, self._cols, qs, self._meta)
        return self._index.search(qi, qx, qd, k, t)


#: Former names (SBoVP was their first user).
phrase_l2_topk = sparse_l2_topk
PhraseIndex = SparseL2Index
