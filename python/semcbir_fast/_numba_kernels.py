"""numba implementations of the core kernels: the fallback when the C++ extension is absent.

Same algorithms and results as the C++ core (bit-identical codes, identical rankings).
"""

from __future__ import annotations

import numba as nb
import numpy as np

_INT32_MAX = np.iinfo(np.int32).max


@nb.njit(cache=True, nogil=True)
def _count_finest(lab, m, g, has_ignore, ignore, counts, totals):
    h, w = lab.shape
    for by in range(g):
        y0 = by * h // g
        y1 = (by + 1) * h // g
        for y in range(y0, y1):
            for bx in range(g):
                x0 = bx * w // g
                x1 = (bx + 1) * w // g
                b = by * g + bx
                for x in range(x0, x1):
                    v = np.int64(lab[y, x])
                    if lab[y, x] < 0 or v >= m or (has_ignore and v == ignore):
                        continue
                    counts[b, v] += 1
                    totals[b] += 1


@nb.njit(cache=True, nogil=True)
def _emit(counts, totals, m, base, out):
    nblocks = counts.shape[0]
    prop = base + m * nblocks
    for b in range(nblocks):
        total = totals[b]
        if total == 0:
            continue
        for c in range(m):
            n = np.int64(counts[b, c])
            if n == 0:
                continue
            idx = b * m + c
            i = base + idx
            out[i >> 3] |= np.uint8(0x80 >> (i & 7))
            level = (4 * n + total - 1) // total
            for t in range(level):
                i = prop + idx * 4 + t
                out[i >> 3] |= np.uint8(0x80 >> (i & 7))


@nb.njit(cache=True, nogil=True)
def _coarsen(fine, fine_tot, g):
    m = fine.shape[1]
    coarse = np.zeros((g * g, m), np.int64)
    ctot = np.zeros(g * g, np.int64)
    fg = 2 * g
    for y in range(fg):
        for x in range(fg):
            fb = y * fg + x
            cb = (y // 2) * g + x // 2
            ctot[cb] += fine_tot[fb]
            for c in range(m):
                coarse[cb, c] += fine[fb, c]
    return coarse, ctot


@nb.njit(cache=True, nogil=True)
def encode_one(lab, m, levels, pyramid, has_ignore, ignore, level_offsets, out):
    """Encode one label map into ``out`` (zeroed by the caller)."""
    g = 1 << levels
    counts = np.zeros((g * g, m), np.int64)
    totals = np.zeros(g * g, np.int64)
    _count_finest(lab, m, g, has_ignore, ignore, counts, totals)
    if not pyramid:
        _emit(counts, totals, m, 0, out)
        return
    _emit(counts, totals, m, level_offsets[levels], out)
    for lv in range(levels - 1, -1, -1):
        counts, totals = _coarsen(counts, totals, 1 << lv)
        _emit(counts, totals, m, level_offsets[lv], out)


@nb.njit(cache=True, nogil=True, inline="always")
def _popcount64(x):
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((x * np.uint64(0x0101010101010101)) >> np.uint64(56))


@nb.njit(cache=True, nogil=True, parallel=True)
def _distances_words(a, b, out):
    na, words = a.shape
    nbr = b.shape[0]
    for i in nb.prange(na):
        for j in range(nbr):
            acc = 0
            for w in range(words):
                acc += _popcount64(a[i, w] ^ b[j, w])
            out[i, j] = acc


@nb.njit(cache=True, nogil=True, parallel=True)
def _topk_words(q, db, k, out_d, out_i):
    nq = q.shape[0]
    n, words = db.shape
    maxd = words * 64
    kk = min(k, n)
    for i in nb.prange(nq):
        dist = np.empty(n, np.int32)
        hist = np.zeros(maxd + 1, np.int64)
        for j in range(n):
            acc = 0
            for w in range(words):
                acc += _popcount64(q[i, w] ^ db[j, w])
            dist[j] = acc
            hist[acc] += 1
        # Smallest distance D with at least kk codes at distance <= D.
        cum = 0
        cut = 0
        while cut < maxd:
            cum += hist[cut]
            if cum >= kk:
                break
            cut += 1
        # Everything below D, then ids at distance D in ascending order: ties by smaller id.
        sel = np.empty(kk, np.int64)
        cnt = 0
        for j in range(n):
            if dist[j] < cut:
                sel[cnt] = j
                cnt += 1
        for j in range(n):
            if cnt >= kk:
                break
            if dist[j] == cut:
                sel[cnt] = j
                cnt += 1
        order = np.argsort(dist[sel], kind="mergesort")  # stable on ascending ids
        for r in range(k):
            if r < kk:
                out_d[i, r] = dist[sel[order[r]]]
                out_i[i, r] = sel[order[r]]
            else:
                out_d[i, r] = _INT32_MAX
                out_i[i, r] = -1


def as_words(codes: np.ndarray) -> np.ndarray:
    """View (n, width) uint8 codes as uint64 words, zero-padding the width to a multiple of 8
    (zero bytes do not change a Hamming distance)."""
    n, width = codes.shape
    pad = (-width) % 8
    if pad:
        codes = np.concatenate([codes, np.zeros((n, pad), np.uint8)], axis=1)
    return np.ascontiguousarray(codes).view(np.uint64)


def with_threads(threads: int):
    """Context manager limiting numba's parallel threads (0 = all)."""
    import contextlib

    @contextlib.contextmanager
    def _ctx():
        old = nb.get_num_threads()
        want = nb.config.NUMBA_NUM_THREADS if threads == 0 else min(threads, nb.config.NUMBA_NUM_THREADS)
        nb.set_num_threads(max(1, want))
        try:
            yield
        finally:
            nb.set_num_threads(old)

    return _ctx()


def encode(maps, num_classes, levels, ignore_index, pyramid, layout, threads):
    out = np.zeros((len(maps), layout.stride), np.uint8)
    offsets = np.zeros(levels + 1, np.int64)
    if pyramid:
        offsets[:] = layout.level_offsets
    has_ignore = ignore_index is not None
    ignore = np.int64(ignore_index if has_ignore else 0)
    for i, lab in enumerate(maps):
        if lab.dtype == np.uint64:  # numba would mix uint64/int64 through float64: clamp first
            lab = np.minimum(lab, np.uint64(num_classes)).astype(np.int64)
        encode_one(lab, num_classes, levels, pyramid, has_ignore, ignore, offsets, out[i])
    return out


def distances(a, b, threads):
    out = np.zeros((a.shape[0], b.shape[0]), np.int32)
    if a.shape[0] and b.shape[0]:
        with with_threads(threads):
            _distances_words(as_words(a), as_words(b), out)
    return out


def topk(q, db, k, threads):
    out_d = np.empty((q.shape[0], k), np.int32)
    out_i = np.empty((q.shape[0], k), np.int64)
    if q.shape[0]:
        with with_threads(threads):
            _topk_words(as_words(q), as_words(db), k, out_d, out_i)
    return out_d, out_i
