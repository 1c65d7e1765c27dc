"""Sparse SBS search, numba fallback (mirrors cpp/src/sparse_sbs.cpp; same names, arguments,
results and error messages as the compiled core's ``sparse_sbs_*`` / ``SparseSBSIndex``).

Conversion and decoding are vectorised NumPy (bit unpacking); the check and the search are
numba kernels. The search is a forward scan only: per query a weight table indexed by the
entry value itself (``(cell << 2) | (level - 1)``), one pass over every row's entries, then
the top-k of ``hamming_topk``'s numba kernel (a distance histogram, ties by the smaller row).
It has no inverted lists (``inverted_bytes`` is 0); results equal the C++ engine's bit for bit.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from .._convert import check_topk_size
from ..layout import sbs_layout
from .hamming import _codes
from .parallel import check_threads_arg, with_threads
from .topk import histogram_topk_row

__all__ = ["SparseSBSIndex", "sparse_sbs_check", "sparse_sbs_decode", "sparse_sbs_encode"]

_INT32_MAX = np.iinfo(np.int32).max
_CHUNK_BITS = 1 << 26  # unpacked bits per conversion chunk (64 MB)
_MAX_TABLE = 1 << 24  # int32 weights per search chunk (64 MB)


class _Shape:
    """Cells of a layout and where their bits lie (mirrors SparseSbsShape)."""

    def __init__(self, num_classes: int, levels: int, pyramid: bool) -> None:
        lay = sbs_layout(num_classes, levels, pyramid)
        self.layout = lay
        self.part_bit_offset = list(lay.level_offsets)
        self.part_cells = [num_classes * nb_ for nb_ in lay.level_blocks]
        self.part_first_cell = list(np.cumsum([0, *self.part_cells[:-1]]).tolist())
        self.cells = int(sum(self.part_cells))
        self.nbits, self.stride = lay.nbits, lay.stride
        self.wide = self.cells > (1 << 14)
        self.dtype = np.dtype(np.uint32 if self.wide else np.uint16)

    def unpack(self, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(presence (r, cells) uint8, nibbles (r, cells, 4) uint8) of unpacked code bits."""
        pres, nib = [], []
        for p0, c in zip(self.part_bit_offset, self.part_cells):
            pres.append(bits[:, p0:p0 + c])
            nib.append(bits[:, p0 + c:p0 + 5 * c].reshape(bits.shape[0], c, 4))
        return np.concatenate(pres, axis=1), np.concatenate(nib, axis=1)


def sparse_sbs_encode(codes, num_classes, levels, pyramid, threads):
    """Same as ``_core.sparse_sbs_encode``: (offsets int64, entries, popcounts int32)."""
    check_threads_arg(threads)
    s = _Shape(int(num_classes), int(levels), bool(pyramid))
    c = _codes(codes, "codes")
    if c.shape[1] != s.stride:
        raise ValueError(f"codes must have {s.stride} bytes per row (the layout's stride), got "
                         f"{c.shape[1]}")
    n = c.shape[0]
    step = max(1, _CHUNK_BITS // (8 * s.stride))
    counts = np.zeros(n, np.int64)
    ents: list[np.ndarray] = []
    pops = np.zeros(n, np.int32)
    for r0 in range(0, n, step):
        bits = np.unpackbits(c[r0:r0 + step], axis=1)
        pres, nib = s.unpack(bits)
        level = nib.sum(axis=2, dtype=np.int64)
        therm = nib == (np.arange(4) < level[:, :, None])
        ok = np.where(pres == 1, (level >= 1) & therm.all(axis=2), level == 0).all(axis=1)
        ok &= ~bits[:, s.nbits:].any(axis=1)
        if not ok.all():
            bad = r0 + int(np.flatnonzero(~ok)[0])
            raise ValueError(f"codes row {bad} is not a canonical SBS code (a presence bit "
                             "without a 1..4 thermometer code, or a proportion / padding bit "
                             "without its presence bit); only the dense engine searches such "
                             "codes")
        rows, cells = np.nonzero(pres)
        lv = level[rows, cells]
        ents.append(((cells.astype(np.int64) << 2) | (lv - 1)).astype(s.dtype))
        counts[r0:r0 + step] = pres.sum(axis=1)
        pops[r0:r0 + step] = (pres.sum(axis=1) + level.sum(axis=1)).astype(np.int32)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    entries = np.concatenate(ents) if ents else np.zeros(0, s.dtype)
    return offsets, entries, pops


@nb.njit(cache=True, nogil=True)
def _check(offsets, entries, popcounts, cells):
    """(0, -1) when well formed, else (kind, row): 1 offsets[0], 2 offsets[-1], 3 decreasing,
    4 cell order / range, 5 popcount."""
    n = popcounts.shape[0]
    nnz = entries.shape[0]
    if offsets[0] != 0:
        return 1, 0, 0
    if offsets[n] != nnz:
        return 2, 0, 0
    for r in range(n):
        if offsets[r + 1] < offsets[r] or offsets[r + 1] > nnz:
            return 3, r, 0
    for r in range(n):
        a = offsets[r]
        b = offsets[r + 1]
        prev = -1
        bits = 0
        for p in range(a, b):
            e = np.int64(entries[p])
            cell = e >> 2
            if cell <= prev or cell >= cells:
                return 4, r, cell
            prev = cell
            bits += 2 + (e & 3)
        if bits != popcounts[r]:
            return 5, r, bits
    return 0, -1, 0


def _view(offsets, entries, popcounts, s: _Shape):
    off = np.asarray(offsets)
    if off.dtype != np.int64 or off.ndim != 1 or off.shape[0] < 1:
        raise ValueError("sparse codes: offsets must be 1-D int64 with n + 1 >= 1 entries")
    n = off.shape[0] - 1
    pop = np.asarray(popcounts)
    if pop.dtype != np.int32 or pop.ndim != 1 or pop.shape[0] != n:
        raise ValueError(f"sparse codes: popcounts must be 1-D int32 with one entry per row "
                         f"({n})")
    ent = np.asarray(entries)
    if ent.ndim != 1 or ent.dtype != s.dtype:
        want = "uint32" if s.wide else "uint16"
        raise ValueError(f"sparse codes: entries must be a 1-D contiguous {want} array for a "
                         f"layout of {s.cells} cells, got dtype {ent.dtype}")
    return (np.ascontiguousarray(off), np.ascontiguousarray(ent), np.ascontiguousarray(pop))


def _raise_check(off, ent, pop, s: _Shape) -> None:
    kind, row, val = _check(off, ent, pop, s.cells)
    if kind == 0:
        return
    if kind == 1:
        raise ValueError(f"sparse codes: offsets[0] must be 0, got {int(off[0])}")
    if kind == 2:
        raise ValueError(f"sparse codes: offsets[-1] = {int(off[-1])} must equal the number of "
                         f"entries {ent.shape[0]}")
    if kind == 3:
        raise ValueError(f"sparse codes: offsets decrease or overrun at row {row}")
    if kind == 4:
        what = (f" outside the layout's {s.cells} cells" if val >= s.cells
                else " out of ascending order")
        raise ValueError(f"sparse codes: row {row} has cell {val}{what}")
    raise ValueError(f"sparse codes: row {row} popcount {int(pop[row])} does not match its "
                     f"entries ({val})")


def sparse_sbs_check(offsets, entries, popcounts, num_classes, levels, pyramid):
    """Same as ``_core.sparse_sbs_check``: ValueError naming the first problem."""
    s = _Shape(int(num_classes), int(levels), bool(pyramid))
    off, ent, pop = _view(offsets, entries, popcounts, s)
    _raise_check(off, ent, pop, s)


def sparse_sbs_decode(offsets, entries, popcounts, num_classes, levels, pyramid, threads):
    """Same as ``_core.sparse_sbs_decode``: dense uint8 ``(n, stride)``."""
    check_threads_arg(threads)
    s = _Shape(int(num_classes), int(levels), bool(pyramid))
    off, ent, pop = _view(offsets, entries, popcounts, s)
    _raise_check(off, ent, pop, s)
    n = pop.shape[0]
    out = np.zeros((n, s.stride), np.uint8)
    first = np.asarray(s.part_first_cell, np.int64)
    p0s = np.asarray(s.part_bit_offset, np.int64)
    cs = np.asarray(s.part_cells, np.int64)
    step = max(1, _CHUNK_BITS // (8 * s.stride))
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)
        a, b = int(off[r0]), int(off[r1])
        bits = np.zeros((r1 - r0, 8 * s.stride), np.uint8)
        rows = np.repeat(np.arange(r1 - r0), np.diff(off[r0:r1 + 1]))
        e = ent[a:b].astype(np.int64)
        cell, level = e >> 2, (e & 3) + 1
        part = np.searchsorted(first, cell, side="right") - 1
        local = cell - first[part]
        bits[rows, p0s[part] + local] = 1
        prop = p0s[part] + cs[part] + 4 * local
        for t in range(4):
            m = level > t
            bits[rows[m], prop[m] + t] = 1
        out[r0:r1] = np.packbits(bits, axis=1)
    return out


@nb.njit(cache=True, nogil=True, parallel=True)
def _search(offsets, entries, pop, weights, pq, k, maxd, out_d, out_i):
    nq = weights.shape[0]
    n = pop.shape[0]
    missing = np.int32(_INT32_MAX)
    for qi in nb.prange(nq):
        dist = np.empty(n, np.int32)
        hist = np.zeros(maxd + 1, np.int64)
        w = weights[qi]
        for r in range(n):
            acc = 0
            for p in range(offsets[r], offsets[r + 1]):
                acc += w[np.int64(entries[p])]
            d = pq[qi] + pop[r] - 2 * acc
            dist[r] = d
            hist[d] += 1
        histogram_topk_row(dist, hist, k, missing, out_d[qi], out_i[qi])


class SparseSBSIndex:
    """Same as ``_core.SparseSBSIndex`` (forward scan only; see the module docstring)."""

    def __init__(self, offsets, entries, popcounts, num_classes, levels, pyramid, threads,
                 hot_fraction):
        check_threads_arg(threads)
        if not 0.0 <= float(hot_fraction) <= 1.0:  # not NaN either
            raise ValueError(f"hot_fraction must lie in [0, 1], got {float(hot_fraction):f}")
        s = _Shape(int(num_classes), int(levels), bool(pyramid))
        off, ent, pop = _view(offsets, entries, popcounts, s)
        _raise_check(off, ent, pop, s)
        self._s, self._off, self._ent, self._pop = s, off, ent, pop

    @property
    def rows(self) -> int:
        return int(self._pop.shape[0])

    @property
    def nnz(self) -> int:
        return int(self._ent.shape[0])

    @property
    def inverted_bytes(self) -> int:
        return 0

    @property
    def hot_cells(self) -> int:
        return 0

    def _weights(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per query: popcount and int32 weights ``(nq, cells * 4)`` indexed by entry value."""
        bits = np.unpackbits(q, axis=1)
        pres, nib = self._s.unpack(bits)
        w = pres[:, :, None].astype(np.int32) + np.cumsum(nib, axis=2, dtype=np.int32)
        return (bits.sum(axis=1, dtype=np.int64).astype(np.int32),
                w.reshape(q.shape[0], 4 * self._s.cells))

    def search(self, queries, k, threads, method):
        check_threads_arg(threads)
        if not 0 <= int(method) <= 2:
            raise ValueError(f"method must be 0 (auto), 1 (inverted) or 2 (scan), got {method}")
        q = _codes(queries, "queries")
        if q.shape[1] != self._s.stride:
            raise ValueError(f"queries must have {self._s.stride} bytes per code (the layout's "
                             f"stride), got {q.shape[1]}")
        k = int(k)
        check_topk_size(q.shape[0], k)
        nq = q.shape[0]
        out_d = np.empty((nq, k), np.int32)
        out_i = np.empty((nq, k), np.int64)
        step = max(1, _MAX_TABLE // (4 * self._s.cells))
        with with_threads(threads):
            for a in range(0, nq, step):
                pq, w = self._weights(q[a:a + step])
                _search(self._off, self._ent, self._pop, w, pq, k, 8 * self._s.stride,
                        out_d[a:a + step], out_i[a:a + step])
        return out_d, out_i
