"""A searchable, persistent collection of SBS codes with the caller's ids and keys.

:class:`SBSIndex` keeps Semantic Binary Signature codes (SPEC.md section 1) together with
int64 ids chosen by the caller, optional string keys (typically file paths) and a metadata
dict, and answers exact Hamming k-NN and range queries with the caller's ids (faiss-style
results). It saves to and loads from a single file that can be memory-mapped.

Ordering contract
-----------------
Rows are kept sorted by id. Search results are sorted by ascending distance and ties are
broken by the **smaller id**, exactly as :func:`semcbir_fast.hamming_topk` breaks ties by
the smaller row: the two agree because the rows are in id order. Results never depend on
the insertion order or on the number of threads.

Removal
-------
:meth:`SBSIndex.remove` marks rows as deleted (tombstones): they are skipped by every
query and by :meth:`~SBSIndex.reconstruct`, but keep their memory until
:meth:`~SBSIndex.compact` (or :meth:`~SBSIndex.save`, which writes live rows only).

Threads
-------
Queries may run from several Python threads at once: a query takes a consistent snapshot
of the arrays under a lock and then runs without it (the Hamming kernels release the GIL).
Mutations (``add``, ``remove``, ``compact``) hold the lock and never modify in place an
array that a snapshot may still be reading (appends write past the snapshot's rows;
removals and reorders build new arrays).

File format (version 1)
-----------------------
The container of :mod:`semcbir_fast.index.container` (magic, JSON header, 64-byte aligned
sections, BLAKE2b checksum, atomic writes) with header ``format`` ``"semcbir-sbs-index"``
and the sections ``codes`` (``count x stride`` uint8, C order), ``ids`` (``count`` int64,
strictly increasing), and when the index has keys ``key_offsets`` (``count + 1`` uint64)
and ``key_blob`` (the UTF-8 keys concatenated; key ``i`` is
``blob[offsets[i]:offsets[i+1]]``).

Header JSON keys: ``format``, ``version``, ``layout`` (:meth:`SBSLayout.to_dict`), ``count``,
``next_id``, ``has_keys``, ``sections``, ``metadata`` (the user's dict) and
``library_version`` (of the writer). The memory-mapped code matrix is 64-byte aligned, as
the SIMD kernels prefer.

Engines
-------
``engine="dense"`` keeps the packed codes and scans them (:func:`~semcbir_fast.hamming_topk`);
``engine="sparse"`` keeps only the present (block, class) cells of each code
(:class:`~semcbir_fast.sparse_sbs.SparseSBSCodes`, docs/sparse_search.md) and searches them
through inverted lists, with exactly the same results; ``engine="auto"`` (default) picks the
sparse one while every code is canonical and the measured share of one-bits is at most
:data:`~semcbir_fast.sparse_sbs.AUTO_SPARSE_MAX_DENSITY` (re-decided after each ``add``,
back to dense above twice that). A sparse index is written with the header keys
``engine`` (the choice) and ``storage`` = ``"sparse"`` and the sections ``sparse_offsets``
(``count + 1`` int64), ``sparse_entries`` (uint16 or uint32, ``(cell << 2) | (level - 1)``)
and ``sparse_popcounts`` (``count`` int32) instead of ``codes``; every one is checked on
load. ``device="cuda"`` searches device-resident copies of the codes
(:mod:`semcbir_fast.search.gpu`), with the same results.
"""

from __future__ import annotations

import operator
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._convert import check_int
from ..layout import MAX_CODE_BYTES, SBSLayout, sbs_layout
from ..sparse_sbs import (
    AUTO_SPARSE_MAX_DENSITY,
    SparseSBSCodes,
    SparseSBSSearcher,
    choose_engine,
    code_density,
    entry_dtype,
    to_sparse_sbs,
)
from .container import (
    CONTAINER_VERSION,
    MAGIC,
    Container,
    IndexFormatError,
    header_int,
    json_metadata,
    library_version,
    load_with,
    write_index,
)

__all__ = ["FORMAT_VERSION", "MAGIC", "IndexFormatError", "SBSIndex"]

FORMAT_VERSION = CONTAINER_VERSION
FORMAT_NAME = "semcbir-sbs-index"
_INT32_MAX = np.iinfo(np.int32).max
ENGINES = ("auto", "dense", "sparse")
_SPARSE_SECTIONS = ("sparse_offsets", "sparse_entries", "sparse_popcounts")


def check_device(device: Any) -> str:
    """``device`` of an index (``"cpu"``, ``"cuda"``, ``"cuda:N"``), else ValueError."""
    dev = str(device)
    if dev != "cpu" and dev != "cuda" and not (dev.startswith("cuda:") and dev[5:].isdigit()):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return dev


def _as_codes(codes: Any, layout: SBSLayout, name: str) -> np.ndarray:
    """Validate a batch of codes against ``layout``: uint8 ``(n, stride)`` C-contiguous."""
    if type(codes).__module__.startswith("torch"):
        codes = codes.detach().cpu().numpy()
    arr = np.asarray(codes)
    if arr.dtype != np.uint8:
        raise ValueError(
            f"{name} must be uint8 SBS codes, got dtype {arr.dtype}; encode label maps with "
            "semcbir_fast.encode_sbs"
        )
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] != layout.stride:
        raise ValueError(
            f"{name} must have shape (n, {layout.stride}) for this index's layout "
            f"({layout.num_classes} classes, levels={layout.levels}, {layout.nbits} bits, "
            f"stride {layout.stride} bytes), got shape {arr.shape}; encode with the same "
            "num_classes / levels / pyramid as the index"
        )
    return np.ascontiguousarray(arr)


def _as_ids(ids: Any, name: str = "ids") -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of integers, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.unsignedinteger) and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} must fit in int64, got a value {arr.max()}")
    return arr.astype(np.int64, copy=False)


class SBSIndex:
    """Exact Hamming index of SBS codes with the caller's int64 ids and optional keys.

    Parameters
    ----------
    layout : SBSLayout
        Bit layout of every code in the index (:func:`semcbir_fast.sbs_layout`).
    metadata : dict, optional
        JSON-serialisable description saved with the index, e.g. ``{"model":
        "ade20k-mnv2", "class_names": [...], "levels": 2}``. ``library_version`` is added.
    engine : {"auto", "dense", "sparse"}, default "auto"
        How the codes are stored and searched (module docstring, "Engines"); results never
        depend on it. ``"sparse"`` refuses codes that are not canonical SBS codes.
    device : str, default "cpu"
        ``"cuda"`` / ``"cuda:N"``: searches run on that GPU (torch), same results.

    Examples
    --------
    >>> import numpy as np, semcbir_fast as sf
    >>> from semcbir_fast.index import SBSIndex
    >>> maps = np.random.default_rng(0).integers(0, 5, (10, 32, 32), dtype=np.uint8)
    >>> idx = SBSIndex(sf.sbs_layout(5, 1))
    >>> idx.add(sf.encode_sbs(maps, num_classes=5, levels=1), keys=[f"{i}.png" for i in range(10)])
    array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    >>> distances, ids = idx.search(idx.reconstruct(3), k=2)
    >>> int(ids[0, 0]), int(distances[0, 0])
    (3, 0)
    """

    def __init__(self, layout: SBSLayout, *, metadata: dict[str, Any] | None = None,
                 engine: str = "auto", device: str = "cpu") -> None:
        if not isinstance(layout, SBSLayout):
            raise TypeError(
                f"layout must be an SBSLayout (from semcbir_fast.sbs_layout), got "
                f"{type(layout).__name__}"
            )
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        self._layout = layout
        self._engine = engine
        self._device = check_device(device)
        self._lock = threading.RLock()
        self._codes = np.zeros((0, layout.stride), dtype=np.uint8)  # capacity buffer
        # sparse storage (engine "sparse", or "auto" on sparse codes): capacity buffers too
        self._sparse = engine == "sparse"
        self._sp_off = np.zeros(1, dtype=np.int64)
        self._sp_ent = np.zeros(0, dtype=entry_dtype(layout))
        self._sp_pop = np.zeros(0, dtype=np.int32)
        self._sp_nnz = 0
        self._canonical = True  # False once auto met a non-canonical code (until reset)
        # search structure of the sparse engine (_sparse_searchers): (buffer address, rows m,
        # entries of those rows, SparseSBSSearcher of rows [0, m), tail) where tail is None or
        # (rows n, SparseSBSSearcher of rows [m, n)) for rows appended since
        self._searcher: tuple[Any, ...] | None = None
        self._gpu: tuple[Any, ...] | None = None  # (key, search.gpu.DeviceCodes, rows)
        self._n = 0  # rows in use (live + tombstones)
        self._ids = np.zeros(0, dtype=np.int64)  # sorted, unique, length _n
        self._alive: np.ndarray | None = None  # None = all alive; else bool (_n,)
        self._n_dead = 0
        self._keys: list[str] | None = None
        self._next_id = 0
        self._mmap: Any = None
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.metadata.setdefault("library_version", library_version())

    # ------------------------------------------------------------------ properties
    @property
    def layout(self) -> SBSLayout:
        """Bit layout of the codes."""
        return self._layout

    @property
    def engine(self) -> str:
        """The engine that searches now: ``"dense"`` or ``"sparse"``."""
        return "sparse" if self._sparse else "dense"

    @property
    def engine_choice(self) -> str:
        """What the index was asked for: ``"auto"``, ``"dense"`` or ``"sparse"``."""
        return self._engine

    @property
    def device(self) -> str:
        """Where searches run: ``"cpu"`` or a CUDA device."""
        return self._device

    def set_engine(self, engine: str) -> None:
        """Switch to ``engine`` (``"auto"``, ``"dense"`` or ``"sparse"``), converting the
        storage when needed; results never change. ValueError for another name, and for
        ``"sparse"`` when a code is not a canonical SBS code (the index is then unchanged)."""
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        with self._lock:
            if engine == "dense" and self._sparse:
                self._to_dense_locked()
            elif engine == "sparse" and not self._sparse:
                self._check_mapped()
                try:
                    sp = to_sparse_sbs(self._codes[: self._n], self._layout)
                except ValueError as exc:
                    raise ValueError(f"engine='sparse': {exc}") from None
                self._set_sparse_locked(sp)
                self._mmap = None
            self._engine = engine
            if engine == "auto":
                self._choose_engine_locked()

    def bytes_per_image(self) -> float:
        """Bytes the stored codes take per held row (the search structures' own: inverted lists
        are counted once built; 0.0 when empty)."""
        with self._lock:
            n = self._n
            if not n:
                return 0.0
            if not self._sparse:
                return float(self._layout.stride)
            nbytes = 8 * (n + 1) + self._sp_ent.itemsize * self._sp_nnz + 4 * n
            if self._searcher is not None:
                main, tail = self._searcher[3], self._searcher[4]
                nbytes += main.inverted_bytes + (tail[1].inverted_bytes if tail else 0)
            return nbytes / n

    @property
    def has_keys(self) -> bool:
        """Whether the entries carry string keys."""
        return self._keys is not None

    @property
    def ntotal(self) -> int:
        """Rows held, including removed rows not yet compacted away."""
        return self._n

    @property
    def n_removed(self) -> int:
        """Tombstones: rows removed but still held until :meth:`compact`."""
        return self._n_dead

    @property
    def is_mmap(self) -> bool:
        """Whether the codes are read from a memory-mapped file (read-only until changed)."""
        return self._mmap is not None

    def __len__(self) -> int:
        return self._n - self._n_dead

    def __repr__(self) -> str:
        lay = self._layout
        return (
            f"SBSIndex({len(self)} codes, {lay.num_classes} classes, levels={lay.levels}"
            f"{', pyramid' if lay.pyramid else ''}, {lay.nbits} bits / {lay.stride} bytes"
            f", {self.engine} engine"
            f"{f', {self._n_dead} removed' if self._n_dead else ''})"
        )

    def __contains__(self, id: object) -> bool:
        try:
            return self._row_of(operator.index(id), self._snapshot()) is not None  # type: ignore[arg-type]
        except TypeError:
            return False

    # ------------------------------------------------------------------ snapshots
    def _snapshot(self) -> tuple[Any, np.ndarray, np.ndarray | None, int, list[str] | None]:
        """(rows, ids, alive, n_dead, keys); rows: dense codes ``(n, stride)`` or the
        :class:`SparseSBSCodes` of the sparse engine (views that later appends never touch)."""
        with self._lock:
            self._check_mapped()
            n = self._n
            if self._sparse:
                rows: Any = SparseSBSCodes(self._layout, self._sp_off[: n + 1],
                                           self._sp_ent[: self._sp_nnz], self._sp_pop[:n])
            else:
                rows = self._codes[:n]
            return rows, self._ids, self._alive, self._n_dead, self._keys

    # ------------------------------------------------------------------ storage
    def _set_sparse_locked(self, sp: SparseSBSCodes) -> None:
        self._sp_off = np.ascontiguousarray(sp.offsets, dtype=np.int64)
        self._sp_ent = np.ascontiguousarray(sp.entries)
        self._sp_pop = np.ascontiguousarray(sp.popcounts, dtype=np.int32)
        self._sp_nnz = sp.nnz
        self._sparse = True
        self._codes = np.zeros((0, self._layout.stride), dtype=np.uint8)
        self._searcher = None

    def _to_dense_locked(self) -> None:
        n = self._n
        sp = SparseSBSCodes(self._layout, self._sp_off[: n + 1], self._sp_ent[: self._sp_nnz],
                            self._sp_pop[:n])
        self._codes = sp.to_dense()
        self._mmap = None
        self._sparse = False
        self._sp_off = np.zeros(1, dtype=np.int64)
        self._sp_ent = np.zeros(0, dtype=entry_dtype(self._layout))
        self._sp_pop = np.zeros(0, dtype=np.int32)
        self._sp_nnz = 0
        self._searcher = None

    def _choose_engine_locked(self) -> None:
        """engine="auto": switch storage when the measured density asks for it."""
        if self._engine != "auto" or self._n == 0:
            return
        if self._sparse:
            density = float(self._sp_pop[: self._n].sum(dtype=np.int64)) / (
                self._n * self._layout.nbits)
            if density > 2 * AUTO_SPARSE_MAX_DENSITY:
                self._to_dense_locked()
            return
        if not self._canonical:
            return
        codes = self._codes[: self._n]
        if choose_engine(code_density(codes, self._layout)) == "sparse":
            try:
                sp = to_sparse_sbs(codes, self._layout)
            except ValueError:
                self._canonical = False
                return
            self._mmap = None
            self._set_sparse_locked(sp)

    def _sparse_of(self, new: np.ndarray) -> SparseSBSCodes | None:
        """The sparse form of codes being added to a sparse index; None when auto must turn
        dense instead (ValueError for engine="sparse")."""
        try:
            return to_sparse_sbs(new, self._layout)
        except ValueError as exc:
            if self._engine == "sparse":
                raise ValueError(f"engine='sparse': {exc}") from None
            return None

    def _gpu_of(self, rows: Any) -> Any:
        """Device-resident copies of a snapshot's codes (search.gpu.DeviceCodes), cached."""
        from ..search.gpu import DeviceCodes

        data = rows.entries if isinstance(rows, SparseSBSCodes) else rows
        key = (data.__array_interface__["data"][0], len(rows), self._device)
        with self._lock:
            cached = self._gpu
        if cached is not None and cached[0] == key:
            return cached[1]
        dev = DeviceCodes(rows, self._device)
        with self._lock:
            self._gpu = (key, dev, rows)  # rows kept: its buffer address stays unique
        return dev

    def _sparse_searchers(self, rows: SparseSBSCodes, threads: int
                          ) -> tuple[SparseSBSSearcher, int, SparseSBSSearcher | None]:
        """``(main, m, tail)``: the search structure of a snapshot, built once per content.

        Appends write past every snapshot's rows in the same buffers
        (:meth:`_append_sparse_locked`), so the structure built over rows ``[0, m)`` of a
        buffer stays valid while the buffer does; rows appended since get their own small
        structure (``tail``, rows ``[m, n)``), rebuilt when the tail changes. Once the tail
        passes ``TAIL_FRACTION`` of ``m`` (or another buffer holds the rows, after a growth,
        merge or compact), everything is rebuilt as one."""
        n, nnz = len(rows), rows.nnz
        addr = rows.entries.__array_interface__["data"][0]
        with self._lock:
            cached = self._searcher
        if cached is not None:
            c_addr, m, m_nnz, main, tail = cached
            if (c_addr == addr and m <= n and int(rows.offsets[m]) == m_nnz
                    and n - m <= self.TAIL_FRACTION * m):
                if n == m:
                    return main, m, None
                if tail is None or tail[0] != n:
                    base = int(rows.offsets[m])
                    part = SparseSBSCodes(self._layout, rows.offsets[m:] - base,
                                          rows.entries[base:nnz], rows.popcounts[m:])
                    tail = (n, SparseSBSSearcher(part, threads=threads))
                    with self._lock:
                        if self._searcher is cached:
                            self._searcher = (c_addr, m, m_nnz, main, tail)
                return main, m, tail[1]
        main = SparseSBSSearcher(rows, threads=threads)
        with self._lock:
            self._searcher = (addr, n, nnz, main, None)
        return main, n, None

    #: rows appended since the sparse search structure was built, as a share of its rows,
    #: searched through a second structure before everything is rebuilt (each costs one pass
    #: over its entries)
    TAIL_FRACTION = 0.125

    def _sparse_search(self, rows: SparseSBSCodes, q: np.ndarray, k: int, threads: int
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` rows of a sparse snapshot: the main structure's, merged with the
        tail's (rows past ``m``; equal distances keep the smaller row first)."""
        main, m, tail = self._sparse_searchers(rows, threads)
        dist, idx = main.search(q, min(k, m), threads=threads)
        if tail is None:
            return dist, idx
        td, ti = tail.search(q, min(k, len(rows) - m), threads=threads)
        d = np.concatenate([dist, td], axis=1)
        r = np.concatenate([idx, ti + m], axis=1)
        # rows of the main part come first at equal distance: a stable sort by distance
        order = np.argsort(d, axis=1, kind="stable")[:, :k]
        return (np.take_along_axis(d, order, axis=1),
                np.take_along_axis(r, order, axis=1))

    def _check_mapped(self) -> None:
        # a memory-mapped file rewritten in place by another program would make reading the
        # map crash (SIGBUS): IndexFormatError instead (container.MappedFile.check)
        if self._mmap is not None:
            self._mmap.check()

    @staticmethod
    def _row_of(id: int, snap: tuple[Any, ...]) -> int | None:
        _, ids, alive, _, _ = snap
        r = int(np.searchsorted(ids, id))
        if r < ids.shape[0] and ids[r] == id and (alive is None or alive[r]):
            return r
        return None

    def ids(self) -> np.ndarray:
        """Ids of the live entries, ascending (int64)."""
        _, ids, alive, _, _ = self._snapshot()
        return ids.copy() if alive is None else ids[alive]

    def keys(self) -> list[str]:
        """Keys of the live entries in id order (empty strings where none was given).

        Raises
        ------
        ValueError
            If the index has no keys.
        """
        _, _, alive, _, keys = self._snapshot()
        if keys is None:
            raise ValueError("this index has no keys: pass keys=... to add()")
        if alive is None:
            return list(keys)
        return [k for k, a in zip(keys, alive) if a]

    def key(self, id: int) -> str:
        """The key of entry ``id`` (``KeyError`` if absent, ``ValueError`` without keys)."""
        snap = self._snapshot()
        if snap[4] is None:
            raise ValueError("this index has no keys: pass keys=... to add()")
        r = self._row_of(operator.index(id), snap)
        if r is None:
            raise KeyError(f"id {id} is not in the index")
        return snap[4][r]

    def keys_of(self, ids: Any) -> list[str | None]:
        """Keys of several ids (e.g. a row of search results); ``None`` for id -1 padding."""
        snap = self._snapshot()
        keys = snap[4]
        if keys is None:
            raise ValueError("this index has no keys: pass keys=... to add()")
        out: list[str | None] = []
        for i in np.asarray(ids).reshape(-1).tolist():
            r = None if i < 0 else self._row_of(int(i), snap)
            out.append(None if r is None else keys[r])
        return out

    # ------------------------------------------------------------------ mutations
    def add(self, codes: Any, ids: Any = None, keys: Sequence[str] | None = None) -> np.ndarray:
        """Add codes under the given ids (default: the next free ids, ascending).

        Parameters
        ----------
        codes : array-like
            uint8 ``(n, stride)`` (or one ``(stride,)`` code) in this index's layout.
        ids : array-like of int, optional
            One int64 id per code, not already in the index and not repeated. Default:
            ``next_id, next_id + 1, ...`` where ``next_id`` is one past the largest id
            ever added.
        keys : sequence of str, optional
            One string per code (e.g. the image path). An index either has keys for every
            entry or none: the first ``add`` decides.

        Returns
        -------
        numpy.ndarray
            The int64 ids of the added codes.
        """
        new = _as_codes(codes, self._layout, "codes")
        n_new = new.shape[0]
        if keys is not None:
            if isinstance(keys, (str, bytes)):
                raise ValueError(
                    "keys must be a sequence of str (one per code), got a single string"
                )
            keys = list(keys)
            if len(keys) != n_new:
                raise ValueError(
                    f"keys must have one entry per code: {n_new} codes, {len(keys)} keys"
                )
            for k in keys:
                if not isinstance(k, str):
                    raise ValueError(  # noqa: TRY004 - the index's input errors are ValueError
                        f"keys must be str, got {type(k).__name__} {k!r}")
        with self._lock:
            if self._n > 0 and (keys is None) != (self._keys is None):
                if keys is None:
                    raise ValueError("this index has keys: pass keys=... with every add()")
                raise ValueError(
                    "this index has no keys: its first add() had none; "
                    "build a new index to store keys"
                )
            if ids is None:
                new_ids = np.arange(self._next_id, self._next_id + n_new, dtype=np.int64)
            else:
                new_ids = _as_ids(ids)
                if new_ids.shape[0] != n_new:
                    raise ValueError(
                        f"ids must have one entry per code: {n_new} codes, {new_ids.shape[0]} ids"
                    )
            if n_new == 0:
                if self._n == 0 and keys is not None:
                    self._keys = []
                return new_ids
            if np.unique(new_ids).shape[0] != n_new:
                raise ValueError("ids must be unique; the given ids repeat a value")
            if self._n_dead:
                # A removed id may be added again: drop the tombstones first.
                pos = np.searchsorted(self._ids, new_ids)
                pos_c = np.minimum(pos, max(self._n - 1, 0))
                assert self._alive is not None
                clash_dead = (self._ids[pos_c] == new_ids) & ~self._alive[pos_c]
                if np.any(clash_dead):
                    self._compact_locked()
            if self._n:
                pos = np.searchsorted(self._ids, new_ids)
                pos_c = np.minimum(pos, self._n - 1)
                dup = self._ids[pos_c] == new_ids
                if np.any(dup):
                    raise ValueError(
                        f"ids already in the index: {new_ids[dup][:10].tolist()}; remove them "
                        "first or pass other ids"
                    )
            if self._n == 0 and keys is not None:
                self._keys = []
            in_order = bool(np.all(np.diff(new_ids) > 0)) and (
                self._n == 0 or new_ids[0] > self._ids[self._n - 1]
            )
            new_sp = self._sparse_of(new) if self._sparse else None
            if self._sparse and new_sp is None:  # auto: a non-canonical code, go dense
                self._to_dense_locked()
                self._canonical = False
            if new_sp is not None:
                if in_order:
                    self._append_sparse_locked(new_sp, new_ids, keys)
                else:
                    self._merge_sparse_locked(new_sp, new_ids, keys)
            elif in_order:
                self._append_locked(new, new_ids, keys)
            else:
                self._merge_locked(new, new_ids, keys)
            self._next_id = max(self._next_id, int(new_ids.max()) + 1)
            self._choose_engine_locked()
            return new_ids

    def _append_locked(self, new: np.ndarray, new_ids: np.ndarray, keys: list[str] | None) -> None:
        self._check_mapped()
        n, m = self._n, new.shape[0]
        if self._codes.shape[0] < n + m or not self._codes.flags.writeable:
            cap = max(n + m, 2 * self._codes.shape[0], 64)
            buf = np.zeros((cap, self._layout.stride), dtype=np.uint8)
            buf[:n] = self._codes[:n]
            self._codes = buf
            self._mmap = None
        self._codes[n : n + m] = new  # rows past any snapshot: never seen by a reader
        self._ids = np.concatenate([self._ids, new_ids])
        if self._alive is not None:
            self._alive = np.concatenate([self._alive, np.ones(m, dtype=bool)])
        if self._keys is not None:
            assert keys is not None
            self._keys = self._keys + keys  # new list: snapshots keep theirs
        self._n = n + m

    def _append_meta_locked(self, new_ids: np.ndarray, keys: list[str] | None) -> None:
        m = new_ids.shape[0]
        self._ids = np.concatenate([self._ids, new_ids])
        if self._alive is not None:
            self._alive = np.concatenate([self._alive, np.ones(m, dtype=bool)])
        if self._keys is not None:
            assert keys is not None
            self._keys = self._keys + keys  # new list: snapshots keep theirs
        self._n += m

    def _append_sparse_locked(self, new: SparseSBSCodes, new_ids: np.ndarray,
                              keys: list[str] | None) -> None:
        # capacity buffers, written past every snapshot's rows and entries (never seen by a
        # reader); a full or read-only (memory-mapped) buffer is copied into a larger one
        self._check_mapped()
        n, m, nnz, add = self._n, len(new), self._sp_nnz, new.nnz

        def grown(buf: np.ndarray, used: int, need: int) -> np.ndarray:
            if buf.shape[0] >= need and buf.flags.writeable:
                return buf
            out = np.zeros(max(need, 2 * buf.shape[0], 64), dtype=buf.dtype)
            out[:used] = buf[:used]
            return out

        off = grown(self._sp_off, n + 1, n + m + 1)
        ent = grown(self._sp_ent, nnz, nnz + add)
        pop = grown(self._sp_pop, n, n + m)
        if off is not self._sp_off or ent is not self._sp_ent or pop is not self._sp_pop:
            self._mmap = None
        off[n + 1 : n + m + 1] = new.offsets[1:] + nnz
        ent[nnz : nnz + add] = new.entries[:add]
        pop[n : n + m] = new.popcounts
        self._sp_off, self._sp_ent, self._sp_pop = off, ent, pop
        self._sp_nnz = nnz + add
        self._append_meta_locked(new_ids, keys)

    def _current_sparse(self) -> SparseSBSCodes:
        n = self._n
        return SparseSBSCodes(self._layout, self._sp_off[: n + 1], self._sp_ent[: self._sp_nnz],
                              self._sp_pop[:n])

    def _merge_sparse_locked(self, new: SparseSBSCodes, new_ids: np.ndarray,
                             keys: list[str] | None) -> None:
        self._check_mapped()
        all_ids = np.concatenate([self._ids, new_ids])
        order = np.argsort(all_ids, kind="stable")
        merged = SparseSBSCodes.concat([self._current_sparse(), new]).take(order)
        self._set_sparse_locked(merged)
        self._mmap = None
        self._ids = all_ids[order]
        if self._alive is not None:
            self._alive = np.concatenate([self._alive, np.ones(len(new), dtype=bool)])[order]
        if self._keys is not None:
            assert keys is not None
            both = self._keys + keys
            self._keys = [both[i] for i in order.tolist()]
        self._n = self._ids.shape[0]

    def _merge_locked(self, new: np.ndarray, new_ids: np.ndarray, keys: list[str] | None) -> None:
        self._check_mapped()
        n = self._n
        all_ids = np.concatenate([self._ids, new_ids])
        order = np.argsort(all_ids, kind="stable")
        codes = np.concatenate([self._codes[:n], new])[order]
        self._codes = np.ascontiguousarray(codes)
        self._mmap = None
        self._ids = all_ids[order]
        if self._alive is not None:
            self._alive = np.concatenate([self._alive, np.ones(new.shape[0], dtype=bool)])[order]
        if self._keys is not None:
            assert keys is not None
            merged = self._keys + keys
            self._keys = [merged[i] for i in order.tolist()]
        self._n = self._ids.shape[0]

    def remove(self, ids: Any, *, missing_ok: bool = False) -> int:
        """Remove entries by id (tombstones; see :meth:`compact`).

        Parameters
        ----------
        ids : int or array-like of int
        missing_ok : bool, default False
            Ignore ids that are not in the index instead of raising ``KeyError``.

        Returns
        -------
        int
            Number of entries removed.
        """
        rm = np.unique(_as_ids(ids))
        with self._lock:
            if rm.size == 0 or self._n == 0:
                if rm.size and not missing_ok:
                    raise KeyError(f"ids not in the index: {rm[:10].tolist()}")
                return 0
            pos = np.minimum(np.searchsorted(self._ids, rm), self._n - 1)
            alive = self._alive if self._alive is not None else np.ones(self._n, dtype=bool)
            found = (self._ids[pos] == rm) & alive[pos]
            if not missing_ok and not np.all(found):
                raise KeyError(
                    f"ids not in the index: {rm[~found][:10].tolist()}; pass missing_ok=True "
                    "to ignore them"
                )
            rows = pos[found]
            if rows.size == 0:
                return 0
            alive = alive.copy()  # copy-on-write: running queries keep their snapshot
            alive[rows] = False
            self._alive = alive
            self._n_dead += int(rows.size)
            return int(rows.size)

    def compact(self) -> None:
        """Drop removed rows and free their memory (keeps ids, keys and their order)."""
        with self._lock:
            self._compact_locked()

    def _compact_locked(self) -> None:
        if self._alive is None or self._n_dead == 0:
            self._alive, self._n_dead = None, 0
            return
        self._check_mapped()
        keep = self._alive
        if self._sparse:
            self._set_sparse_locked(self._current_sparse().take(keep))
        else:
            self._codes = np.ascontiguousarray(self._codes[: self._n][keep])
        self._mmap = None
        self._ids = self._ids[keep]
        if self._keys is not None:
            self._keys = [k for k, a in zip(self._keys, keep.tolist()) if a]
        self._n = int(self._ids.shape[0])
        self._alive, self._n_dead = None, 0

    def reset(self) -> None:
        """Remove every entry (keeps the layout, metadata and ``next_id``)."""
        with self._lock:
            self._codes = np.zeros((0, self._layout.stride), dtype=np.uint8)
            self._ids = np.zeros(0, dtype=np.int64)
            self._alive, self._n_dead, self._n, self._mmap = None, 0, 0, None
            if self._sparse:
                self._set_sparse_locked(SparseSBSCodes.empty(self._layout))
            self._sparse = self._engine == "sparse"
            self._canonical = True
            self._searcher = self._gpu = None
            self._keys = [] if self._keys is not None else None

    # ------------------------------------------------------------------ queries
    def reconstruct(self, id: int) -> np.ndarray:
        """A copy of the code stored under ``id``: uint8 ``(stride,)``.

        Raises
        ------
        KeyError
            If ``id`` is not in the index (or was removed).
        """
        try:
            i = operator.index(id)
        except TypeError:
            raise ValueError(f"id must be an int, got {type(id).__name__} {id!r}") from None
        snap = self._snapshot()
        r = self._row_of(i, snap)
        if r is None:
            raise KeyError(f"id {i} is not in the index")
        return _dense_rows(snap[0], np.array([r]))[0]

    def reconstruct_batch(self, ids: Any) -> np.ndarray:
        """Codes of several ids, uint8 ``(len(ids), stride)`` (``KeyError`` if one is absent)."""
        arr = _as_ids(ids)
        snap = self._snapshot()
        rows = np.empty(arr.shape[0], dtype=np.int64)
        for j, i in enumerate(arr.tolist()):
            r = self._row_of(i, snap)
            if r is None:
                raise KeyError(f"id {i} is not in the index")
            rows[j] = r
        return _dense_rows(snap[0], rows)

    def search(self, queries: Any, k: int, *, threads: int = 0,
               return_penalised: bool = False) -> tuple[np.ndarray, ...]:
        """The ``k`` nearest entries of each query in Hamming distance.

        Parameters
        ----------
        queries : array-like
            uint8 codes ``(nq, stride)`` or one code ``(stride,)``.
        k : int
            Results per query, ``1 <= k <= 2**24`` and ``nq * k <= 2**28`` (ValueError
            otherwise: search more queries in several calls). Missing slots
            (``k > len(self)``) hold id ``-1`` and distance ``INT32_MAX``; only
            ``min(k, len(self))`` are searched.
        threads : int, default 0
            Threads for the scan (0 = all cores, at most 1024); results never depend on it.
        return_penalised : bool
            Also return an all-False ``(nq, k)`` mask (SBS has no filter; the index
            interface is the same for every kind).

        Returns
        -------
        distances, ids[, penalised]
            int32 and int64 ``(nq, k)``, each row by ascending distance, ties by smaller id.
        """
        out = self._search(queries, k, threads)
        return (*out, np.zeros(out[1].shape, dtype=bool)) if return_penalised else out

    def _search(self, queries: Any, k: Any, threads: int) -> tuple[np.ndarray, np.ndarray]:
        from .._convert import check_k, check_threads
        from ..hamming import hamming_topk

        q = _as_codes(queries, self._layout, "queries")
        k = check_k(k, q.shape[0])
        threads = check_threads(threads)
        codes, ids, alive, n_dead, _ = self._snapshot()
        nq = q.shape[0]
        n = len(codes)
        if n == 0:
            return (
                np.full((nq, k), _INT32_MAX, dtype=np.int32),
                np.full((nq, k), -1, dtype=np.int64),
            )
        # Tombstones can take at most n_dead slots: ask for that many more, then drop them.
        kk = min(k + n_dead, n)
        if self._device != "cpu":
            dist, rows = self._gpu_of(codes).search(q, kk)
        elif isinstance(codes, SparseSBSCodes):
            dist, rows = self._sparse_search(codes, q, kk, threads)
        else:
            dist, rows = hamming_topk(q, codes, kk, threads=threads)
        out_d = np.full((nq, k), _INT32_MAX, dtype=np.int32)
        out_i = np.full((nq, k), -1, dtype=np.int64)
        if alive is None:
            m = min(k, kk)
            out_d[:, :m] = dist[:, :m]
            out_i[:, :m] = ids[rows[:, :m]]
            return out_d, out_i
        ok = alive[rows]
        for r in range(nq):
            sel = np.flatnonzero(ok[r])[:k]
            out_d[r, : sel.size] = dist[r, sel]
            out_i[r, : sel.size] = ids[rows[r, sel]]
        return out_d, out_i

    def range_search(
        self, queries: Any, radius: int, *, threads: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All entries within Hamming distance ``radius`` (inclusive) of each query.

        Parameters
        ----------
        queries : array-like
            uint8 codes ``(nq, stride)`` or one code ``(stride,)``.
        radius : int
            Largest distance returned (``distance <= radius``; note that faiss's binary
            range search is strict, ``<``).
        threads : int, default 0
            Threads for the scan (0 = all cores).

        Returns
        -------
        lims, distances, ids
            faiss layout: the results of query ``i`` are
            ``distances[lims[i]:lims[i+1]]`` (int32) and ``ids[lims[i]:lims[i+1]]``
            (int64), sorted by ascending distance, ties by smaller id; ``lims`` is int64
            ``(nq + 1,)``.
        """
        from .._convert import check_threads

        q = _as_codes(queries, self._layout, "queries")
        radius = check_int(radius, "radius", 0)
        radius = min(radius, 8 * self._layout.stride)  # no distance is larger
        threads = check_threads(threads)
        codes, ids, alive, _, _ = self._snapshot()
        nq, n = q.shape[0], len(codes)
        lims = np.zeros(nq + 1, dtype=np.int64)
        if n == 0 or nq == 0:
            return lims, np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int64)
        chunk = max(1, (1 << 24) // n)  # <= 64 MB of int32 distances at a time
        out_d: list[np.ndarray] = []
        out_i: list[np.ndarray] = []
        for s in range(0, nq, chunk):
            d = _distances(q[s : s + chunk], codes, threads)
            hit = d <= radius
            if alive is not None:
                hit &= alive[None, :]
            for r in range(d.shape[0]):
                rows = np.flatnonzero(hit[r])
                dr = d[r, rows]
                order = np.argsort(dr, kind="stable")  # rows ascend with id: ties by id
                out_d.append(dr[order].astype(np.int32, copy=False))
                out_i.append(ids[rows[order]])
                lims[s + r + 1] = lims[s + r] + rows.size
        return lims, np.concatenate(out_d), np.concatenate(out_i)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the live entries to ``path`` atomically (see the module docstring).

        Parameters
        ----------
        path : str or os.PathLike
            Destination file; its folder must exist. An existing file is replaced only once
            the new one is completely written.

        Returns
        -------
        pathlib.Path
        """
        meta = json_metadata(self.metadata)
        codes, ids, alive, _, keys = self._snapshot()
        if alive is not None:
            codes = codes.take(alive) if isinstance(codes, SparseSBSCodes) else codes[alive]
            ids = ids[alive]
            if keys is not None:
                keys = [k for k, a in zip(keys, alive.tolist()) if a]
        if isinstance(codes, SparseSBSCodes):
            sections: list[tuple[str, Any]] = [
                ("sparse_offsets", codes.offsets.astype("<i8")),
                ("sparse_entries", codes.entries.astype(codes.entries.dtype.newbyteorder("<"))),
                ("sparse_popcounts", codes.popcounts.astype("<i4")),
                ("ids", ids.astype("<i8"))]
        else:
            sections = [("codes", codes), ("ids", ids.astype("<i8"))]
        header = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "layout": self._layout.to_dict(),
            "count": int(ids.shape[0]),
            "next_id": int(self._next_id),
            **({"engine": self._engine, "storage": "sparse"}
               if isinstance(codes, SparseSBSCodes) else
               ({} if self._engine == "auto" else {"engine": self._engine})),
        }
        return write_index(path, header, sections, keys, meta)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, mmap: bool = True, verify: bool = True,
        engine: str | None = None, device: str = "cpu",
    ) -> SBSIndex:
        """Load an index written by :meth:`save`.

        Parameters
        ----------
        path : str or os.PathLike
        mmap : bool, default True
            Map the file into memory instead of reading it: loading is O(1) in the number
            of codes, pages are read on demand and shared between processes. The codes are
            read-only; the first ``add`` (or ``compact``) copies them to memory. Keys and
            ids are read into memory either way. Replacing the file by rename (as ``save``
            does) leaves a loaded index valid; a file rewritten *in place* by another
            program makes the next call raise ``IndexFormatError`` (see
            :mod:`semcbir_fast.index.container`) instead of crashing the process.
        verify : bool, default True
            Check the BLAKE2b checksum of the whole file (reads every byte once; about a
            second per GB). Structural checks run either way.
        engine : {"auto", "dense", "sparse"}, optional
            Override the engine recorded in the file (the storage is converted on load).
        device : str, default "cpu"
            Where searches run (``"cuda"``: see the class).

        Raises
        ------
        FileNotFoundError
            If ``path`` does not exist.
        IndexFormatError
            (a ``ValueError``) if the file is not an index, is truncated or corrupted, or
            was written by a newer format version.
        """
        if engine is not None and engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        device = check_device(device)
        idx = load_with(path, cls._from_container, mmap=mmap, verify=verify)
        idx._device = device
        if engine is not None:
            idx.set_engine(engine)
        return idx

    @classmethod
    def _from_container(cls, c: Container) -> SBSIndex:
        layout, count, has_keys, next_id, metadata = _check_header(c)
        stride = layout.stride
        engine = c.header.get("engine", "auto")
        storage = c.header.get("storage", "dense")
        if engine not in ENGINES or storage not in ("dense", "sparse") or (
                storage == "sparse" and engine == "dense"):
            raise c.error(f"corrupted header: engine {engine!r} / storage {storage!r}")
        sparse = None
        if storage == "sparse":
            off = c.array("sparse_offsets", "<i8", count + 1)
            nnz = int(off[-1]) if count + 1 else 0
            if nnz < 0 or nnz > c.nbytes("sparse_entries"):
                raise c.error(f"corrupted: sparse_offsets end at {nnz}")
            sparse = SparseSBSCodes(
                layout, off.astype(np.int64, copy=False),
                c.array("sparse_entries", entry_dtype(layout).newbyteorder("<"), nnz).view(
                    entry_dtype(layout)),
                c.array("sparse_popcounts", "<i4", count).astype(np.int32, copy=False))
            try:
                sparse.check()
            except ValueError as exc:
                raise c.error(f"corrupted: {exc}") from None
            codes = np.zeros((0, stride), dtype=np.uint8)
        else:
            codes = c.array("codes", np.uint8, count * stride).reshape(count, stride)
        # read-only when memory-mapped: the first add() copies it
        ids = c.array("ids", "<i8", count).astype(np.int64)
        if count > 1 and not np.all(ids[1:] > ids[:-1]):
            raise c.error("corrupted: ids are not strictly increasing")
        if count and next_id is not None and next_id <= int(ids[-1]):
            raise c.error(f"corrupted header: next_id {next_id} is not above the largest id "
                          f"{int(ids[-1])}")
        keys = c.keys(count) if has_keys else None
        if stride and count and layout.stride > layout.nbytes \
                and codes[:, layout.nbytes :].any():
            raise c.error("corrupted: code padding bytes are not zero")
        idx = cls(layout, metadata=metadata, engine=engine)
        if sparse is not None:
            idx._set_sparse_locked(sparse)
        else:
            idx._sparse = False
        idx._codes = codes
        idx._ids = ids
        idx._n = count
        idx._keys = keys
        idx._next_id = next_id if next_id is not None else (int(ids[-1]) + 1 if count else 0)
        idx._mmap = c.keep
        return idx

    @property
    def signature(self) -> Any:
        """The :class:`~semcbir_fast.signatures.SBSSignature` of the codes (layout and the
        recorded void label)."""
        from ..signatures import SBSSignature

        return SBSSignature.from_index(self._layout, self.metadata)

    def describe(self) -> str:
        """One line: what the codes are."""
        return self.signature.describe()

    def storage_lines(self) -> list[str]:
        """How the entries are stored (for ``semcbir info``)."""
        lay = self._layout
        what = "sparse cells + offsets + popcounts" if self._sparse else "dense codes"
        return [(f"codes     {lay.num_classes} classes x {lay.blocks} blocks (levels="
                 f"{lay.levels}{', pyramid' if lay.pyramid else ''}) = {lay.nbits} bits, "
                 f"{lay.nbytes} bytes, stride {lay.stride}"),
                f"engine    {self.engine} (engine={self._engine}, device={self._device})",
                f"bytes     {self.bytes_per_image():,.1f} per image ({what})"]

    def info(self) -> dict[str, Any]:
        """A plain summary: layout, counts, key presence and metadata."""
        return {
            "count": len(self),
            "engine": self.engine,
            "engine_choice": self._engine,
            "bytes_per_image": round(self.bytes_per_image(), 1),
            "removed": self._n_dead,
            "next_id": self._next_id,
            "has_keys": self.has_keys,
            "layout": self._layout.to_dict(),
            "metadata": dict(self.metadata),
        }


def _dense_rows(codes: Any, rows: np.ndarray) -> np.ndarray:
    """Copies of the dense codes of ``rows`` of a snapshot (dense array or sparse codes)."""
    if isinstance(codes, SparseSBSCodes):
        return codes.take(rows).to_dense()
    return np.array(codes[rows], copy=True)


def _distances(q: np.ndarray, codes: Any, threads: int) -> np.ndarray:
    """int32 ``(nq, n)`` Hamming distances to every row of a snapshot; sparse rows are made
    dense 64 MB at a time."""
    from ..hamming import hamming_distances

    if not isinstance(codes, SparseSBSCodes):
        return hamming_distances(q, codes, threads=threads)
    n = len(codes)
    out = np.empty((q.shape[0], n), dtype=np.int32)
    step = max(1, (1 << 26) // codes.layout.stride)
    for r0 in range(0, n, step):
        part = codes.take(np.arange(r0, min(n, r0 + step))).to_dense(threads=threads)
        out[:, r0 : r0 + part.shape[0]] = hamming_distances(q, part, threads=threads)
    return out


def _check_header(c: Container) -> tuple[SBSLayout, int, bool, int | None, dict[str, Any]]:
    """Layout, count, has_keys, next_id (None when absent) and metadata of a header, every
    value checked (``IndexFormatError``)."""
    path, header = c.path, c.header
    if header.get("format") != FORMAT_NAME:
        raise IndexFormatError(path, f"header is not a {FORMAT_NAME} header")
    version = header.get("version")
    if header_int(version) != FORMAT_VERSION:
        raise IndexFormatError(path, f"header version {version!r} != {FORMAT_VERSION}")
    lay = header.get("layout")
    count = header_int(header.get("count"))
    if count is None:
        raise IndexFormatError(path, f"corrupted header: count {header.get('count')!r}")
    if not isinstance(lay, dict):
        raise IndexFormatError(path, "corrupted header: no layout")
    pyramid = lay.get("pyramid", False)
    if not isinstance(pyramid, bool):
        raise IndexFormatError(path, f"corrupted header: layout pyramid {pyramid!r}")
    try:
        layout = sbs_layout(lay["num_classes"], lay["levels"], pyramid)
    except (KeyError, ValueError, TypeError) as exc:
        raise IndexFormatError(path, f"corrupted header: bad layout ({exc})") from None
    for key in ("nbits", "nbytes", "stride"):
        if lay.get(key) != getattr(layout, key) or isinstance(lay.get(key), bool):
            raise IndexFormatError(
                path,
                f"layout {key}={lay.get(key)!r} does not match {getattr(layout, key)} "
                "computed by this library for the same classes/levels; the file comes from an "
                "incompatible writer",
            )
    if lay.get("bitorder", "big") != "big":
        raise IndexFormatError(path, f"unsupported bit order {lay.get('bitorder')!r}")
    if layout.nbytes > MAX_CODE_BYTES:  # no query could be encoded (and its scratch memory)
        raise IndexFormatError(path, f"corrupted header: codes of {layout.nbytes:,} bytes, "
                               f"more than the {MAX_CODE_BYTES:,} an SBS code may have")
    has_keys = header.get("has_keys", False)
    if not isinstance(has_keys, bool):
        raise IndexFormatError(path, f"corrupted header: has_keys {has_keys!r}")
    # next_id is one past the largest id ever added: 2**63 once id 2**63 - 1 was used
    next_id = header.get("next_id")
    if next_id is not None and header_int(next_id, 0, 1 << 63) is None:
        raise IndexFormatError(path, f"corrupted header: next_id {next_id!r} (expected an "
                               "integer in [0, 2**63])")
    metadata = header.get("metadata", {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise IndexFormatError(path, f"corrupted header: metadata is a "
                               f"{type(metadata).__name__}, not an object")
    return layout, count, has_keys, next_id, metadata
