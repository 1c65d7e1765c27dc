"""Exact sparse search of SBS codes: the answers of :func:`~semcbir_fast.hamming_topk` from the
present (block, class) cells only (docs/sparse_search.md).

Real SBS codes are almost empty (Corel-1K, default model: 1.7 % of the bits at 16 blocks,
1.2 % at 64). A :class:`SparseSBSCodes` keeps, per image, the sorted list of its present cells
with their proportion level and the popcount (SPEC.md section 1). Entry = ``(cell << 2) |
(level - 1)``, ``cell = b * M + c`` (levels of a pyramid one after the other): ``uint16`` when the
layout has at most 16,384 cells (151 classes up to 64 blocks), else ``uint32``. Then

    ``d(a, b) = |a| + |b| - 2 |a AND b|``, ``|a AND b| = sum over shared cells of 1 + min(la, lb)``.

:class:`SparseSBSSearcher` adds inverted lists (blocks of 8,192 rows, one ``uint16`` posting
per entry) and answers k-NN queries exactly like the dense scan, ties included (by the smaller
row), on the compiled core or the numba fallback. Queries stay dense codes of any bit pattern.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from . import _backend
from ._convert import as_codes, check_k, check_threads
from .layout import SBSLayout

__all__ = [
    "AUTO_SPARSE_MAX_DENSITY",
    "SparseSBSCodes",
    "SparseSBSSearcher",
    "choose_engine",
    "code_density",
    "from_sparse_sbs",
    "sparse_hamming_topk",
    "to_sparse_sbs",
]

#: ``engine="auto"`` picks the sparse engine while the codes' one-bits are at most this share
#: of ``nbits`` (and every code is canonical). Measured crossover (docs/benchmarks.md,
#: "CPU: sparse SBS search"): the sparse engine beats the dense scan up to ~11 % density for
#: single queries and ~9 % for batches of 64 (~4.5 % before the hot columns of the search
#: structure); real codes have 1.2-1.7 %.
AUTO_SPARSE_MAX_DENSITY = 0.05

_METHODS = {"auto": 0, "inverted": 1, "scan": 2}


def _impl() -> ModuleType:
    """The active backend (both export ``sparse_sbs_*`` and ``SparseSBSIndex``)."""
    return _backend.core()  # type: ignore[no-any-return]


def _check_layout(layout: Any) -> SBSLayout:
    if not isinstance(layout, SBSLayout):
        raise TypeError(f"layout must be an SBSLayout (from semcbir_fast.sbs_layout), got "
                        f"{type(layout).__name__}")
    return layout


def entry_dtype(layout: SBSLayout) -> np.dtype:
    """``uint16`` when the layout has at most 16,384 cells, else ``uint32``."""
    cells = layout.num_classes * layout.blocks
    return np.dtype(np.uint16 if cells <= 1 << 14 else np.uint32)


@dataclass(frozen=True)
class SparseSBSCodes:
    """Sparse SBS codes (CSR): row ``i`` holds ``entries[offsets[i]:offsets[i + 1]]``.

    Attributes
    ----------
    layout : SBSLayout
    offsets : numpy.ndarray
        int64 ``(n + 1,)``, from 0, non-decreasing.
    entries : numpy.ndarray
        uint16 / uint32 (see :func:`entry_dtype`): ``(cell << 2) | (level - 1)``, cells
        ascending in each row.
    popcounts : numpy.ndarray
        int32 ``(n,)``: one-bits of each dense code, ``sum of (1 + level)``.
    """

    layout: SBSLayout
    offsets: np.ndarray
    entries: np.ndarray
    popcounts: np.ndarray

    def __len__(self) -> int:
        return int(self.offsets.shape[0]) - 1

    @property
    def nnz(self) -> int:
        """Entries (present cells) over all rows."""
        return int(self.offsets[-1])

    @property
    def nbytes(self) -> int:
        """Bytes of the three arrays."""
        return int(self.offsets.nbytes + self.entries.nbytes + self.popcounts.nbytes)

    def bytes_per_image(self) -> float:
        """Mean bytes per row (entries, offset and popcount); 0.0 when empty."""
        return self.nbytes / len(self) if len(self) else 0.0

    def density(self) -> float:
        """Share of one-bits in the dense codes (mean popcount / nbits); 0.0 when empty."""
        if not len(self):
            return 0.0
        return float(self.popcounts.sum(dtype=np.int64)) / (len(self) * self.layout.nbits)

    def check(self) -> None:
        """ValueError unless well formed (offsets, ascending cells inside the layout, popcounts)."""
        _impl().sparse_sbs_check(self.offsets, self.entries, self.popcounts,
                                 self.layout.num_classes, self.layout.levels, self.layout.pyramid)

    def to_dense(self, *, threads: int = 0) -> np.ndarray:
        """The dense codes, uint8 ``(n, stride)`` (bit-identical to :func:`encode_sbs`'s)."""
        return from_sparse_sbs(self, threads=threads)

    def take(self, rows: Any) -> SparseSBSCodes:
        """The rows ``rows`` (int array or bool mask), in that order."""
        rows = np.asarray(rows)
        if rows.dtype == np.bool_:
            rows = np.flatnonzero(rows)
        rows = rows.astype(np.int64, copy=False)
        starts, stops = self.offsets[:-1][rows], self.offsets[1:][rows]
        lengths = stops - starts
        offsets = np.zeros(rows.shape[0] + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # positions of every kept entry: start of its row + rank inside the row
        pos = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
        return SparseSBSCodes(self.layout, offsets, self.entries[pos], self.popcounts[rows])

    @staticmethod
    def concat(parts: list[SparseSBSCodes]) -> SparseSBSCodes:
        """Rows of ``parts`` one after the other (same layout)."""
        if not parts:
            raise ValueError("concat needs at least one part")
        lay = parts[0].layout
        offs = [np.zeros(1, np.int64)]
        base = 0
        for p in parts:
            if p.layout != lay:
                raise ValueError("concat: parts have different layouts")
            offs.append(p.offsets[1:] + base)
            base += p.nnz
        return SparseSBSCodes(lay, np.concatenate(offs),
                              np.concatenate([p.entries[: p.nnz] for p in parts]),
                              np.concatenate([p.popcounts for p in parts]))

    @staticmethod
    def empty(layout: SBSLayout) -> SparseSBSCodes:
        """No rows."""
        return SparseSBSCodes(layout, np.zeros(1, np.int64), np.zeros(0, entry_dtype(layout)),
                              np.zeros(0, np.int32))


def to_sparse_sbs(codes: Any, layout: SBSLayout, *, threads: int = 0) -> SparseSBSCodes:
    """Dense SBS codes ``(n, stride)`` (or one ``(stride,)``) -> :class:`SparseSBSCodes`.

    Raises
    ------
    ValueError
        Wrong width, or a row that is not a canonical SBS code (what :func:`encode_sbs`
        makes: a presence bit with a thermometer code of level 1..4, nothing else); such codes
        can only be searched by the dense engine.
    """
    lay = _check_layout(layout)
    c = as_codes(codes, "codes")
    if c.shape[1] != lay.stride:
        raise ValueError(f"codes must have {lay.stride} bytes per row for this layout "
                         f"({lay.num_classes} classes, levels={lay.levels}), got {c.shape[1]}")
    t = check_threads(threads)
    off, ent, pop = _impl().sparse_sbs_encode(c, lay.num_classes, lay.levels, lay.pyramid, t)
    return SparseSBSCodes(lay, off, ent, pop)


def from_sparse_sbs(sparse: SparseSBSCodes, *, threads: int = 0) -> np.ndarray:
    """:class:`SparseSBSCodes` -> dense uint8 ``(n, stride)`` (checked first: ValueError)."""
    lay = sparse.layout
    return _impl().sparse_sbs_decode(sparse.offsets, sparse.entries, sparse.popcounts,
                                     lay.num_classes, lay.levels, lay.pyramid,
                                     check_threads(threads))


def code_density(codes: np.ndarray, layout: SBSLayout, sample: int = 4096) -> float:
    """Share of one-bits of (up to ``sample`` evenly spaced rows of) dense codes."""
    if codes.shape[0] == 0:
        return 0.0
    rows = codes[:: max(1, codes.shape[0] // sample)]
    return float(np.unpackbits(rows, axis=1).sum(dtype=np.int64)) / (rows.shape[0] * layout.nbits)


def choose_engine(density: float, canonical: bool = True) -> str:
    """``"sparse"`` when the codes are canonical and their density is at most
    :data:`AUTO_SPARSE_MAX_DENSITY`, else ``"dense"``: the rule of ``engine="auto"``."""
    return "sparse" if canonical and density <= AUTO_SPARSE_MAX_DENSITY else "dense"


class SparseSBSSearcher:
    """Inverted lists over :class:`SparseSBSCodes`, built once; ``search`` equals
    ``hamming_topk(queries, sparse.to_dense(), k)`` exactly.

    Parameters
    ----------
    sparse : SparseSBSCodes
        Checked here (ValueError when malformed); kept by reference, must not change.
    threads : int, default 0
        Threads for building the inverted lists (0 = all cores).
    hot_fraction : float, default 0.125
        A cell is *hot* when the rows holding it, less those at its least frequent level,
        exceed this fraction of the rows: its other three levels are then stored as a 2-bit
        code per row, added with byte shuffles, and only its least frequent level keeps
        postings. The default is exactly where the column (0.25 byte per row) takes less
        memory than the 2-byte postings it replaces; lower values trade memory for speed
        (``docs/sparse_search.md``). Results do not depend on it.

    Notes
    -----
    Memory (:attr:`inverted_bytes`): 2 bytes per posting (the entries of cold cells and the
    least frequent level of hot ones), a quarter byte per row and hot cell, one 4-byte offset
    per cell and block of 8,192 rows; beside the codes' own
    ``2 (or 4) * nnz + 12 * n`` bytes. Concurrent searches are safe. The numba fallback
    scans the codes' forward lists only (``inverted_bytes`` and :attr:`hot_cells` are 0).
    """

    def __init__(self, sparse: SparseSBSCodes, *, threads: int = 0,
                 hot_fraction: float = 0.125) -> None:
        lay = sparse.layout
        self.sparse = sparse
        self._index = _impl().SparseSBSIndex(
            np.ascontiguousarray(sparse.offsets, np.int64), np.ascontiguousarray(sparse.entries),
            np.ascontiguousarray(sparse.popcounts, np.int32), lay.num_classes, lay.levels,
            lay.pyramid, check_threads(threads), float(hot_fraction))

    @property
    def inverted_bytes(self) -> int:
        """Bytes of the inverted lists, hot columns and their tables."""
        return int(self._index.inverted_bytes)

    @property
    def hot_cells(self) -> int:
        """Cells stored as 2-bit code columns (0 with the numba fallback)."""
        return int(self._index.hot_cells)

    def __len__(self) -> int:
        return len(self.sparse)

    def search(self, queries: Any, k: int, *, threads: int = 0,
               method: str = "auto") -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest rows of each query (dense uint8 codes ``(nq, stride)`` or one
        ``(stride,)``, any bits).

        ``method``: ``"auto"`` (per query by estimated cost), ``"inverted"`` (counters from the
        inverted lists) or ``"scan"`` (forward scan of the entry lists, up to 64 queries at a
        time); the results never depend on it, nor on ``threads``.

        Returns ``(distances int32, ids int64)`` ``(nq, k)`` as :func:`hamming_topk`: ascending,
        ties by the smaller row, ``k > n`` padded with ``(INT32_MAX, -1)``.
        """
        if method not in _METHODS:
            raise ValueError(f"method must be one of {sorted(_METHODS)}, got {method!r}")
        q = as_codes(queries, "queries")
        if q.shape[1] != self.sparse.layout.stride:
            raise ValueError(f"queries must have {self.sparse.layout.stride} bytes per code "
                             f"(the index's layout), got {q.shape[1]}")
        k = check_k(k, q.shape[0])
        return self._index.search(q, k, check_threads(threads), _METHODS[method])  # type: ignore[no-any-return]


def sparse_hamming_topk(queries: Any, sparse: SparseSBSCodes, k: int, *, threads: int = 0,
                        method: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """One-shot :class:`SparseSBSSearcher` search (builds the inverted lists each call)."""
    return SparseSBSSearcher(sparse, threads=threads).search(queries, k, threads=threads,
                                                              method=method)
