"""A searchable, persistent collection of SBoVP or hybrid signatures (local features +
semantics) with the images' keys.

:class:`LocalIndex` is to :mod:`semcbir_fast.sbovp` (paper 000 section 3.2) and
:mod:`semcbir_fast.hybrid` (paper 001) what :class:`~semcbir_fast.index.SBSIndex` is to
SBS codes: it keeps everything a query needs to be encoded the same way as the database
(the visual vocabulary, the phrase length, the normalisation, the number of classes, the
descriptor method, the filter threshold), the signatures as one sparse CSR matrix, the
semantic histograms of the filter, and optional string keys (image paths). It saves to and
loads from one checksummed file (the container of :mod:`semcbir_fast._container`, header
``format`` ``"semcbir-local-index"``), memory-mapped by default.

Ids are the row numbers ``0 .. len - 1`` in insertion order; the index is append-only
(build a new one to drop images). Ranking: exact L2 between signatures (equation 3 of
paper 000) through the C++ sparse search, then paper 001's semantic-histogram filter when
``epsilon`` is set: results are ordered by ``(penalised, distance, id)``.

File sections: ``indptr`` (int64, ``count + 1``), ``indices`` (int64, ``nnz``), ``data``
(float32, ``nnz``), ``histograms`` (float32, ``count x num_classes``), ``centroids``
(float32 ``L x D'``, SBoVP only) and, with keys, ``key_offsets`` / ``key_blob``. The header
holds ``signature``, ``params``, ``vocabulary`` (SBoVP), ``count``, ``nnz``, ``has_keys``,
``metadata`` and ``library_version``.

Threads: searches may run from several threads at once; ``add`` swaps in new arrays under a
lock, and a search works on the arrays it started with.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._container import (
    CONTAINER_VERSION,
    Container,
    IndexFormatError,
    encode_keys,
    json_metadata,
    library_version,
    load_with,
    write_container,
)
from ._convert import check_int, check_threads
from .features import DESCRIPTOR_METHODS
from .hybrid import (
    HybridSignatures,
    filtered_topk,
    hybrid_signatures,
    resolve_epsilon,
    semantic_histograms,
)
from .sbovp import (
    _NORMS,
    PhraseSignatures,
    Vocabulary,
    _core,
    _csr_rows,
    _feature_list,
    _label_list,
    sbovp_signatures,
)

__all__ = ["FORMAT_NAME", "SIGNATURES", "LocalIndex"]

FORMAT_NAME = "semcbir-local-index"
FORMAT_VERSION = CONTAINER_VERSION
SIGNATURES = ("sbovp", "hybrid")

Signatures = PhraseSignatures | HybridSignatures


class LocalIndex:
    """Exact L2 index of SBoVP or hybrid signatures, with the encoder's settings and keys.

    Parameters
    ----------
    signature : {"sbovp", "hybrid"}
    num_classes : int
        ``M``, classes of the segmentation (label values ``>= M`` are void).
    method : str
        Descriptor method of the features (``"kaze"``, ``"sift"``, ...); checked on every add
        and search.
    vocabulary : Vocabulary, optional
        SBoVP: the visual vocabulary (required; its method must match). Hybrid: must be None.
    n : int
        SBoVP phrase length (2..4, default 2).
    normalize : {"hellinger", "l2", "l1", None}
        SBoVP normalisation (default "hellinger", as the CLI).
    semantic_words : bool
        SBoVP: tag words with their region's class (default True, the CLI default; see
        :func:`semcbir_fast.sbovp.sbovp_signatures`).
    histogram_weight : float
        SBoVP: weight of the semantic histogram appended to the signature (default 1, as
        the CLI; 0 = none; :func:`semcbir_fast.sbovp.append_histograms`).
    epsilon : float, None or "auto"
        Histogram filter threshold; "auto" (default) = 0.9 (paper 001) except for SBoVP with
        the appended histogram, where it is off (:func:`semcbir_fast.hybrid.resolve_epsilon`);
        None = plain L2 ranking.
    ignore_index : int, optional
        A label value treated as void.
    metadata : dict, optional
        JSON-serialisable description saved with the index (model, class names, ...).

    Examples
    --------
    >>> index = LocalIndex("hybrid", num_classes=151, method="kaze")   # doctest: +SKIP
    >>> index.add(features, label_maps, keys=paths)                   # doctest: +SKIP
    >>> distances, ids = index.search(query_features, query_maps, k=10)  # doctest: +SKIP
    """

    def __init__(
        self,
        signature: str,
        *,
        num_classes: int,
        method: str = "kaze",
        vocabulary: Vocabulary | None = None,
        n: int = 2,
        normalize: str | None = "hellinger",
        semantic_words: bool = True,
        histogram_weight: float = 1.0,
        epsilon: float | str | None = "auto",
        ignore_index: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if signature not in SIGNATURES:
            raise ValueError(f"signature must be one of {SIGNATURES}, got {signature!r}")
        if method not in DESCRIPTOR_METHODS:
            raise ValueError(f"method must be one of {DESCRIPTOR_METHODS}, got {method!r}")
        self.signature = signature
        self.num_classes = check_int(num_classes, "num_classes", 1)
        self.method = method
        if ignore_index is not None:
            ignore_index = check_int(ignore_index, "ignore_index")
        self.ignore_index = ignore_index
        if signature == "sbovp":
            if not isinstance(vocabulary, Vocabulary):
                raise ValueError("signature 'sbovp' needs vocabulary=Vocabulary (fit one with "
                                 "Vocabulary.fit or load one with Vocabulary.load)")
            if vocabulary.method is not None and vocabulary.method != method:
                raise ValueError(f"the vocabulary was fitted on {vocabulary.method} descriptors "
                                 f"but method={method!r}")
            if normalize not in _NORMS:
                raise ValueError(f"normalize must be 'l2', 'l1' or None, got {normalize!r}")
            self.n = check_int(n, "n", 2, 4)
            self.normalize = normalize
            self.semantic_words = bool(semantic_words)
            w = float(histogram_weight)
            if not np.isfinite(w) or w < 0 or (w and normalize not in ("l2", "hellinger")):
                raise ValueError(f"histogram_weight must be a finite number >= 0 (> 0 needs "
                                 f"normalize 'l2' or 'hellinger'), got {histogram_weight}")
            self.histogram_weight = w
            words = vocabulary.n_words * (self.num_classes if self.semantic_words else 1)
            self._cols = words * words + (self.num_classes if w else 0)
        else:
            if vocabulary is not None:
                raise ValueError("signature 'hybrid' takes no vocabulary")
            self.n, self.normalize, self.semantic_words = 0, None, False
            self.histogram_weight = 0.0
            self._cols = -1  # M * D, fixed by the first add
        self.epsilon = resolve_epsilon(epsilon, signature, self.histogram_weight)
        self.vocabulary = vocabulary
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.metadata.setdefault("library_version", library_version())
        self._lock = threading.RLock()
        self._indptr = np.zeros(1, dtype=np.int64)
        self._indices = np.zeros(0, dtype=np.int64)
        self._data = np.zeros(0, dtype=np.float32)
        self._hist = np.zeros((0, self.num_classes), dtype=np.float32)
        self._keys: list[str] | None = None
        self._search_index: Any = None  # the C++ PhraseIndex, built on the first search
        self._mmap: Any = None

    # ------------------------------------------------------------------ properties
    def __len__(self) -> int:
        return int(self._indptr.shape[0] - 1)

    @property
    def has_keys(self) -> bool:
        """Whether the entries carry string keys."""
        return self._keys is not None

    @property
    def nnz(self) -> int:
        """Stored non-zeros of all signatures."""
        return int(self._indices.shape[0])

    @property
    def descriptor_dim(self) -> int | None:
        """Hybrid: ``D`` of the descriptors (None before the first add)."""
        if self.signature != "hybrid":
            return None
        return None if self._cols < 0 else self._cols // self.num_classes

    @property
    def params(self) -> dict[str, Any]:
        """The settings that decide how images are encoded and ranked (JSON-ready)."""
        p: dict[str, Any] = {
            "signature": self.signature,
            "num_classes": self.num_classes,
            "method": self.method,
            "epsilon": self.epsilon,
            "ignore_index": self.ignore_index,
        }
        if self.signature == "sbovp":
            assert self.vocabulary is not None
            p.update(n=self.n, normalize=self.normalize, semantic_words=self.semantic_words,
                     n_words=self.vocabulary.n_words, histogram_weight=self.histogram_weight)
        else:
            p["descriptor_dim"] = self.descriptor_dim
        return p

    def __repr__(self) -> str:
        extra = (f", L={self.vocabulary.n_words}, n={self.n}" if self.vocabulary is not None
                 else "")
        filt = "off" if self.epsilon is None else f"{self.epsilon:g}"
        return (f"LocalIndex({self.signature}, {len(self)} images, {self.method}"
                f"{extra}, {self.num_classes} classes, filter {filt})")

    def keys(self) -> list[str]:
        """Keys of the entries in id order (``ValueError`` if the index has none)."""
        if self._keys is None:
            raise ValueError("this index has no keys: pass keys=... to add()")
        return list(self._keys)

    def ids(self) -> np.ndarray:
        """All ids (``0 .. len - 1``)."""
        return np.arange(len(self), dtype=np.int64)

    def keys_of(self, ids: Any) -> list[str | None]:
        """Keys of several ids (e.g. a row of search results); ``None`` for id -1 padding."""
        keys = self._keys
        if keys is None:
            raise ValueError("this index has no keys: pass keys=... to add()")
        return [keys[i] if 0 <= i < len(keys) else None
                for i in np.asarray(ids).reshape(-1).tolist()]

    # ------------------------------------------------------------------ encoding
    def encode(self, features: Any, label_maps: Any, *, threads: int = 0,
               return_histograms: bool = False) -> Any:
        """Signatures of images with this index's settings.

        Parameters
        ----------
        features : Features or sequence of Features
            Keypoints and descriptors (:func:`semcbir_fast.features.extract_features`) of
            this index's ``method``.
        label_maps : sequence of (H, W) integer arrays, or (N, H, W)
            One per image, from the same segmentation model as the index.
        threads : int
            0 = all cores.
        return_histograms : bool
            Also return the semantic histograms (what :meth:`add_signatures` and
            :meth:`search_signatures` take), computed once for both.

        Returns
        -------
        PhraseSignatures (SBoVP) or HybridSignatures[, histograms]
        """
        feats = _feature_list(features)
        maps = _label_list(label_maps, len(feats))
        for i, f in enumerate(feats):
            if f.method != self.method:
                raise ValueError(f"features[{i}] are {f.method} features, this index holds "
                                 f"{self.method} ones; extract {self.method} features")
        sig: Signatures
        if self.signature == "hybrid":
            sig = hybrid_signatures(feats, maps, self.num_classes,
                                    ignore_index=self.ignore_index)
            hist = sig.histograms
        else:
            assert self.vocabulary is not None
            hist = self.histograms(maps)
            sig = sbovp_signatures(feats, maps, self.vocabulary, n=self.n,
                                   normalize=self.normalize, ignore_index=self.ignore_index,
                                   num_classes=self.num_classes,
                                   semantic_words=self.semantic_words,
                                   histogram_weight=self.histogram_weight, histograms=hist,
                                   threads=threads)
        return (sig, hist) if return_histograms else sig

    def _rows(self, signatures: Any, histograms: Any,
              name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        """CSR arrays, histograms and column count of signatures, checked against the index."""
        if self.signature == "hybrid":
            if not isinstance(signatures, HybridSignatures):
                raise ValueError(
                    f"{name} must be HybridSignatures for a hybrid index, got "
                    f"{type(signatures).__name__}")
            if signatures.num_classes != self.num_classes:
                raise ValueError(f"{name} have {signatures.num_classes} classes, the index "
                                 f"{self.num_classes}")
            if signatures.method is not None and signatures.method != self.method:
                raise ValueError(f"{name} use {signatures.method} descriptors, the index "
                                 f"{self.method}")
            cols = signatures.matrices.shape[1] * signatures.matrices.shape[2]
            if self._cols >= 0 and cols != self._cols:
                raise ValueError(
                    f"{name} have descriptors of width {signatures.matrices.shape[2]}, the "
                    f"index {self.descriptor_dim}")
            ip, ix, dt = signatures._csr()
            return ip, ix, dt, signatures.histograms, cols
        if not isinstance(signatures, PhraseSignatures):
            raise ValueError(  # noqa: TRY004
                f"{name} must be PhraseSignatures for an sbovp index, got "
                f"{type(signatures).__name__}")
        assert self.vocabulary is not None
        want = (self.vocabulary.n_words * (self.num_classes if self.semantic_words else 1),
                self.n, self.normalize, self.num_classes if self.semantic_words else 0,
                self.histogram_weight)
        got = (signatures.n_words, signatures.n, signatures.normalize, signatures.num_classes,
               signatures.histogram_weight)
        if got != want:
            raise ValueError(
                f"{name} were built with (words, n, normalize, semantic classes, histogram "
                f"weight) = {got}, the index uses {want}; encode them with LocalIndex.encode")
        if histograms is None:
            raise ValueError(f"{name}: an sbovp index needs the semantic histograms "
                             "(semcbir_fast.hybrid.semantic_histograms of the label maps)")
        h = np.ascontiguousarray(histograms, dtype=np.float32)
        if h.shape != (len(signatures), self.num_classes):
            raise ValueError(f"{name}: histograms must be ({len(signatures)}, "
                             f"{self.num_classes}), got {h.shape}")
        return signatures.indptr, signatures.indices, signatures.data, h, self._cols

    def histograms(self, label_maps: Any) -> np.ndarray:
        """Semantic histograms of label maps with this index's classes and void label."""
        return semantic_histograms(label_maps, self.num_classes, ignore_index=self.ignore_index)

    # ------------------------------------------------------------------ mutations
    def add(self, features: Any, label_maps: Any, *, keys: Sequence[str] | None = None,
            threads: int = 0) -> np.ndarray:
        """Encode images (:meth:`encode`) and append them; returns their ids."""
        sig, hist = self.encode(features, label_maps, threads=threads, return_histograms=True)
        return self.add_signatures(sig, hist, keys=keys)

    def add_signatures(self, signatures: Signatures, histograms: Any = None, *,
                       keys: Sequence[str] | None = None) -> np.ndarray:
        """Append signatures made with this index's settings (:meth:`encode`).

        Parameters
        ----------
        signatures : PhraseSignatures or HybridSignatures
        histograms : array-like, optional
            SBoVP: float32 ``(n, num_classes)`` semantic histograms (:meth:`histograms`);
            hybrid signatures carry their own.
        keys : sequence of str, optional
            One per image; an index has keys for every entry or for none.

        Returns
        -------
        numpy.ndarray
            int64 ids of the new entries.
        """
        ip, ix, dt, h, cols = self._rows(signatures, histograms, "signatures")
        m = int(ip.shape[0] - 1)
        if keys is not None:
            if isinstance(keys, (str, bytes)):
                raise ValueError("keys must be a sequence of str (one per image), got a "
                                 "single string")
            keys = list(keys)
            if len(keys) != m or not all(isinstance(k, str) for k in keys):
                raise ValueError(f"keys must be {m} strings (one per image)")
        with self._lock:
            n = len(self)
            if n and (keys is None) != (self._keys is None):
                raise ValueError("this index has keys: pass keys=... with every add()"
                                 if keys is None else "this index has no keys (its first add "
                                 "had none); build a new index to store keys")
            if m == 0:
                if n == 0 and keys is not None:
                    self._keys = []
                return np.zeros(0, dtype=np.int64)
            self._cols = cols
            self._indptr = np.concatenate([self._indptr, ip[1:] + self._indptr[-1]])
            self._indices = np.concatenate([self._indices, ix])
            self._data = np.concatenate([self._data, dt])
            self._hist = np.concatenate([self._hist, h])
            if keys is not None:
                self._keys = (self._keys or []) + keys
            self._search_index = None
            self._mmap = None
            return np.arange(n, n + m, dtype=np.int64)

    # ------------------------------------------------------------------ queries
    def reconstruct(self, ids: Any) -> tuple[Signatures, np.ndarray]:
        """The stored signatures and histograms of ``ids`` (``KeyError`` if one is absent)."""
        rows = np.atleast_1d(np.asarray(ids))
        if rows.size and (rows.dtype.kind not in "iu" or rows.ndim != 1):
            raise ValueError(f"ids must be a 1-D sequence of integers, got {rows!r}")
        rows = rows.astype(np.int64)
        with self._lock:
            ip, ix, dt, hist, cols = (self._indptr, self._indices, self._data, self._hist,
                                      self._cols)
        bad = (rows < 0) | (rows >= ip.shape[0] - 1)
        if bad.any():
            raise KeyError(f"ids not in the index: {rows[bad][:10].tolist()}")
        p, i, d = _csr_rows(ip, ix, dt, rows)
        h = hist[rows].copy()
        if self.signature == "hybrid":
            dim = max(cols, 0) // self.num_classes
            mats = np.zeros((rows.size, self.num_classes * dim), dtype=np.float32)
            mats[np.repeat(np.arange(rows.size), np.diff(p)), i] = d
            return HybridSignatures(mats.reshape(rows.size, self.num_classes, dim), h,
                                    self.method), h
        assert self.vocabulary is not None
        words = self.vocabulary.n_words * (self.num_classes if self.semantic_words else 1)
        return PhraseSignatures(p, i, d, words, self.n, self.normalize,
                                self.num_classes if self.semantic_words else 0,
                                self.num_classes if self.histogram_weight else 0,
                                self.histogram_weight), h

    def search(self, features: Any, label_maps: Any, k: int, *, threads: int = 0,
               return_penalised: bool = False) -> tuple[np.ndarray, ...]:
        """Encode query images (:meth:`encode`) and search (:meth:`search_signatures`)."""
        sig, hist = self.encode(features, label_maps, threads=threads, return_histograms=True)
        return self.search_signatures(sig, k, histograms=hist, threads=threads,
                                      return_penalised=return_penalised)

    def search_signatures(self, signatures: Signatures, k: int, *, histograms: Any = None,
                          threads: int = 0,
                          return_penalised: bool = False) -> tuple[np.ndarray, ...]:
        """The ``k`` best entries per query signature.

        Parameters
        ----------
        signatures : PhraseSignatures or HybridSignatures
            Query signatures made with this index's settings (:meth:`encode`).
        k : int
            Results per query (>= 1); with ``k > len(self)`` the missing slots hold id
            ``-1`` and distance ``+inf``.
        histograms : array-like, optional
            SBoVP: the queries' semantic histograms (hybrid signatures carry theirs).
        threads : int
            0 = all cores; results never depend on it.
        return_penalised : bool
            Also return which results the filter penalised.

        Returns
        -------
        distances, ids[, penalised]
            float32 L2 distances and int64 ids ``(nq, k)``, ordered by
            ``(penalised, distance, id)``.
        """
        qp, qi, qd, qh, cols = self._rows(signatures, histograms, "queries")
        k = check_int(k, "k", 1)
        t = check_threads(threads)
        with self._lock:
            n, hist = len(self), self._hist
            index = self._search_index
            if index is None and n:
                index = self._search_index = _core().PhraseIndex(
                    self._indptr, self._indices, self._data, cols, t)

        def search(rows: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
            bp, bi, bd = _csr_rows(qp, qi, qd, rows)
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
        ]
        header: dict[str, Any] = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "signature": self.signature,
            "params": {**self.params, "columns": self._cols},
            "count": int(ip.shape[0] - 1),
            "nnz": int(ix.shape[0]),
            "has_keys": keys is not None,
            "metadata": meta,
            "library_version": library_version(),
        }
        if self.vocabulary is not None:
            v = self.vocabulary
            sections.append(("centroids", v.centroids.astype("<f4")))
            header["vocabulary"] = {
                "n_words": v.n_words,
                "width": int(v.centroids.shape[1]),
                "method": v.method,
                "descriptor_dim": v.descriptor_dim,
                "binary": v.binary,
                "info": v.info,
            }
        if keys is not None:
            sections += encode_keys(keys)
        return write_container(path, header, sections)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, mmap: bool = True,
             verify: bool = True) -> LocalIndex:
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
    def _from_container(cls, c: Container) -> LocalIndex:
        h = c.header
        if h.get("format") != FORMAT_NAME:
            raise c.error(f"header is not a {FORMAT_NAME} header (format "
                          f"{h.get('format')!r}; SBS indexes load with SBSIndex.load)")
        if h.get("version") != FORMAT_VERSION:
            raise c.error(f"header version {h.get('version')!r} != {FORMAT_VERSION}")
        p, count, nnz = h.get("params"), h.get("count"), h.get("nnz")
        for name, v in (("count", count), ("nnz", nnz)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise c.error(f"corrupted header: {name} {v!r}")
        if not isinstance(p, dict):
            raise c.error("corrupted header: no params")
        vocab = None
        try:
            if h.get("signature") == "sbovp":
                vh = h["vocabulary"]
                cen = c.array("centroids", "<f4", vh["n_words"] * vh["width"])
                vocab = Vocabulary(np.array(cen).reshape(vh["n_words"], vh["width"]),
                                   vh["method"], vh["descriptor_dim"], vh["binary"],
                                   dict(vh.get("info") or {}))
            idx = cls(h.get("signature"), num_classes=p["num_classes"], method=p["method"],
                      vocabulary=vocab, n=p.get("n", 2), normalize=p.get("normalize"),
                      semantic_words=p.get("semantic_words", False),
                      histogram_weight=p.get("histogram_weight", 0.0), epsilon=p["epsilon"],
                      ignore_index=p.get("ignore_index"), metadata=h.get("metadata") or {})
        except IndexFormatError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise c.error(f"corrupted header: bad settings ({exc})") from None
        cols = p.get("columns")
        if not isinstance(cols, int) or (idx.signature == "sbovp" and cols != idx._cols):
            raise c.error(f"corrupted header: columns {cols!r}")
        ip = c.array("indptr", "<i8", count + 1)
        ix = c.array("indices", "<i8", nnz)
        dt = c.array("data", "<f4", nnz)
        hist = c.array("histograms", "<f4", count * idx.num_classes)
        if ip[0] != 0 or ip[-1] != nnz or np.any(np.diff(ip) < 0):
            raise c.error("corrupted: indptr is not non-decreasing from 0 to nnz")
        if nnz and (ix.min() < 0 or ix.max() >= cols):
            raise c.error(f"corrupted: column indices outside [0, {cols})")
        idx._indptr, idx._indices, idx._data = ip, ix, dt
        idx._hist = hist.reshape(count, idx.num_classes)
        idx._cols = cols
        idx._keys = c.keys(count) if h.get("has_keys") else None
        idx._mmap = c.keep
        return idx

    def info(self) -> dict[str, Any]:
        """A plain summary: settings, counts, key presence and metadata."""
        return {
            "count": len(self),
            "nnz": self.nnz,
            "has_keys": self.has_keys,
            "params": self.params,
            "vocabulary": None if self.vocabulary is None else {
                "n_words": self.vocabulary.n_words, **self.vocabulary.info},
            "metadata": dict(self.metadata),
        }


def load_index(path: str | os.PathLike[str], *, mmap: bool = True,
               verify: bool = True) -> Any:
    """Load any index file of the library: an :class:`~semcbir_fast.index.SBSIndex` or a
    :class:`LocalIndex`, whichever the file holds."""
    from ._container import read_format
    from .index import FORMAT_NAME as SBS_FORMAT
    from .index import SBSIndex

    fmt = read_format(path)
    if fmt == SBS_FORMAT:
        return SBSIndex.load(path, mmap=mmap, verify=verify)
    return LocalIndex.load(path, mmap=mmap, verify=verify)
