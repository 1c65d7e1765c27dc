"""Hamming distances and exact top-k search (mirrors cpp/src/hamming.cpp, SPEC.md section 2)."""

from __future__ import annotations

import numba as nb
import numpy as np

from .._convert import check_topk_size
from .parallel import check_threads_arg, with_threads
from .popcount import popcount64
from .topk import histogram_topk_row

__all__ = ["hamming_distances", "hamming_topk"]

_INT32_MAX = np.iinfo(np.int32).max


@nb.njit(cache=True, nogil=True, parallel=True)
def _distances_words(a, b, out):
    na, words = a.shape
    nbr = b.shape[0]
    for i in nb.prange(na):
        for j in range(nbr):
            acc = 0
            for w in range(words):
                acc += popcount64(a[i, w] ^ b[j, w])
            out[i, j] = acc


@nb.njit(cache=True, nogil=True, parallel=True)
def _topk_words(q, db, k, out_d, out_i):
    nq = q.shape[0]
    n, words = db.shape
    maxd = words * 64
    missing = np.int32(_INT32_MAX)
    for i in nb.prange(nq):
        dist = np.empty(n, np.int32)
        hist = np.zeros(maxd + 1, np.int64)
        for j in range(n):
            acc = 0
            for w in range(words):
                acc += popcount64(q[i, w] ^ db[j, w])
            dist[j] = acc
            hist[acc] += 1
        histogram_topk_row(dist, hist, k, missing, out_d[i], out_i[i])


def _as_words(codes: np.ndarray) -> np.ndarray:
    """View (n, width) uint8 codes as uint64 words, zero-padding the width to a multiple of 8
    (zero bytes do not change a Hamming distance)."""
    n, width = codes.shape
    pad = (-width) % 8
    if pad:
        codes = np.concatenate([codes, np.zeros((n, pad), np.uint8)], axis=1)
    return np.ascontiguousarray(codes).view(np.uint64)


def _codes(x, name: str) -> np.ndarray:
    """The binding's conversion: a uint8 array, 2-D, C-contiguous."""
    a = np.asarray(x)
    if a.dtype != np.uint8:
        raise TypeError(f"{name} must be a uint8 array, got dtype {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D uint8 array (n, width)")
    return np.ascontiguousarray(a)


def _check_widths(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"codes must have the same width: {a.shape[1]} vs {b.shape[1]} bytes")
    if a.shape[1] <= 0:
        raise ValueError("code width must be >= 1 byte")


def hamming_distances(a, b, threads):
    """Same as ``_core.hamming_distances``: int32 ``(len(a), len(b))``."""
    a = _codes(a, "a")
    b = _codes(b, "b")
    check_threads_arg(threads)
    _check_widths(a, b)
    out = np.zeros((a.shape[0], b.shape[0]), np.int32)
    if a.shape[0] and b.shape[0]:
        with with_threads(threads):
            _distances_words(_as_words(a), _as_words(b), out)
    return out


def hamming_topk(queries, database, k, threads):
    """Same as ``_core.hamming_topk``: (int32 distances, int64 ids), both ``(nq, k)``."""
    q = _codes(queries, "queries")
    db = _codes(database, "database")
    k = int(k)
    check_threads_arg(threads)
    _check_widths(q, db)
    check_topk_size(q.shape[0], k)
    out_d = np.empty((q.shape[0], k), np.int32)
    out_i = np.empty((q.shape[0], k), np.int64)
    if q.shape[0]:
        with with_threads(threads):
            _topk_words(_as_words(q), _as_words(db), k, out_d, out_i)
    return out_d, out_i
