"""SBoVP phrase building (mirrors cpp/src/phrase.cpp, SPEC.md section 3).

Per semantic region (keypoints of one class >= 0; a region of one keypoint makes no phrase),
every keypoint with its ``min(n - 1, m - 1)`` exact nearest region members on xy (squared
distance in float64, ties by the smaller keypoint index) forms a phrase; every pair of its
words (duplicates included) counts once in column ``min * L + max``.

``threads`` is accepted for the contract; the kernel runs on one thread (the results never
depend on it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from .parallel import check_threads_arg

__all__ = ["build_phrase_matrices"]

_MAX_PHRASE_LENGTH = 16
_INT32_MAX = np.iinfo(np.int32).max


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
    check_threads_arg(threads)  # one thread; results never depend on it
    if not (len(xy) == len(words) == len(classes)):
        raise ValueError(f"xy, words and classes must have one array per image, got "
                         f"{len(xy)}, {len(words)} and {len(classes)}")
    xs, ws, cs = [], [], []
    offsets = np.zeros(len(xy) + 1, np.int64)
    for i, (a, b, c) in enumerate(zip(xy, words, classes)):  # the binding's shape checks
        where = f"image {i}"
        a = np.ascontiguousarray(a, dtype=np.float32)
        if a.ndim != 2 or a.shape[1] != 2:
            raise ValueError(f"{where}: xy must be (n, 2) float32")
        b = np.ascontiguousarray(b, dtype=np.int32)
        c = np.ascontiguousarray(c, dtype=np.int32)
        n = a.shape[0]
        if b.ndim != 1 or b.shape[0] != n or c.ndim != 1 or c.shape[0] != n:
            raise ValueError(f"{where}: words and classes must be 1-D with one entry per "
                             f"keypoint ({n})")
        xs.append(a)
        ws.append(b)
        cs.append(c)
        offsets[i + 1] = offsets[i] + n
    vocab_size = int(vocab_size)
    phrase_len = int(phrase_len)
    if vocab_size < 1 or vocab_size > _INT32_MAX:  # validate_keypoints
        raise ValueError(f"vocab_size must be in [1, 2^31 - 1], got {vocab_size}")
    if phrase_len < 2 or phrase_len > _MAX_PHRASE_LENGTH:
        raise ValueError(f"n (phrase length) must be in [2, {_MAX_PHRASE_LENGTH}], "
                         f"got {phrase_len}")
    for i, (a, b) in enumerate(zip(xs, ws)):
        where = f"image {i}"
        # The first bad keypoint; its word is reported before its coordinates, as in C++.
        bad = np.flatnonzero((b < 0) | (b >= vocab_size) | ~np.isfinite(a).all(axis=1))
        if bad.size:
            p = int(bad[0])
            if b[p] < 0 or b[p] >= vocab_size:
                raise ValueError(f"{where}: word {int(b[p])} of keypoint {p} is outside "
                                 f"[0, {vocab_size}); words must come from a vocabulary of "
                                 "that size")
            raise ValueError(f"{where}: keypoint {p} has a non-finite coordinate")
    xy_flat = np.concatenate(xs) if xs else np.zeros((0, 2), np.float32)
    w_flat = np.concatenate(ws) if ws else np.zeros(0, np.int32)
    c_flat = np.concatenate(cs) if cs else np.zeros(0, np.int32)
    return _build_all(np.ascontiguousarray(xy_flat, dtype=np.float32).reshape(-1, 2),
                      w_flat, c_flat, offsets, np.int64(vocab_size), np.int64(phrase_len))
