"""Semantic Binary Signature encoder (mirrors cpp/src/sbs.cpp, SPEC.md section 1)."""

from __future__ import annotations

import numba as nb
import numpy as np

from ..layout import MAX_CODE_BYTES, MAX_LEVELS
from .parallel import check_threads_arg

__all__ = ["encode_sbs"]


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
def _encode_one(lab, m, levels, pyramid, has_ignore, ignore, level_offsets, out):
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


def _layout(num_classes: int, levels: int, pyramid: bool, stride: int) -> tuple[int, np.ndarray]:
    """(stride, bit offset of every level) with the checks and messages of make_sbs_layout."""
    if num_classes <= 0 or num_classes > 65536:
        raise ValueError(f"num_classes must be in [1, 65536], got {num_classes}")
    if levels < 0 or levels > MAX_LEVELS:
        raise ValueError(f"levels must be in [0, {MAX_LEVELS}], got {levels}")
    offsets = np.zeros(levels + 1, np.int64)
    nbits = 0
    for lv in range(0 if pyramid else levels, levels + 1):
        offsets[lv] = nbits
        nbits += 5 * num_classes * 4**lv
    nbytes = (nbits + 7) // 8
    if nbytes > MAX_CODE_BYTES:
        raise ValueError(
            f"levels={levels} with num_classes={num_classes}{' (pyramid)' if pyramid else ''} "
            f"makes codes of {nbytes} bytes, more than the maximum of {MAX_CODE_BYTES} bytes "
            "(4 MiB); use fewer levels"
        )
    minimal = (nbytes + 7) // 8 * 8
    if stride == 0:
        stride = minimal
    if stride < nbytes or stride % 8 != 0 or stride > minimal + MAX_CODE_BYTES:
        raise ValueError(f"stride must be a multiple of 8 in [nbytes, nbytes + 4 MiB], "
                         f"nbytes={nbytes}, got {stride}")
    return stride, offsets


def encode_sbs(maps, num_classes, levels, ignore_index, pyramid, stride, threads):
    """Same as ``_core.encode_sbs``: uint8 codes ``(len(maps), stride)``.

    ``threads`` is accepted for the contract; maps are encoded one after the other (the codes
    never depend on it).
    """
    check_threads_arg(threads)
    num_classes, levels, pyramid = int(num_classes), int(levels), bool(pyramid)
    stride, offsets = _layout(num_classes, levels, pyramid, int(stride))
    for lab in maps:
        if lab.ndim != 2:
            raise ValueError("labels: every map must be 2-D (H, W)")
        if not lab.flags.c_contiguous:
            raise ValueError("labels: every map must be C-contiguous")
        if lab.dtype.kind not in "iu":
            raise ValueError(f"labels must have an integer dtype, got {lab.dtype}")
    out = np.zeros((len(maps), stride), np.uint8)
    has_ignore = ignore_index is not None
    ignore = np.int64(ignore_index if has_ignore else 0)
    for i, lab in enumerate(maps):
        if lab.dtype == np.uint64:  # numba would mix uint64/int64 through float64: clamp first
            lab = np.minimum(lab, np.uint64(num_classes)).astype(np.int64)
        _encode_one(lab, num_classes, levels, pyramid, has_ignore, ignore, offsets, out[i])
    return out
