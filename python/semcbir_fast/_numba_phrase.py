"""Numba fallback of the SBoVP kernels of the compiled core (cpp/src/phrase.cpp).

Same entry points and results as ``_core.build_phrase_matrices``, ``_core.phrase_l2_topk``
and ``_core.PhraseIndex``:

- phrase building: per semantic region (keypoints of one class >= 0, regions of one keypoint
  make no phrase), every keypoint with its ``min(n - 1, m - 1)`` exact nearest region members
  on xy (squared distance in float64, ties by the smaller keypoint index) forms a phrase; every
  pair of its words (duplicates included) counts once in column ``min * L + max``;
- search: ``|q|^2 + |d|^2 - 2 q.d`` in float64, the products added in ascending column order
  starting from 0 exactly as the C++ does (every product of two float32 values is exact in
  float64, so the sums are bit-identical), clamped at 0; rows sorted by (squared distance, id),
  the square root rounded to float32; ``k > N`` pads with id -1 and distance +inf.

``threads`` is accepted for signature compatibility; the kernels run on one thread (the
results never depend on it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

__all__ = ["PhraseIndex", "build_phrase_matrices", "phrase_l2_topk"]

_MAX_PHRASE_LENGTH = 16
_INT32_MAX = np.iinfo(np.int32).max


# ---------------------------------------------------------------------------------------------
# Phrase building
# ---------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _closer(da: float, ia: int, db: float, ib: int) -> bool:
    return da < db or (da == db and ia < ib)


@njit(cache=True, nogil=True)
def _region_knn(xs, ys, by_x, m, pos, kk, best_d, best_i):
    """The kk nearest members to member ``pos`` (by_x order), by (d2, keypoint index)."""
    x0 = xs[pos]
    y0 = ys[pos]
    have = 0
    lo = pos - 1
    hi = pos + 1
    lo_open = lo >= 0
    hi_open = hi < m
    while lo_open or hi_open:
        for side in range(2):
            if side == 0:
                if not lo_open:
                    continue
                q = lo
                dxs = x0 - xs[q]
            else:
                if not hi_open:
                    continue
                q = hi
                dxs = xs[q] - x0
            if have == kk and dxs * dxs > best_d[kk - 1]:
                if side == 0:
                    lo_open = False
                else:
                    hi_open = False
                continue
            # offer(q)
            dx = xs[q] - x0
            dy = ys[q] - y0
            d2 = dx * dx + dy * dy
            idx = by_x[q]
            if not (have == kk and not _closer(d2, idx, best_d[kk - 1], best_i[kk - 1])):
                if have < kk:
                    i = have
                    have += 1
                else:
                    i = kk - 1
                while i > 0 and _closer(d2, idx, best_d[i - 1], best_i[i - 1]):
                    best_d[i] = best_d[i - 1]
                    best_i[i] = best_i[i - 1]
                    i -= 1
                best_d[i] = d2
                best_i[i] = idx
            if side == 0:
                lo -= 1
                lo_open = lo >= 0
            else:
                hi += 1
                hi_open = hi < m


@njit(cache=True, nogil=True)
def _image_pairs(xy, words, classes, vocab, phrase_len):
    """Sorted linear indices i * L + j of every pair of every phrase of one image."""
    n = classes.shape[0]
    cand = np.empty(n, np.int64)
    nc = 0
    for p in range(n):
        if classes[p] >= 0:
            cand[nc] = p
            nc += 1
    cand = cand[:nc]
    order = cand[np.argsort(classes[cand], kind="mergesort")]  # by (class, index)
    # Count the pairs first.
    total = 0
    start = 0
    while start < nc:
        cls = classes[order[start]]
        end = start + 1
        while end < nc and classes[order[end]] == cls:
            end += 1
        m = end - start
        if m >= 2:
            kk = min(phrase_len - 1, m - 1)
            total += m * (kk * (kk + 1) // 2)
        start = end
    pairs = np.empty(total, np.int64)
    best_d = np.empty(_MAX_PHRASE_LENGTH, np.float64)
    best_i = np.empty(_MAX_PHRASE_LENGTH, np.int64)
    wds = np.empty(_MAX_PHRASE_LENGTH, np.int64)
    np_ = 0
    start = 0
    while start < nc:
        cls = classes[order[start]]
        end = start + 1
        while end < nc and classes[order[end]] == cls:
            end += 1
        m = end - start
        if m >= 2:
            members = order[start:end]  # ascending keypoint index
            xm = np.empty(m, np.float32)
            for q in range(m):
                xm[q] = xy[members[q], 0]
            by_x = members[np.argsort(xm, kind="mergesort")]  # by (x, index)
            xs = np.empty(m, np.float64)
            ys = np.empty(m, np.float64)
            for q in range(m):
                xs[q] = np.float64(xy[by_x[q], 0])
                ys[q] = np.float64(xy[by_x[q], 1])
            kk = min(phrase_len - 1, m - 1)
            for q in range(m):
                _region_knn(xs, ys, by_x, m, q, kk, best_d, best_i)
                wds[0] = words[by_x[q]]
                for t in range(kk):
                    wds[t + 1] = words[best_i[t]]
                for a in range(kk + 1):
                    for b in range(a + 1, kk + 1):
                        wa = wds[a]
                        wb = wds[b]
                        if wa <= wb:
                            pairs[np_] = wa * vocab + wb
                        else:
                            pairs[np_] = wb * vocab + wa
                        np_ += 1
        start = end
    pairs.sort()
    return pairs


@njit(cache=True, nogil=True)
def _build_all(xy_flat, words_flat, classes_flat, offsets, vocab, phrase_len):
    n_images = offsets.shape[0] - 1
    per = []
    indptr = np.zeros(n_images + 1, np.int64)
    for i in range(n_images):
        b = offsets[i]
        e = offsets[i + 1]
        pairs = _image_pairs(xy_flat[b:e], words_flat[b:e], classes_flat[b:e], vocab, phrase_len)
        per.append(pairs)
        runs = 0
        s = 0
        while s < pairs.shape[0]:
            t = s + 1
            while t < pairs.shape[0] and pairs[t] == pairs[s]:
                t += 1
            runs += 1
            s = t
        indptr[i + 1] = indptr[i] + runs
    nnz = indptr[n_images]
    indices = np.empty(nnz, np.int64)
    data = np.empty(nnz, np.float32)
    o = 0
    for i in range(n_images):
        pairs = per[i]
        s = 0
        while s < pairs.shape[0]:
            t = s + 1
            while t < pairs.shape[0] and pairs[t] == pairs[s]:
                t += 1
            indices[o] = pairs[s]
            data[o] = np.float32(t - s)
            o += 1
            s = t
    return indptr, indices, data


def build_phrase_matrices(xy: Any, words: Any, classes: Any, vocab_size: int, phrase_len: int,
                          threads: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Same as ``_core.build_phrase_matrices``: (indptr, indices, data) of the count rows."""
    del threads  # one thread; results never depend on it
    if not (len(xy) == len(words) == len(classes)):
        raise ValueError(f"xy, words and classes must have one array per image, got "
                         f"{len(xy)}, {len(words)} and {len(classes)}")
    vocab_size = int(vocab_size)
    phrase_len = int(phrase_len)
    if vocab_size < 1 or vocab_size > _INT32_MAX:
        raise ValueError(f"vocab_size must be in [1, 2^31 - 1], got {vocab_size}")
    if phrase_len < 2 or phrase_len > _MAX_PHRASE_LENGTH:
        raise ValueError(f"n (phrase length) must be in [2, {_MAX_PHRASE_LENGTH}], "
                         f"got {phrase_len}")
    xs, ws, cs = [], [], []
    offsets = np.zeros(len(xy) + 1, np.int64)
    for i, (a, b, c) in enumerate(zip(xy, words, classes)):
        where = f"image {i}"
        a = np.ascontiguousarray(a, dtype=np.float32)
        if a.ndim != 2 or a.shape[1] != 2:
            raise ValueError(f"{where}: xy must be (n, 2) float32")
        b = np.ascontiguousarray(b, dtype=np.int32)
        c = np.ascontiguousarray(c, dtype=np.int32)
        n = a.shape[0]
        if b.ndim != 1 or b.shape[0] != n or c.ndim != 1 or c.shape[0] != n:
            raise ValueError(f"{where}: words and classes must be (n,) int32")
        bad = np.flatnonzero((b < 0) | (b >= vocab_size))
        if bad.size:
            p = int(bad[0])
            raise ValueError(f"{where}: word {int(b[p])} of keypoint {p} is outside "
                             f"[0, {vocab_size}); words must come from a vocabulary of that size")
        bad = np.flatnonzero(~np.isfinite(a).all(axis=1))
        if bad.size:
            raise ValueError(f"{where}: keypoint {int(bad[0])} has a non-finite coordinate")
        xs.append(a)
        ws.append(b)
        cs.append(c)
        offsets[i + 1] = offsets[i] + n
    xy_flat = np.concatenate(xs) if xs else np.zeros((0, 2), np.float32)
    w_flat = np.concatenate(ws) if ws else np.zeros(0, np.int32)
    c_flat = np.concatenate(cs) if cs else np.zeros(0, np.int32)
    return _build_all(np.ascontiguousarray(xy_flat, dtype=np.float32).reshape(-1, 2),
                      w_flat, c_flat, offsets, np.int64(vocab_size), np.int64(phrase_len))


# ---------------------------------------------------------------------------------------------
# Sparse L2 search
# ---------------------------------------------------------------------------------------------


def _validate_csr(indptr: Any, indices: Any, data: Any, cols: int,
                  name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The checks of the bindings' csr_view and of validate_csr (ValueError on bad input)."""
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    indices = np.ascontiguousarray(indices, dtype=np.int64)
    data = np.ascontiguousarray(data, dtype=np.float32)
    cols = int(cols)
    if indptr.ndim != 1 or indptr.shape[0] < 1:
        raise ValueError(f"{name}: indptr must be 1-D with rows + 1 >= 1 entries")
    if indices.ndim != 1 or data.ndim != 1 or indices.shape[0] != data.shape[0]:
        raise ValueError(f"{name}: indices and data must be 1-D of the same length")
    rows = indptr.shape[0] - 1
    if cols < 0:
        raise ValueError(f"{name}: negative shape")
    if indptr[0] != 0:
        raise ValueError(f"{name}: indptr[0] must be 0, got {int(indptr[0])}")
    steps = np.diff(indptr)
    if steps.size and steps.min() < 0:
        raise ValueError(f"{name}: indptr must be non-decreasing (row {int(np.argmax(steps < 0))})")
    if indptr[-1] > indices.shape[0]:
        raise ValueError(f"{name}: indptr[-1] = {int(indptr[-1])} exceeds the "
                         f"{indices.shape[0]} stored entries")
    nnz = int(indptr[-1])
    ind = indices[:nnz]
    dat = data[:nnz]
    if nnz:
        bad_col = (ind < 0) | (ind >= cols)
        row_of = np.repeat(np.arange(rows, dtype=np.int64), steps)
        same_row = row_of[1:] == row_of[:-1]
        bad_order = np.zeros(nnz, bool)
        bad_order[1:] = same_row & (ind[1:] <= ind[:-1])
        bad_val = ~np.isfinite(dat)
        bad = bad_col | bad_order | bad_val
        if bad.any():
            t = int(np.argmax(bad))
            r = int(row_of[t])
            # Report the first error of that row in the C++ order (column, order, value).
            for u in range(int(indptr[r]), int(indptr[r + 1])):
                c = int(ind[u])
                if c < 0 or c >= cols:
                    raise ValueError(f"{name}: column index {c} in row {r} is outside "
                                     f"[0, {cols})")
                if u > indptr[r] and c <= ind[u - 1]:
                    raise ValueError(f"{name}: column indices must be strictly increasing "
                                     f"within each row (row {r}); sort them and sum "
                                     "duplicates first")
                if not np.isfinite(dat[u]):
                    raise ValueError(f"{name}: non-finite value in row {r}")
    return indptr, ind, dat, cols


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
    out_d = np.full((nq, k), np.inf, np.float32)
    out_i = np.full((nq, k), -1, np.int64)
    acc = np.zeros(n_db, np.float64)
    d2 = np.empty(n_db, np.float64)
    n_cols = ucols.shape[0]
    keep = min(k, n_db)
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
        order = np.argsort(d2, kind="mergesort")  # by (d2, id)
        for t in range(keep):
            j = order[t]
            out_d[r, t] = np.float32(np.sqrt(d2[j]))
            out_i[r, t] = j
    return out_d, out_i


class PhraseIndex:
    """Mimics ``_core.PhraseIndex``: the database transposed into posting lists."""

    def __init__(self, indptr: Any, indices: Any, data: Any, cols: int, threads: int) -> None:
        del threads
        indptr, indices, data, cols = _validate_csr(indptr, indices, data, cols, "database")
        if indptr.shape[0] - 1 > _INT32_MAX:
            raise ValueError("database must have fewer than 2^31 rows")
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
        del threads
        k = int(k)
        if k <= 0:
            raise ValueError(f"k must be >= 1, got {k}")
        qi, qx, qd, _ = _validate_csr(q_indptr, q_indices, q_data, self._cols, "queries")
        return _search(qi, qx, qd, *self._inv, np.int64(k))


def phrase_l2_topk(q_indptr: Any, q_indices: Any, q_data: Any, d_indptr: Any, d_indices: Any,
                   d_data: Any, cols: int, k: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """Same as ``_core.phrase_l2_topk``: (distances float32, ids int64), both (nq, k)."""
    k = int(k)
    if k <= 0:
        raise ValueError(f"k must be >= 1, got {k}")
    qi, qx, qd, cols = _validate_csr(q_indptr, q_indices, q_data, cols, "queries")
    index = PhraseIndex(d_indptr, d_indices, d_data, cols, threads)
    return _search(qi, qx, qd, *index._inv, np.int64(k))
