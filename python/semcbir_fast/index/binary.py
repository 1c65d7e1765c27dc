"""A searchable, persistent collection of arbitrary binary codes (learned hash codes, ITQ,
their concatenation with SBS bits) with the signature that made them: :class:`BinaryIndex`.

:class:`~semcbir_fast.index.SBSIndex` is bound to the SBS layout (``5 * M * 4**n`` bits);
the codes here have any number of bits (``nbits``), packed as SPEC.md section 1 packs SBS
codes (bit ``i`` in byte ``i // 8``, most significant bit first, rows of ``stride`` bytes, a
multiple of 8, padding zero) and are searched by the same exact SIMD
:func:`~semcbir_fast.hamming_topk` (results ``(distances, ids)`` int32 / int64, ascending,
ties by the smaller id, ``k > count`` padded with id -1 and ``INT32_MAX``).

Ids are the row numbers ``0 .. count - 1`` in insertion order (append-only, like
:class:`~semcbir_fast.index.DenseIndex`). File: the container of
:mod:`semcbir_fast.index.container`, header ``format`` ``"semcbir-binary-index"`` with the
signature's header (``signature``, ``params``, ...), ``nbits``, ``nbytes``, ``stride``,
``count``, ``has_keys``, ``metadata``; sections ``codes`` (``count x stride`` uint8) and,
with keys, ``key_offsets`` / ``key_blob``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._convert import check_int, check_threads
from ._keys import AppendOnlyKeys, check_new_keys
from .container import (
    CONTAINER_VERSION,
    Container,
    header_int,
    json_metadata,
    library_version,
    load_with,
    write_index,
)
from .sbs import check_device

__all__ = ["FORMAT_NAME", "BinaryIndex"]

FORMAT_NAME = "semcbir-binary-index"
FORMAT_VERSION = CONTAINER_VERSION
_INT32_MAX = np.iinfo(np.int32).max
#: Most bits a code of this index may have (the SBS encoder's 4 MiB code limit).
MAX_BITS = 8 * 2**22


def _stride(nbits: int) -> int:
    return (nbits + 63) // 64 * 8


class BinaryIndex(AppendOnlyKeys):
    """Exact Hamming index of packed binary codes of ``nbits`` bits.

    Parameters
    ----------
    nbits : int
        Meaningful bits per code (``stride = ceil(nbits / 8)`` rounded up to 8 bytes).
    signature : Signature, optional
        What encodes queries like the database (written into the file header).
    metadata : dict, optional
        JSON-serialisable description saved with the index.
    device : str, default "cpu"
        Where searches run: ``"cpu"`` (SIMD :func:`~semcbir_fast.hamming_topk`) or a CUDA
        device (``"cuda"``, ``"cuda:N"``): the codes are uploaded once per content and
        searched by :class:`~semcbir_fast.search.gpu.DeviceCodes`, with the same results.
    """

    def __init__(self, nbits: int, *, signature: Any = None,
                 metadata: dict[str, Any] | None = None, device: str = "cpu") -> None:
        self.nbits = check_int(nbits, "nbits", 1, MAX_BITS)
        self.nbytes = (self.nbits + 7) // 8
        self.stride = _stride(self.nbits)
        self._signature = signature
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.metadata.setdefault("library_version", library_version())
        self._lock = threading.RLock()
        self._codes = np.zeros((0, self.stride), dtype=np.uint8)
        self._keys: list[str] | None = None
        self._mmap: Any = None
        self._device = check_device(device)
        self._device_codes: Any = None  # search.gpu.DeviceCodes of self._codes, built lazily

    # ------------------------------------------------------------------ properties
    @property
    def signature(self) -> Any:
        return self._signature

    @property
    def codes(self) -> np.ndarray:
        """The stored codes ``(count, stride)`` (read-only when memory-mapped)."""
        return self._codes

    @property
    def device(self) -> str:
        """Where searches run: ``"cpu"`` or a CUDA device."""
        return self._device

    def __len__(self) -> int:
        return int(self._codes.shape[0])

    def __repr__(self) -> str:
        return f"BinaryIndex({len(self)} codes, {self.nbits} bits / {self.stride} bytes)"

    def describe(self) -> str:
        if self._signature is not None:
            return self._signature.describe()
        return f"binary codes, {self.nbits} bits / {self.stride} bytes, Hamming"

    def storage_lines(self) -> list[str]:
        line = (f"codes     {len(self):,} x {self.nbits} bits ({self.nbytes} bytes, stride "
                f"{self.stride})")
        return [line]

    # ------------------------------------------------------------------ checks
    def _as_codes(self, codes: Any, name: str) -> np.ndarray:
        if type(codes).__module__.startswith("torch"):
            codes = codes.detach().cpu().numpy()
        a = np.asarray(codes)
        if a.dtype != np.uint8:
            raise ValueError(f"{name} must be uint8 packed codes, got dtype {a.dtype}")
        if a.ndim == 1:
            a = a.reshape(1, -1)
        if a.ndim != 2 or a.shape[1] != self.stride:
            raise ValueError(f"{name} must have shape (n, {self.stride}) ({self.nbits} bits, "
                             f"stride {self.stride} bytes), got shape {a.shape}; encode them "
                             "with the index's signature")
        a = np.ascontiguousarray(a)
        if a.size and self.stride * 8 > self.nbits:
            pad = a[:, self.nbytes - 1:].copy()
            tail_bits = self.nbytes * 8 - self.nbits
            pad[:, 0] &= (1 << tail_bits) - 1  # the unused low bits of the last byte
            if pad.any():
                raise ValueError(f"{name}: bits past the first {self.nbits} must be zero "
                                 "(padding)")
        return a

    # ------------------------------------------------------------------ mutations
    def add(self, codes: Any, *, keys: Sequence[str] | None = None) -> np.ndarray:
        """Append codes (uint8 ``(n, stride)``); returns their int64 ids. ``keys``: one str
        per code (an index has keys for every entry or for none)."""
        new = self._as_codes(codes, "codes")
        m = new.shape[0]
        keys = check_new_keys(keys, m, "code")
        with self._lock:
            n = len(self)
            self._check_keys_locked(keys)
            if m:
                self._codes = np.ascontiguousarray(np.concatenate([self._codes, new]))
                self._mmap = None
                self._device_codes = None
            self._append_keys_locked(keys, m)
            return np.arange(n, n + m, dtype=np.int64)

    # ------------------------------------------------------------------ queries
    def reconstruct(self, id: int) -> np.ndarray:
        """A copy of the code of ``id`` ``(stride,)`` (``KeyError`` if absent)."""
        return self._codes[self._checked_ids([id])[0]].copy()

    def reconstruct_batch(self, ids: Any) -> np.ndarray:
        """Codes of several ids ``(len(ids), stride)``."""
        return self._codes[self._checked_ids(ids)].copy()

    def search(self, queries: Any, k: int, *, threads: int = 0,
               return_penalised: bool = False) -> tuple[np.ndarray, ...]:
        """The ``k`` nearest codes of each query in Hamming distance:
        ``(distances, ids[, penalised])``, int32 / int64 ``(nq, k)`` (penalised: all
        False, no filter)."""
        from .._convert import check_k
        from ..hamming import hamming_topk

        q = self._as_codes(queries, "queries")
        k = check_k(k, q.shape[0])
        t = check_threads(threads)
        with self._lock:
            db = self._codes
        nq = q.shape[0]
        if db.shape[0] == 0:
            d = np.full((nq, k), _INT32_MAX, dtype=np.int32)
            i = np.full((nq, k), -1, dtype=np.int64)
        elif self._device != "cpu":
            d, i = self._on_device(db).search(q, k)
        else:
            d, i = hamming_topk(q, db, k, threads=t)
        return (d, i, np.zeros(d.shape, dtype=bool)) if return_penalised else (d, i)

    def _on_device(self, db: np.ndarray) -> Any:
        """The device-resident copy of ``db`` (the codes of one snapshot), built once."""
        from ..search.gpu import DeviceCodes

        with self._lock:
            cached = self._device_codes
        if cached is not None and cached[0] is db:
            return cached[1]
        dev = DeviceCodes(db, self._device)
        with self._lock:
            if self._codes is db:
                self._device_codes = (db, dev)
        return dev

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the index to one file atomically."""
        meta = json_metadata(self.metadata)
        with self._lock:
            codes, keys = self._codes, self._keys
        sh: dict[str, Any] = {"signature": None}
        if self._signature is not None:
            sh = self._signature.to_header()
        header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, **sh,
                  "nbits": self.nbits, "nbytes": self.nbytes, "stride": self.stride,
                  "count": len(codes)}
        return write_index(path, header, [("codes", codes)], keys, meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, mmap: bool = True,
             verify: bool = True, device: str = "cpu") -> BinaryIndex:
        """Load an index written by :meth:`save` (``IndexFormatError`` when the file is not
        one, or is truncated / corrupted / newer); ``device`` as in the constructor."""
        device = check_device(device)
        idx = load_with(path, cls._from_container, mmap=mmap, verify=verify)
        idx._device = device
        return idx

    @classmethod
    def _from_container(cls, c: Container) -> BinaryIndex:
        from ..signatures import get_signature

        h = c.header
        if h.get("format") != FORMAT_NAME:
            raise c.error(f"header is not a {FORMAT_NAME} header")
        if header_int(h.get("version")) != FORMAT_VERSION:
            raise c.error(f"header version {h.get('version')!r} != {FORMAT_VERSION}")
        nbits, count = header_int(h.get("nbits"), 1, MAX_BITS), header_int(h.get("count"))
        if nbits is None or count is None:
            raise c.error(f"corrupted header: nbits {h.get('nbits')!r}, count "
                          f"{h.get('count')!r}")
        if h.get("stride") != _stride(nbits) or h.get("nbytes") != (nbits + 7) // 8:
            raise c.error(f"corrupted header: stride / nbytes do not match {nbits} bits")
        meta = h.get("metadata") or {}
        if not isinstance(meta, dict):
            raise c.error("corrupted header: metadata is not an object")
        sig = None
        if h.get("signature") is not None:
            try:
                sig = get_signature(h.get("signature")).from_header(h, {})
            except (KeyError, TypeError, ValueError) as exc:
                raise c.error(f"corrupted header: bad signature settings ({exc})") from None
            if getattr(sig, "nbits", nbits) != nbits:
                raise c.error(f"corrupted header: the signature makes {sig.nbits}-bit codes, "
                              f"the index holds {nbits}")
        idx = cls(nbits, signature=sig, metadata=meta)
        stride = idx.stride
        codes = c.array("codes", np.uint8, count * stride).reshape(count, stride)
        if count and stride > idx.nbytes and codes[:, idx.nbytes:].any():
            raise c.error("corrupted: code padding bytes are not zero")
        idx._codes = codes
        idx._keys = c.keys(count) if h.get("has_keys") else None
        idx._mmap = c.keep
        return idx

    def info(self) -> dict[str, Any]:
        sig = self._signature
        return {"count": len(self), "nbits": self.nbits, "nbytes": self.nbytes,
                "stride": self.stride, "has_keys": self.has_keys,
                "params": None if sig is None else sig.to_header().get("params"),
                "metadata": dict(self.metadata)}
