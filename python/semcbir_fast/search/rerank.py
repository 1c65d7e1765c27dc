"""k-reciprocal re-ranking (Zhong, Zheng, Cao and Li, "Re-ranking person re-identification
with k-reciprocal encoding", CVPR 2017) against a fixed database, for any symmetric
non-negative distance.

Notation of the paper: ``N(p, k)`` are the ``k + 1`` nearest items of ``p`` (itself first);
``R(p, k) = {g in N(p, k) : p in N(g, k)}`` its k-reciprocal neighbours; ``R*(p, k)`` adds to
``R(p, k)`` every ``R(g, k / 2)`` of a ``g`` in ``R(p, k)`` that shares more than 2/3 of its
members with ``R(p, k)``. Each item is encoded as a vector ``V_p`` over the database with
``exp(-d(p, g))`` on ``R*(p, k1)`` (normalised to sum 1), averaged over its ``k2`` nearest
items (the "local query expansion"). The re-ranked distance is

    d*(p, g) = (1 - lambda) d_J(p, g) + lambda d(p, g),
    d_J(p, g) = 1 - sum_c min(V_p,c, V_g,c) / sum_c max(V_p,c, V_g,c),

with ``d`` divided by the largest distance of ``p``'s row (as the authors' code does).
Defaults are the paper's: ``k1 = 20``, ``k2 = 6``, ``lambda = 0.3``.

Here the database side (the neighbour lists, ``R(g, k1 / 2)``, ``V_g``) is computed once
from the database-to-database distances (:class:`KReciprocal`, one pass over them in
blocks of rows, plus the rows of the few items whose ``R*`` reaches past the nearest
distances kept from it) and a query is then re-ranked from its distance row to the database
in ``O(k1^2 + |nonzeros|)``: the query is treated as one more item (``q in N(g, k1)`` when
``d(q, g)`` is at most ``g``'s ``k1 + 1``-th neighbour distance), its own column is not
part of the encoding, and database items are not re-encoded with the query (the
paper's formulation re-encodes everything for every query set). The distance must be
symmetric for the reciprocity test to mean what it says.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numpy as np

from .._convert import check_int
from .float_topk import topk_from_distances

__all__ = ["KReciprocal"]

#: Distances of one block of database rows held at once while building.
_BLOCK_FLOATS = 1 << 23
#: The build keeps each item's ``_KEPT * (k1 + 1)`` nearest distances from its one pass over
#: the rows; an item whose ``R*`` reaches past them has its row computed again.
_KEPT = 3


def _reciprocal(nbr: np.ndarray, i: int, k: int) -> np.ndarray:
    """``R(i, k)`` from the neighbour lists (``nbr[:, 0]`` is normally the item itself)."""
    f = nbr[i, :k + 1]
    back = nbr[f, :k + 1]
    return f[(back == i).any(axis=1)]


def _runs(items: list[int], most: int) -> list[tuple[int, int]]:
    """``(start, end)`` ranges covering the ascending ``items``, consecutive ones together,
    each at most ``most`` long."""
    out: list[tuple[int, int]] = []
    for g in items:
        if out and out[-1][1] == g and g - out[-1][0] < most:
            out[-1] = (out[-1][0], g + 1)
        else:
            out.append((g, g + 1))
    return out


def _expand(r: np.ndarray, half: list[np.ndarray]) -> np.ndarray:
    """``R*``: ``r`` plus each ``R(g, k/2)`` of ``g`` in ``r`` that overlaps it by > 2/3."""
    parts = [r]
    rs = set(r.tolist())
    for g in r.tolist():
        rg = half[g]
        if rg.size and sum(1 for x in rg.tolist() if x in rs) > 2.0 / 3.0 * rg.size:
            parts.append(rg)
    return np.unique(np.concatenate(parts))


class KReciprocal:
    """The database side of k-reciprocal re-ranking, built once.

    Parameters
    ----------
    rows : callable
        ``rows(start, end)`` -> ``(end - start, n)`` non-negative distances of database
        items ``start .. end - 1`` to the whole database (symmetric in the pair).
    n : int
        Database size.
    k1, k2 : int
        Reciprocal-neighbour and local-expansion sizes (paper: 20, 6).
    lam : float
        Weight of the original distance in the result, in [0, 1] (paper: 0.3).
    progress : bool
        A progress bar (stderr) over the build's three passes over the database items: the
        distance rows (``rows`` called once for the whole database, ``O(n^2)``), the
        encodings, their local expansion.

    Attributes
    ----------
    rows_recomputed : int
        Items whose encoding reached past the ``3 (k1 + 1)`` nearest distances the build
        keeps per item, so that their rows were computed a second time (few: an item's
        ``R*`` lies among its near neighbours' neighbours).
    """

    def __init__(self, rows: Callable[[int, int], Any], n: int, *, k1: int = 20, k2: int = 6,
                 lam: float = 0.3, progress: bool = False) -> None:
        self._settings(n, k1, k2, lam)
        kk = min(self.k1 + 1, n)
        step = max(1, _BLOCK_FLOATS // n)
        bar: Any = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=3 * n, unit="row", desc="k-reciprocal graph", smoothing=0.1)
        try:
            self._build(rows, n, kk, step, bar)
        finally:
            if bar is not None:
                bar.close()

    def _settings(self, n: int, k1: int, k2: int, lam: float) -> None:
        """Check and set ``n``, ``k1``, ``k2``, ``lam`` (and ``k1 / 2``, rounded)."""
        self.n = check_int(n, "n", 1)
        self.k1 = check_int(k1, "k1", 1)
        self.k2 = check_int(k2, "k2", 1)
        if not (isinstance(lam, (int, float)) and 0.0 <= lam <= 1.0):
            raise ValueError(f"lam must be a number in [0, 1], got {lam!r}")
        self.lam = float(lam)
        self._kh = max(1, round(self.k1 / 2))

    def _build(self, rows: Callable[[int, int], Any], n: int, kk: int, step: int,
               bar: Any) -> None:
        # one pass over the rows: the neighbour lists, and each item's nearest distances
        # (kept_d, ascending; columns kept_i) and largest one, which its encoding needs
        m = min(n, _KEPT * kk)
        kept_i = np.empty((n, m), dtype=np.int64)
        kept_d = np.empty((n, m), dtype=np.float64)
        top = np.empty(n, dtype=np.float64)
        for s in range(0, n, step):
            d = self._block(rows, s, min(n, s + step))
            kept_d[s:s + d.shape[0]], kept_i[s:s + d.shape[0]] = topk_from_distances(d, m)
            top[s:s + d.shape[0]] = d.max(axis=1)
            if bar is not None:
                bar.update(d.shape[0])
        nbr = np.ascontiguousarray(kept_i[:, :kk])  # a prefix: both ordered by (d, column)
        self._nbr, self._kth = nbr, kept_d[:, kk - 1].copy()
        self._half = [_reciprocal(nbr, g, min(self._kh, kk - 1)) for g in range(n)]
        # raw encodings V (before the local expansion), from the kept distances where R*
        # stays inside them, else from the item's row computed once more
        enc: list[tuple[np.ndarray, np.ndarray] | None] = [None] * n
        again: dict[int, np.ndarray] = {}  # item -> its R*, for the items to read again
        for g in range(n):
            rstar = _expand(_reciprocal(nbr, g, kk - 1), self._half)
            order = np.argsort(kept_i[g], kind="stable")
            pos = np.minimum(np.searchsorted(kept_i[g][order], rstar), m - 1)
            at = order[pos]
            if (kept_i[g][at] == rstar).all():
                enc[g] = rstar, self._weights(kept_d[g][at], top[g])
            else:
                again[g] = rstar
            if bar is not None and g % 1024 == 1023:
                bar.update(1024)
        self.rows_recomputed = len(again)
        for s, e in _runs(list(again), step):  # consecutive items in one call, <= a block
            d = self._block(rows, s, e)
            for g in range(s, e):
                enc[g] = again[g], self._weights(d[g - s][again[g]], top[g])
        if bar is not None:
            bar.update(2 * n - bar.n)
        done = cast("list[tuple[np.ndarray, np.ndarray]]", enc)
        ptr = np.zeros(n + 1, dtype=np.int64)
        ptr[1:] = np.cumsum([c.size for c, _ in done])
        self._vp = ptr
        self._vc = np.concatenate([c for c, _ in done])
        self._vv = np.concatenate([v for _, v in done])
        # local expansion of the database encodings, then the inverted (column) lists
        ptr2 = [0]
        cols2: list[np.ndarray] = []
        vals2: list[np.ndarray] = []
        for g in range(n):
            c, v = self._average(nbr[g, :min(self.k2, kk)].tolist(), extra=None)
            cols2.append(c)
            vals2.append(v)
            ptr2.append(ptr2[-1] + c.size)
            if bar is not None and g % 1024 == 1023:
                bar.update(1024)
        if bar is not None:
            bar.update(3 * n - bar.n)
        c2 = np.concatenate(cols2) if cols2 else np.zeros(0, np.int64)
        v2 = np.concatenate(vals2) if vals2 else np.zeros(0)
        row_of = np.repeat(np.arange(n, dtype=np.int64), np.diff(np.asarray(ptr2)))
        order = np.argsort(c2, kind="stable")
        self._ic = np.searchsorted(c2[order], np.arange(n + 1))
        self._ir, self._iv = row_of[order], v2[order]

    # ------------------------------------------------------------------ persistence
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The built graph as plain arrays (what :meth:`from_arrays` takes back): the
        neighbour lists, the ``R(g, k1 / 2)`` lists and the encodings, CSR-like."""
        sizes = np.fromiter((h.size for h in self._half), np.int64, self.n)
        half_ptr = np.zeros(self.n + 1, np.int64)
        np.cumsum(sizes, out=half_ptr[1:])
        return {"nbr": self._nbr, "kth": self._kth, "half_ptr": half_ptr,
                "half_idx": np.concatenate(self._half).astype(np.int64),
                "vp": self._vp, "vc": self._vc, "vv": self._vv,
                "ic": self._ic, "ir": self._ir, "iv": self._iv,
                "rows_recomputed": np.array([self.rows_recomputed], np.int64)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any], n: int, *, k1: int = 20, k2: int = 6,
                    lam: float = 0.3) -> KReciprocal:
        """A graph from :meth:`to_arrays` of one built for ``n`` items with the same
        ``k1``, ``k2``, ``lam``; re-ranks exactly as that one. Arrays that do not fit
        together (wrong shapes, ids out of range, negative or non-finite weights, lists
        that do not partition) raise ValueError, so a damaged file cannot index past them."""
        self = cls.__new__(cls)
        self._settings(n, k1, k2, lam)
        missing = sorted(set(cls._ARRAYS) - set(arrays))
        if missing:
            raise ValueError(f"k-reciprocal graph: arrays {missing} missing")
        a = {k: np.asarray(arrays[k]) for k in cls._ARRAYS}
        kk = min(self.k1 + 1, n)

        def ids(name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
            x = a[name]
            if x.dtype.kind not in "iu" or (shape is not None and x.shape != shape) \
                    or x.ndim != (1 if shape is None else len(shape)):
                raise ValueError(f"k-reciprocal graph: {name} has dtype {x.dtype} and shape "
                                 f"{x.shape}, expected integers of shape {shape or '(m,)'}")
            if x.size and (x.min() < 0 or x.max() >= n):
                raise ValueError(f"k-reciprocal graph: {name} holds ids outside 0..{n - 1}")
            return x.astype(np.int64, copy=False)

        def ptr(name: str, total: int) -> np.ndarray:
            x = a[name]
            if x.dtype.kind not in "iu" or x.shape != (n + 1,) or x[0] != 0 \
                    or x[-1] != total or np.any(np.diff(x.astype(np.int64)) < 0):
                raise ValueError(f"k-reciprocal graph: {name} is not non-decreasing from 0 "
                                 f"to {total} over {n + 1} entries")
            return x.astype(np.int64, copy=False)

        def weights(name: str, size: int) -> np.ndarray:
            x = a[name]
            if x.dtype.kind != "f" or x.shape != (size,) or \
                    (size and (not np.isfinite(x).all() or x.min() < 0)):
                raise ValueError(f"k-reciprocal graph: {name} must be {size} finite values "
                                 ">= 0")
            return x.astype(np.float64, copy=False)

        self._nbr = ids("nbr", (n, kk))
        self._kth = weights("kth", n)
        half_idx = ids("half_idx")
        half_ptr = ptr("half_ptr", half_idx.size)
        self._half = [half_idx[half_ptr[g]:half_ptr[g + 1]] for g in range(n)]
        self._vc = ids("vc")
        self._vp = ptr("vp", self._vc.size)
        self._vv = weights("vv", self._vc.size)
        self._ir = ids("ir")
        self._ic = ptr("ic", self._ir.size)
        self._iv = weights("iv", self._ir.size)
        rec = a["rows_recomputed"]
        if rec.shape != (1,) or rec.dtype.kind not in "iu" or not 0 <= int(rec[0]) <= n:
            raise ValueError("k-reciprocal graph: rows_recomputed must be one count in 0..n")
        self.rows_recomputed = int(rec[0])
        return self

    _ARRAYS = ("nbr", "kth", "half_ptr", "half_idx", "vp", "vc", "vv", "ic", "ir", "iv",
               "rows_recomputed")

    @staticmethod
    def _block(rows: Callable[[int, int], Any], s: int, e: int) -> np.ndarray:
        d = np.asarray(rows(s, e), dtype=np.float64)
        if d.ndim != 2 or d.shape[0] != e - s:
            raise ValueError(f"rows({s}, {e}) must return ({e - s}, n) distances, got {d.shape}")
        if d.size and (not np.isfinite(d).all() or d.min() < 0):
            raise ValueError("k-reciprocal re-ranking needs finite distances >= 0")
        return d

    @staticmethod
    def _weights(d: np.ndarray, top: float) -> np.ndarray:
        """``exp(-d / top)`` normalised to sum 1 (``top``: the largest distance of the row)."""
        w = np.exp(-(d / top if top > 0 else d))
        return w / w.sum()

    @classmethod
    def _encode(cls, drow: np.ndarray, rstar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return rstar.astype(np.int64), cls._weights(drow[rstar], drow.max())

    def _average(self, members: list[int], extra: tuple[np.ndarray, np.ndarray] | None
                 ) -> tuple[np.ndarray, np.ndarray]:
        cs = [self._vc[self._vp[g]:self._vp[g + 1]] for g in members]
        vs = [self._vv[self._vp[g]:self._vp[g + 1]] for g in members]
        if extra is not None:
            cs.append(extra[0])
            vs.append(extra[1])
        c = np.concatenate(cs)
        v = np.concatenate(vs)
        u, inv = np.unique(c, return_inverse=True)
        return u, np.bincount(inv, weights=v, minlength=u.size) / len(cs)

    def rerank(self, distances: Any) -> np.ndarray:
        """Re-ranked distances ``(nq, n)`` float64 of queries given their distance rows
        ``(nq, n)`` to the database (non-negative, same units as the database rows)."""
        d = np.asarray(distances, dtype=np.float64)
        if d.ndim != 2 or d.shape[1] != self.n:
            raise ValueError(f"distances must be (nq, {self.n}), got shape {d.shape}")
        if d.size and (not np.isfinite(d).all() or d.min() < 0):
            raise ValueError("k-reciprocal re-ranking needs finite distances >= 0")
        kk = self._nbr.shape[1]
        out = np.empty_like(d)
        if d.shape[0] == 0:
            return out
        _, first = topk_from_distances(d, kk)
        for qi in range(d.shape[0]):
            row = d[qi]
            top = row.max()
            scaled = row / top if top > 0 else row
            f = first[qi]
            r = f[row[f] <= self._kth[f]]
            rstar = _expand(r, self._half) if r.size else r
            if rstar.size:
                own = self._encode(row, rstar)
                c, v = self._average(f[:max(0, min(self.k2, kk) - 1)].tolist(), extra=own)
            else:
                c, v = np.zeros(0, np.int64), np.zeros(0)
            starts, ends = self._ic[c], self._ic[c + 1]
            counts = ends - starts
            pos = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
            overlap = np.bincount(self._ir[pos], weights=np.minimum(self._iv[pos],
                                                                    np.repeat(v, counts)),
                                  minlength=self.n)
            jac = 1.0 - overlap / (2.0 - overlap)
            out[qi] = (1.0 - self.lam) * jac + self.lam * scaled
        return out
