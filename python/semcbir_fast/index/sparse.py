"""A searchable, persistent collection of sparse float signatures (SBoVP, hybrid, any
:class:`~semcbir_fast.signatures._local.LocalSignature`) with the images' keys.

:class:`SparseSignatureIndex` is to the local-feature signatures what
:class:`~semcbir_fast.index.SBSIndex` is to SBS codes: it keeps the signature object (its
parameters and learned state, e.g. the visual vocabulary: everything a query needs to be
encoded the same way as the database), the signatures as one CSR matrix, the semantic
histograms of paper 001's filter, and optional string keys (image paths). It saves to and
loads from one checksummed file (the container of :mod:`semcbir_fast.index.container`, header
``format`` ``"semcbir-local-index"``), memory-mapped by default. ``LocalIndex`` is its former
name.

Ids are the row numbers ``0 .. len - 1`` in insertion order; the index is append-only
(build a new one to drop images). Ranking: exact L2 between signatures through the C++
sparse search, then paper 001's semantic-histogram filter when the signature's
``filter_epsilon`` is set: results are ordered by ``(penalised, distance, id)``.

File sections: ``indptr`` (int64, ``count + 1``), ``indices`` (int64, ``nnz``), ``data``
(float32, ``nnz``), ``histograms`` (float32, ``count x num_classes``), the signature's state
sections (SBoVP: ``centroids``, float32 ``L x D'``) and, with keys, ``key_offsets`` /
``key_blob``. The header holds the signature's header (``signature``, ``params``, SBoVP's
``vocabulary``), ``count``, ``nnz``, ``has_keys``, ``metadata`` and ``library_version``.

Threads: searches may run from several threads at once; ``add`` swaps in new arrays under a
lock, and a search works on the arrays it started with.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import _backend
from .._convert import check_k, check_threads
from ..layout import MAX_CLASSES
from ..semantic_histogram import filtered_topk
from ..sparse_l2 import csr_rows
from ._keys import AppendOnlyKeys, check_new_keys
from .container import (
    CONTAINER_VERSION,
    Container,
    IndexFormatError,
    header_int,
    json_metadata,
    library_version,
    load_with,
    write_index,
)

__all__ = ["FORMAT_NAME", "LocalIndex", "SparseSignatureIndex"]

FORMAT_NAME = "semcbir-local-index"
FORMAT_VERSION = CONTAINER_VERSION
#: Most columns a stored signature may have (the C++ search takes int64 column numbers).
MAX_COLUMNS = 1 << 62
#: Most columns per class of a signature whose width the data fix (hybrid: the descriptor
#: width; the widest, AKAZE's, is 488 bits): a dense row of a query or a reconstructed
#: entry then takes at most ``num_classes * 4 KiB``.
MAX_DATA_WIDTH = 1024


def _signature(signature: Any, kwargs: dict[str, Any]) -> Any:
    """A local signature object from an object or a registry name + keyword settings."""
    from ..signatures import get_signature, list_signatures
    from ..signatures._local import LocalSignature

    if isinstance(signature, LocalSignature):
        if kwargs:
            raise ValueError(f"pass settings in the signature object, not as keywords "
                             f"({sorted(kwargs)})")
        return signature
    local = tuple(n for n in list_signatures() if issubclass(get_signature(n), LocalSignature))
    if signature not in local:
        raise ValueError(f"signature must be one of {local} (or such a signature object), "
                         f"got {signature!r}")
    cls = get_signature(signature)
    if kwargs.get("vocabulary") is not None and cls.state_flags is None:
        raise ValueError(f"signature {cls.name!r} takes no vocabulary")
    if kwargs.get("vocabulary", 0) is None:
        del kwargs["vocabulary"]
    num_classes = kwargs.pop("num_classes")
    ignore_index = kwargs.pop("ignore_index", None)
    own = {f.name for f in dataclasses.fields(cls.Params)} | {"vocabulary"}
    # the former constructor took every kind's settings and ignored the others' ones
    return cls(num_classes=num_classes, ignore_index=ignore_index,
               **{k: v for k, v in kwargs.items() if k in own})


class SparseSignatureIndex(AppendOnlyKeys):
    """Exact L2 index of sparse signatures with their histograms, signature and keys.

    Parameters
    ----------
    signature : LocalSignature or str
        A fitted signature object (``create_signature("sbovp", num_classes=151)`` after
        ``fit``), or, as before, a registry name with its settings as keywords
        (``num_classes``, ``method``, ``vocabulary``, ``n``, ``normalize``, ...).
    metadata : dict, optional
        JSON-serialisable description saved with the index (model, class names, ...).

    Examples
    --------
    >>> sig = create_signature("hybrid", num_classes=151)          # doctest: +SKIP
    >>> index = SparseSignatureIndex(sig)                          # doctest: +SKIP
    >>> index.add(sig.encode(inputs), keys=paths)                  # doctest: +SKIP
    >>> distances, ids = index.search(sig.encode(queries), k=10)    # doctest: +SKIP
    """

    def __init__(self, signature: Any, *, metadata: dict[str, Any] | None = None,
                 **settings: Any) -> None:
        sig = _signature(signature, settings)
        sig.require_fitted()
        self.signature = sig
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.metadata.setdefault("library_version", library_version())
        self._lock = threading.RLock()
        self._cols = sig.columns()
        self._indptr = np.zeros(1, dtype=np.int64)
        self._indices = np.zeros(0, dtype=np.int64)
        self._data = np.zeros(0, dtype=np.float32)
        self._hist = np.zeros((0, sig.num_classes), dtype=np.float32)
        self._keys: list[str] | None = None
        self._search_index: Any = None  # the C++ SparseL2Index, built on the first search
        self._mmap: Any = None

    # ------------------------------------------------------------------ properties
    def __len__(self) -> int:
        return int(self._indptr.shape[0] - 1)

    def __getattr__(self, name: str) -> Any:
        # the former LocalIndex exposed its settings as attributes (index.n, ...)
        sig = self.__dict__.get("signature")
        if sig is not None and not name.startswith("_") and hasattr(sig.params, name):
            return getattr(sig.params, name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    @property
    def num_classes(self) -> int:
        return self.signature.num_classes

    @property
    def method(self) -> str:
        """Local-feature method of the signature."""
        return self.signature.feature_method

    @property
    def vocabulary(self) -> Any:
        """The signature's vocabulary (SBoVP), else None."""
        return getattr(self.signature, "vocabulary", None)

    @property
    def epsilon(self) -> float | None:
        """The histogram-filter threshold in force (None = plain L2 ranking)."""
        return self.signature.filter_epsilon

    @property
    def nnz(self) -> int:
        """Stored non-zeros of all signatures."""
        return int(self._indices.shape[0])

    @property
    def columns(self) -> int:
        """Columns of the signatures (-1 before the first add where the data fixes them)."""
        return self._cols

    @property
    def params(self) -> dict[str, Any]:
        """The settings that decide how images are encoded and ranked (JSON-ready)."""
        return dict(self.signature.to_header()["params"], columns=self._cols)

    def describe(self) -> str:
        """One line: what the signatures are."""
        return self.signature.describe(self._cols)

    def storage_lines(self) -> list[str]:
        """How the entries are stored (for ``semcbir info``)."""
        return [(f"storage   {self.nnz:,} non-zeros ({self.nnz / max(len(self), 1):.1f} "
                 "per image)")]

    def __repr__(self) -> str:
        return f"SparseSignatureIndex({len(self)} images: {self.describe()})"

    # ------------------------------------------------------------------ encoding
    def encode(self, features: Any, label_maps: Any, *, threads: int = 0,
               return_histograms: bool = False) -> Any:
        """Signatures of images with this index's signature (its ``encode`` on
        ``Inputs(label_maps, features)``); with ``return_histograms`` also the semantic
        histograms."""
        from .._inputs import feature_list, label_list
        from ..signatures import Inputs

        feats = feature_list(features)
        maps = label_list(label_maps, len(feats))
        sig = self.signature.encode(Inputs(maps, feats), threads=threads)
        return (sig, sig.histograms) if return_histograms else sig

    def histograms(self, label_maps: Any) -> np.ndarray:
        """Semantic histograms of label maps with this index's classes and void label."""
        return self.signature.histograms(label_maps)

    def _rows(self, batch: Any, histograms: Any,
              name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        # every add and search starts here, before it reads the stored arrays
        self._check_mapped()
        return self.signature.batch_arrays(batch, histograms, name, self._cols)

    def _check_mapped(self) -> None:
        # a memory-mapped file rewritten in place by another program would make reading the
        # map crash (SIGBUS): IndexFormatError instead (container.MappedFile.check)
        m = self._mmap
        if m is not None:
            m.check()

    # ------------------------------------------------------------------ mutations
    def add(self, signatures: Any, label_maps: Any = None, *,
            keys: Sequence[str] | None = None, histograms: Any = None,
            threads: int = 0) -> np.ndarray:
        """Append encoded signatures (``signature.encode``); returns their int64 ids.

        ``add(features, label_maps, keys=...)`` (encode, then append) still works.
        ``keys``: one str per image; an index has keys for every entry or for none.
        """
        if label_maps is not None:
            signatures, histograms = self.encode(signatures, label_maps, threads=threads,
                                                 return_histograms=True)
        return self.add_signatures(signatures, histograms, keys=keys)

    def add_signatures(self, signatures: Any, histograms: Any = None, *,
                       keys: Sequence[str] | None = None) -> np.ndarray:
        """Append signatures made with this index's signature; returns their ids."""
        ip, ix, dt, h, cols = self._rows(signatures, histograms, "signatures")
        m = int(ip.shape[0] - 1)
        keys = check_new_keys(keys, m)
        with self._lock:
            n = len(self)
            self._check_keys_locked(keys)
            if m == 0:
                self._append_keys_locked(keys, 0)
                return np.zeros(0, dtype=np.int64)
            self._cols = cols
            self._indptr = np.concatenate([self._indptr, ip[1:] + self._indptr[-1]])
            self._indices = np.concatenate([self._indices, ix])
            self._data = np.concatenate([self._data, dt])
            self._hist = np.concatenate([self._hist, h])
            self._append_keys_locked(keys, m)
            self._search_index = None
            self._mmap = None
            return np.arange(n, n + m, dtype=np.int64)

    # ------------------------------------------------------------------ queries
    def reconstruct(self, ids: Any) -> tuple[Any, np.ndarray]:
        """The stored signatures and histograms of ``ids`` (``KeyError`` if one is absent)."""
        rows = np.atleast_1d(np.asarray(ids))
        if rows.size and (rows.dtype.kind not in "iu" or rows.ndim != 1):
            raise ValueError(f"ids must be a 1-D sequence of integers, got {rows!r}")
        rows = rows.astype(np.int64)
        with self._lock:
            self._check_mapped()
            ip, ix, dt, hist, cols = (self._indptr, self._indices, self._data, self._hist,
                                      self._cols)
        bad = (rows < 0) | (rows >= ip.shape[0] - 1)
        if bad.any():
            raise KeyError(f"ids not in the index: {rows[bad][:10].tolist()}")
        p, i, d = csr_rows(ip, ix, dt, rows)
        h = hist[rows].copy()
        return self.signature.batch_from_rows(p, i, d, h, cols), h

    def reconstruct_batch(self, ids: Any) -> Any:
        """The stored signatures of ``ids`` as one batch (with their histograms)."""
        batch, h = self.reconstruct(ids)
        if getattr(batch, "histograms", h) is None:
            batch = dataclasses.replace(batch, histograms=h)
        return batch

    def search(self, queries: Any, k: Any, *args: Any, threads: int = 0,
               histograms: Any = None,
               return_penalised: bool = False) -> tuple[np.ndarray, ...]:
        """The ``k`` best entries per query: ``(distances, ids[, penalised])``.

        Parameters
        ----------
        queries
            Encoded query signatures (``signature.encode``, or :meth:`encode`); the former
            form ``search(features, label_maps, k)`` encodes them first.
        k : int
            Results per query (>= 1); with ``k > len(self)`` the missing slots hold id
            ``-1`` and distance ``+inf``.
        threads : int
            0 = all cores; results never depend on it.
        histograms : array-like, optional
            The queries' semantic histograms when the signatures do not carry them.
        return_penalised : bool
            Also return which results the filter penalised.

        Returns
        -------
        distances, ids[, penalised]
            float32 L2 distances and int64 ids ``(nq, k)``, ordered by
            ``(penalised, distance, id)``.
        """
        if args:  # search(features, label_maps, k)
            queries, histograms = self.encode(queries, k, threads=threads,
                                              return_histograms=True)
            k = args[0]
        return self.search_signatures(queries, k, histograms=histograms, threads=threads,
                                      return_penalised=return_penalised)

    def search_signatures(self, signatures: Any, k: int, *, histograms: Any = None,
                          threads: int = 0,
                          return_penalised: bool = False) -> tuple[np.ndarray, ...]:
        """:meth:`search` of encoded signatures (kept for the former name)."""
        qp, qi, qd, qh, cols = self._rows(signatures, histograms, "queries")
        k = check_k(k, len(qp) - 1)
        t = check_threads(threads)
        with self._lock:
            n, hist = len(self), self._hist
            index = self._search_index
            if index is None and n:
                index = self._search_index = _backend.core().SparseL2Index(
                    self._indptr, self._indices, self._data, cols, t)

        def search(rows: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
            bp, bi, bd = csr_rows(qp, qi, qd, rows)
            return index.search(bp, bi, bd, kk, t)

        return filtered_topk(search, qh, hist, n, k, epsilon=self.epsilon,
                             return_penalised=return_penalised)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the index to one file atomically (see the module docstring)."""
        meta = json_metadata(self.metadata)
        with self._lock:
            ip, ix, dt, hist, keys = (self._indptr, self._indices, self._data, self._hist,
                                      self._keys)
        sections: list[tuple[str, Any]] = [
            ("indptr", ip.astype("<i8")),
            ("indices", ix.astype("<i8")),
            ("data", dt.astype("<f4")),
            ("histograms", hist.astype("<f4")),
            *self.signature.state_sections(),
        ]
        sh = self.signature.to_header()
        sh["params"]["columns"] = self._cols
        header: dict[str, Any] = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            **sh,
            "count": int(ip.shape[0] - 1),
            "nnz": int(ix.shape[0]),
        }
        return write_index(path, header, sections, keys, meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, mmap: bool = True,
             verify: bool = True) -> SparseSignatureIndex:
        """Load an index written by :meth:`save` (``mmap``/``verify`` as for
        :meth:`semcbir_fast.index.SBSIndex.load`).

        Raises
        ------
        FileNotFoundError
        IndexFormatError
            If the file is not a local-signature index, or is truncated, corrupted or newer.
        """
        return load_with(path, cls._from_container, mmap=mmap, verify=verify)

    @classmethod
    def _from_container(cls, c: Container) -> SparseSignatureIndex:
        from ..signatures import get_signature
        from ..signatures._local import LocalSignature

        h = c.header
        if h.get("format") != FORMAT_NAME:
            raise c.error(f"header is not a {FORMAT_NAME} header (format "
                          f"{h.get('format')!r}; SBS indexes load with SBSIndex.load)")
        if header_int(h.get("version")) != FORMAT_VERSION:
            raise c.error(f"header version {h.get('version')!r} != {FORMAT_VERSION}")
        p, count, nnz = h.get("params"), header_int(h.get("count")), header_int(h.get("nnz"))
        if count is None or nnz is None:
            raise c.error(f"corrupted header: count {h.get('count')!r}, nnz {h.get('nnz')!r}")
        if not isinstance(p, dict):
            raise c.error("corrupted header: no params")
        m = header_int(p.get("num_classes"), 1, MAX_CLASSES)
        if m is None:
            raise c.error(f"corrupted header: num_classes {p.get('num_classes')!r} (expected "
                          f"an integer in [1, {MAX_CLASSES}])")
        cols = header_int(p.get("columns"), -1, MAX_COLUMNS)
        if cols is None or (cols < 0 and nnz):
            raise c.error(f"corrupted header: columns {p.get('columns')!r}")
        has_keys, metadata = h.get("has_keys", False), h.get("metadata", {})
        if not isinstance(has_keys, bool):
            raise c.error(f"corrupted header: has_keys {has_keys!r}")
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, dict):
            raise c.error(f"corrupted header: metadata is a {type(metadata).__name__}, not "
                          "an object")
        try:
            kind = get_signature(h.get("signature"))
            if not issubclass(kind, LocalSignature):
                raise ValueError(f"signature {kind.name} is not a sparse signature")  # noqa: TRY004
            arrays = {}
            vh = h.get("vocabulary")
            if vh is not None:
                words = header_int(vh.get("n_words"), 1) if isinstance(vh, dict) else None
                width = header_int(vh.get("width"), 1) if isinstance(vh, dict) else None
                if words is None or width is None:
                    raise c.error(f"corrupted header: vocabulary {vh!r}")
                arrays["centroids"] = c.array("centroids", "<f4", words * width)
            sig = kind.from_header(h, arrays)
            idx = cls(sig, metadata=metadata)
        except IndexFormatError:
            raise
        except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as exc:
            raise c.error(f"corrupted header: bad settings ({exc})") from None
        if idx.num_classes != m or (idx._cols >= 0 and cols != idx._cols):
            raise c.error(f"corrupted header: columns {cols} / num_classes {m} do not match "
                          f"the signature's settings ({idx._cols} / {idx.num_classes})")
        if idx._cols < 0 and cols > m * MAX_DATA_WIDTH:
            raise c.error(f"corrupted header: columns {cols} (data-defined signatures have at "
                          f"most {MAX_DATA_WIDTH} per class)")
        ip = c.array("indptr", "<i8", count + 1)
        ix = c.array("indices", "<i8", nnz)
        dt = c.array("data", "<f4", nnz)
        hist = c.array("histograms", "<f4", count * m)
        if ip[0] != 0 or ip[-1] != nnz or np.any(ip[1:] < ip[:-1]):
            raise c.error("corrupted: indptr is not non-decreasing from 0 to nnz")
        if nnz and (ix.min() < 0 or ix.max() >= cols):
            raise c.error(f"corrupted: column indices outside [0, {cols})")
        if nnz > 1:
            # strictly increasing inside each row: a decrease may only start a new row
            down = np.flatnonzero(ix[1:] <= ix[:-1]) + 1
            if down.size and not np.isin(down, ip).all():
                raise c.error("corrupted: column indices are not increasing within a row")
        if not np.isfinite(dt).all():
            raise c.error("corrupted: signature values that are not finite")
        if not (np.isfinite(hist).all() and (hist >= 0).all()):
            raise c.error("corrupted: histogram values that are not finite and >= 0")
        # the signature makes an (empty) batch of rows this wide and takes it back: the
        # column count fits the signature's settings (e.g. whole per-class blocks)
        none = np.zeros(0, dtype=np.int64)
        try:
            hr = np.zeros((0, m), dtype=np.float32)
            batch = sig.batch_from_rows(np.zeros(1, dtype=np.int64), none,
                                        np.zeros(0, dtype=np.float32), hr, cols)
            got = sig.batch_arrays(batch, hr, "the stored rows", cols)[4]
        except (IndexError, ValueError) as exc:
            raise c.error(f"corrupted: the stored rows do not fit the signature ({exc})"
                          ) from None
        if cols >= 0 and got != cols:
            raise c.error(f"corrupted header: columns {cols}, the signature's rows have {got}")
        idx._indptr, idx._indices, idx._data = ip, ix, dt
        idx._hist = hist.reshape(count, m)
        idx._cols = cols
        idx._keys = c.keys(count) if has_keys else None
        idx._mmap = c.keep
        return idx

    def info(self) -> dict[str, Any]:
        """A plain summary: settings, counts, key presence and metadata."""
        vocab = self.vocabulary
        return {
            "count": len(self),
            "nnz": self.nnz,
            "has_keys": self.has_keys,
            "params": self.params,
            "vocabulary": None if vocab is None else {"n_words": vocab.n_words, **vocab.info},
            "metadata": dict(self.metadata),
        }


#: Former name.
LocalIndex = SparseSignatureIndex
