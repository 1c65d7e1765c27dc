"""Exact top-k between float vectors: L2, inner product and L1, with the library's contract.

:func:`float_topk` returns ``(distances, ids)`` exactly like
:func:`~semcbir_fast.hamming_topk`: float32 distances and int64 ids ``(nq, k)``, each row
ascending, **ties broken by the smaller id**, and with ``k > N`` the missing slots hold id
``-1`` and distance ``+inf``. The distances are

======  ===========================================  =========================================
metric  distance                                     computed as
======  ===========================================  =========================================
``l2``  Euclidean ``||q - x||`` (not squared, as     ``sqrt(max(|q|^2 + |x|^2 - 2 q.x, 0))`` in
        :func:`~semcbir_fast.sparse_l2_topk`)        float32 (BLAS ``sgemm``)
``ip``  ``-q.x`` (negated inner product, so that     float32 ``sgemm``; ``-distance`` is the
        "ascending" means "most similar first")      similarity (cosine on unit vectors)
``l1``  ``sum |q - x|`` (paper 003's distance        float32, no BLAS form: our numba kernel
        before its division by the dimension)        (NumPy blocks without numba)
======  ===========================================  =========================================

Backends (``backend=``): ``"faiss"`` (``faiss.knn``, the brute-force search behind
``IndexFlat``; all three metrics), ``"numpy"`` (BLAS through NumPy for L2 / IP, blocked
broadcasting for L1) and ``"numba"`` (L1 only; tiled, parallel). ``"auto"`` takes faiss for
L2 / IP when it is installed and numba for L1 (``bench/bench_float_search.py`` measures
them against each other). faiss keeps a heap per query and breaks ties between equal
distances arbitrarily; here it is asked for ``k + 1`` results and a row whose ``k + 1``-th
distance equals its ``k``-th (a tie across the cut) is recomputed exactly by the NumPy path,
then every row is sorted by ``(distance, id)``. The NumPy path selects with
``argpartition`` and resolves a tie across the cut by a stable sort of that row.

Exactness: the selection is exact on the distances as computed (float32). As in faiss, the
BLAS expansion of L2 rounds: ``d(x, x)`` is ``~1e-3`` rather than 0 for unit vectors of
random floats (exactly 0 for small-integer data), and the same pair can differ in its last
bit between calls whose batches take different kernels (faiss switches kernel at 20
queries). Non-finite inputs are refused.

Threads: ``threads=0`` means all cores. faiss's OpenMP thread count is process-wide; a call
with ``threads > 0`` sets it and restores it under a lock. NumPy's BLAS keeps its own
thread count (``OPENBLAS_NUM_THREADS``); numba follows ``threads``.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from .._convert import check_int, check_k, check_threads, to_numpy

__all__ = [
    "BACKENDS",
    "METRICS",
    "as_vectors",
    "available_backends",
    "float_distances",
    "float_topk",
    "resolve_backend",
    "topk_from_distances",
    "topk_prepared",
]

#: Distances understood by :func:`float_topk`.
METRICS = ("l2", "ip", "l1")
#: Implementations (``backend=``).
BACKENDS = ("auto", "faiss", "numpy", "numba")

#: Floats of one distance block (queries x database) held at once by the NumPy path.
_BLOCK_FLOATS = 1 << 24
_faiss_lock = threading.Lock()


def _check_metric(metric: Any) -> str:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    return str(metric)


def as_vectors(x: Any, name: str, dim: int | None = None, *,
               check_finite: bool = True) -> np.ndarray:
    """``x`` as C-contiguous float32 ``(n, d)`` (a 1-D vector is one row; NumPy, torch or
    nested lists), every value finite; ``dim`` checks ``d``."""
    a = to_numpy(x)
    if not isinstance(a, np.ndarray):
        try:
            a = np.asarray(a)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a 2-D float array (n, d), got "
                             f"{type(x).__name__}") from None
    if a.dtype == object or a.dtype.kind not in "fiub":
        raise ValueError(f"{name} must be a numeric array (n, d), got dtype {a.dtype}")
    if a.ndim == 1:
        a = a.reshape(1, -1)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, d) or 1-D (d,), got shape {a.shape}")
    if a.shape[1] == 0:
        raise ValueError(f"{name} must have at least one dimension, got shape {a.shape}")
    if dim is not None and a.shape[1] != dim:
        raise ValueError(f"{name} must have d={dim} columns like the database, got shape "
                         f"{a.shape}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if check_finite and a.size and not np.isfinite(a).all():
        bad = int(np.argwhere(~np.isfinite(a))[0, 0])
        raise ValueError(f"{name} must be finite: row {bad} holds NaN or inf")
    return a


def available_backends(metric: str = "l2") -> list[str]:
    """Backends that can run ``metric`` here (faiss / numba only when installed)."""
    _check_metric(metric)
    out = []
    if _faiss() is not None:
        out.append("faiss")
    out.append("numpy")
    if metric == "l1" and _numba_l1() is not None:
        out.append("numba")
    return out


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _numba_l1() -> Any:
    try:
        from ._l1_numba import l1_distances
    except ImportError:
        return None
    return l1_distances


def resolve_backend(backend: Any, metric: str) -> str:
    """The backend ``"auto"`` stands for (or ``backend`` itself, checked)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "auto":
        if metric == "l1":
            return "numba" if _numba_l1() is not None else "numpy"
        return "faiss" if _faiss() is not None else "numpy"
    if backend == "faiss" and _faiss() is None:
        raise ValueError("backend='faiss' needs faiss (pip install faiss-cpu)")
    if backend == "numba":
        if metric != "l1":
            raise ValueError(f"backend='numba' runs metric 'l1' only (BLAS is faster for "
                             f"{metric!r}: use 'numpy' or 'faiss')")
        if _numba_l1() is None:
            raise ValueError("backend='numba' needs numba (pip install 'semcbir_fast[numba]')")
    return str(backend)


# ----------------------------------------------------------------------------- distances
def _sq_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x, dtype=np.float32)


def _block_distances(q: np.ndarray, x: np.ndarray, metric: str, backend: str, threads: int,
                     xnorm: np.ndarray | None = None) -> np.ndarray:
    """float32 ``(len(q), len(x))`` distances (NumPy / numba)."""
    if metric == "l1":
        if backend == "numba":
            fn = _numba_l1()
            return fn(q, x, threads)
        out = np.empty((q.shape[0], x.shape[0]), dtype=np.float32)
        step = max(1, _BLOCK_FLOATS // max(1, q.shape[0] * q.shape[1]))
        for s in range(0, x.shape[0], step):
            xs = x[s:s + step]
            out[:, s:s + step] = np.abs(q[:, None, :] - xs[None, :, :]).sum(-1, dtype=np.float32)
        return out
    g = q @ x.T
    if metric == "ip":
        np.negative(g, out=g)
        return g
    xn = _sq_norms(x) if xnorm is None else xnorm
    g *= -2.0
    g += _sq_norms(q)[:, None]
    g += xn[None, :]
    np.maximum(g, 0.0, out=g)
    np.sqrt(g, out=g)
    return g


def float_distances(queries: Any, database: Any, *, metric: str = "l2",
                    backend: str = "auto", threads: int = 0) -> np.ndarray:
    """The full float32 distance matrix ``(nq, N)`` of :func:`float_topk`'s metric
    (``backend`` ``"numpy"`` or ``"numba"``; ``"auto"`` and ``"faiss"`` use NumPy / numba
    here, the values :func:`float_topk`'s exact path ranks)."""
    metric = _check_metric(metric)
    xb = as_vectors(database, "database")
    xq = as_vectors(queries, "queries", xb.shape[1])
    t = check_threads(threads)
    be = resolve_backend(backend, metric)
    if be in ("auto", "faiss"):
        be = "numba" if metric == "l1" and _numba_l1() is not None else "numpy"
    return _block_distances(xq, xb, metric, be, t)


# ----------------------------------------------------------------------------- selection
def topk_from_distances(distances: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` smallest entries of each row of a distance block, ordered by
    ``(distance, column)``: ``(distances, columns)`` with ``min(k, n)`` columns each (no
    padding). Exact with ties: when equal values straddle the cut, the smaller columns
    are kept."""
    d = np.asarray(distances)
    if d.ndim != 2:
        raise ValueError(f"distances must be 2-D (nq, n), got shape {d.shape}")
    k = check_int(k, "k", 1)
    b, n = d.shape
    if n == 0 or b == 0:
        return d[:, :0].copy(), np.zeros((b, 0), dtype=np.int64)
    if k >= n:
        idx = np.argsort(d, axis=1, kind="stable")
        return np.take_along_axis(d, idx, 1), idx.astype(np.int64, copy=False)
    part = np.argpartition(d, k - 1, axis=1)[:, :k]
    dk = np.take_along_axis(d, part, 1)
    kth = dk.max(axis=1, keepdims=True)
    # every value < kth is selected; the selection is right unless values == kth were
    # left out (then the smallest columns among them must win: a stable sort of the row)
    n_eq_sel = np.count_nonzero(dk == kth, axis=1)
    n_eq_all = np.count_nonzero(d == kth, axis=1)
    for r in np.nonzero(n_eq_all > n_eq_sel)[0].tolist():
        part[r] = np.argsort(d[r], kind="stable")[:k]
    part.sort(axis=1)
    dk = np.take_along_axis(d, part, 1)
    o = np.argsort(dk, axis=1, kind="stable")
    return np.take_along_axis(dk, o, 1), np.take_along_axis(part, o, 1).astype(np.int64)


def _pad(d: np.ndarray, i: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    nq, have = d.shape
    if have == k:
        return np.ascontiguousarray(d, dtype=np.float32), np.ascontiguousarray(i, np.int64)
    od = np.full((nq, k), np.inf, dtype=np.float32)
    oi = np.full((nq, k), -1, dtype=np.int64)
    od[:, :have] = d
    oi[:, :have] = i
    return od, oi


def _exact(xq: np.ndarray, xb: np.ndarray, k: int, metric: str, backend: str,
           threads: int, xnorm: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    nq, n = xq.shape[0], xb.shape[0]
    kk = min(k, n)
    od = np.empty((nq, kk), dtype=np.float32)
    oi = np.empty((nq, kk), dtype=np.int64)
    if metric == "l2" and xnorm is None:
        xnorm = _sq_norms(xb)
    step = max(1, min(nq, _BLOCK_FLOATS // max(n, 1)))
    for s in range(0, nq, step):
        blk = _block_distances(xq[s:s + step], xb, metric, backend, threads, xnorm)
        od[s:s + step], oi[s:s + step] = topk_from_distances(blk, kk)
    return od, oi


def _faiss_search(xq: np.ndarray, xb: np.ndarray, k: int, metric: str,
                  threads: int) -> tuple[np.ndarray, np.ndarray]:
    faiss = _faiss()
    fm = {"l2": faiss.METRIC_L2, "ip": faiss.METRIC_INNER_PRODUCT, "l1": faiss.METRIC_L1}[metric]
    n = xb.shape[0]
    k1 = min(n, k + 1)
    if threads:
        with _faiss_lock:
            before = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(threads)
            try:
                d, i = faiss.knn(xq, xb, k1, metric=fm)
            finally:
                faiss.omp_set_num_threads(before)
    else:
        d, i = faiss.knn(xq, xb, k1, metric=fm)
    if metric == "l2":
        np.maximum(d, 0.0, out=d)
        np.sqrt(d, out=d)
    elif metric == "ip":
        np.negative(d, out=d)
    kk = min(k, n)
    if k1 > kk:  # a tie across the cut: the (k+1)-th equals the k-th
        bad = np.nonzero(d[:, kk] == d[:, kk - 1])[0]
    else:  # every entry was returned: sorting is enough
        bad = np.zeros(0, dtype=np.int64)
    # sort the returned entries by (distance, id) (faiss orders equal distances arbitrarily)
    o = np.lexsort((i, d), axis=1)
    d = np.take_along_axis(d, o, 1)[:, :kk]
    i = np.take_along_axis(i, o, 1)[:, :kk]
    if bad.size:
        be = "numba" if metric == "l1" and _numba_l1() is not None else "numpy"
        d[bad], i[bad] = _exact(xq[bad], xb, kk, metric, be, threads)
    return d, i


def topk_prepared(xq: np.ndarray, xb: np.ndarray, k: int, metric: str, backend: str,
                  threads: int, xnorm: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`float_topk` on inputs already checked (C-contiguous finite float32, same
    ``d``; ``backend`` resolved, not ``"auto"``); ``xnorm``: the database's squared norms
    (L2, NumPy path) when the caller keeps them."""
    if xb.shape[0] == 0 or xq.shape[0] == 0:
        return _pad(np.zeros((xq.shape[0], 0), np.float32), np.zeros((xq.shape[0], 0), np.int64), k)
    if backend == "faiss":
        d, i = _faiss_search(xq, xb, k, metric, threads)
    else:
        d, i = _exact(xq, xb, k, metric, backend, threads, xnorm)
    return _pad(d, i, k)


def float_topk(queries: Any, database: Any, k: int, *, metric: str = "l2",
               threads: int = 0, backend: str = "auto",
               check_finite: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``k`` nearest database vectors of each query (see the module docstring).

    Parameters
    ----------
    queries : array-like
        ``(nq, d)`` or ``(d,)``, any real dtype (computed in float32), NumPy or torch.
    database : array-like
        ``(N, d)``.
    k : int
        Results per query, >= 1; ``k > N`` pads with id -1 and distance +inf.
    metric : {"l2", "ip", "l1"}
    threads : int
        0 = all cores.
    backend : {"auto", "faiss", "numpy", "numba"}
    check_finite : bool
        Check that the database holds no NaN / inf (an ``O(N d)`` pass, as long as the
        search itself for one query); the queries are always checked. :class:`DenseIndex`
        checks its vectors once, when they are added.

    Returns
    -------
    distances : numpy.ndarray
        float32 ``(nq, k)``, ascending per row.
    ids : numpy.ndarray
        int64 ``(nq, k)``: database rows; ties by the smaller id.

    Raises
    ------
    ValueError
        Bad shapes, non-finite values, ``k < 1``, unknown metric / backend, or a backend
        that is not installed.
    """
    metric = _check_metric(metric)
    xb = as_vectors(database, "database", check_finite=check_finite)
    xq = as_vectors(queries, "queries", xb.shape[1])
    k = check_k(k, xq.shape[0])  # the Hamming search's limits on k and nq * k
    t = check_threads(threads)
    be = resolve_backend(backend, metric)
    return topk_prepared(xq, xb, k, metric, be, t)
