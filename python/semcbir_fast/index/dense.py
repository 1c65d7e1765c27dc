"""A searchable, persistent collection of float vectors (global CNN descriptors and the
signatures built on them) with the images' keys: :class:`DenseIndex`.

It is to float descriptors what :class:`~semcbir_fast.index.SBSIndex` is to SBS codes: the
signature object (its parameters and learned state, e.g. a PCA: everything a query needs to
be encoded the same way as the database), the vectors as one float32 ``(count, dim)``
matrix, optional per-row side data that a signature ranks with (the region descriptors of
the ``regions`` signature, the other signatures of a ``fused`` one), and optional string
keys (image paths). One checksummed file (the container of
:mod:`semcbir_fast.index.container`, header ``format`` ``"semcbir-dense-index"``),
memory-mapped by default.

What is added and searched is a :class:`DenseBatch` (``vectors`` + ``extras``), or a plain
``(n, dim)`` array. Side data are arrays with one row per image (any shape after it) or
:class:`Ragged` rows (CSR-like: ``indptr`` + value arrays), e.g. a sparse signature.

Ranking: the signature's ``search_index(index, queries, k, threads=...)`` (a signature may
fuse, expand the query or re-rank there); without a signature (``DenseIndex(metric="l2")``)
exact :func:`~semcbir_fast.search.float_topk`. Results follow the library's contract:
``(distances, ids)`` float32 / int64 ``(nq, k)``, ascending, ties by the smaller id, ``k >
count`` padded with id -1 and +inf.

Ids are the row numbers ``0 .. count - 1`` in insertion order; the index is append-only.
Derived structures (e.g. a k-reciprocal graph of the database) are built on the first search
that needs them and dropped by ``add`` (:meth:`DenseIndex.derived`).

File sections: ``vectors`` (float32 little-endian, ``count x dim``), per side array
``x:<name>`` (Ragged: ``x:<name>:indptr`` and ``x:<name>:<value>``), the signature's state
sections ``state:<name>``, the derived structures built before the save
``derived:<name>`` (:meth:`DenseIndex.prepare`; a loaded index searches with them instead of
rebuilding them) and, with keys, ``key_offsets`` / ``key_blob``. The header holds the
signature's header (``signature``, ``params``, ...), ``metric``, ``count``, ``dim``, the
side data's dtypes and shapes (``extras``), the state arrays' (``state``), the derived
arrays' (``derived``; absent in files written before it, read as none), ``has_keys``,
``metadata`` and ``library_version``.

Threads: searches may run from several threads at once; ``add`` swaps in new arrays under a
lock and a search works on the arrays it started with.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._convert import check_k, check_threads
from ._keys import AppendOnlyKeys, check_new_keys
from .container import (
    CONTAINER_VERSION,
    Container,
    json_metadata,
    library_version,
    load_with,
    write_index,
)

__all__ = ["FORMAT_NAME", "DenseBatch", "DenseIndex", "Ragged"]

FORMAT_NAME = "semcbir-dense-index"
FORMAT_VERSION = CONTAINER_VERSION

#: dtypes side data may have (stored little-endian).
_DTYPES = ("float32", "float64", "int64", "int32", "uint8", "bool")


def _rows_of(rows: Any, n: int) -> np.ndarray:
    if isinstance(rows, slice):
        return np.arange(n, dtype=np.int64)[rows]
    r = np.atleast_1d(np.asarray(rows))
    if r.dtype == bool:
        if r.shape != (n,):
            raise IndexError(f"a boolean row mask must have {n} entries, got {r.shape}")
        return np.nonzero(r)[0]
    if r.size and (r.dtype.kind not in "iu" or r.ndim != 1):
        raise IndexError(f"rows must be a 1-D sequence of integers, got {r!r}")
    r = r.astype(np.int64)
    if r.size and (r.min() < -n or r.max() >= n):
        raise IndexError(f"rows out of range for {n} items: {r[(r < -n) | (r >= n)][:5].tolist()}")
    return np.where(r < 0, r + n, r)


def _side_array(a: Any, name: str, n: int) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.name not in _DTYPES:
        raise ValueError(f"extras[{name!r}] must have one of the dtypes {_DTYPES}, got "
                         f"{arr.dtype}")
    if arr.ndim < 1 or arr.shape[0] != n:
        raise ValueError(f"extras[{name!r}] must have one row per image ({n}), got shape "
                         f"{arr.shape}")
    return np.ascontiguousarray(arr)


def _check_name(name: Any, what: str) -> None:
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"{what} names must be non-empty strings without ':', got {name!r}")


def _trusted(vectors: np.ndarray, extras: dict[str, Any]) -> DenseBatch:
    """A DenseBatch of already checked arrays (no copy, no second validation pass)."""
    b = DenseBatch.__new__(DenseBatch)
    b.vectors, b.extras = vectors, extras
    return b


@dataclass
class Ragged:
    """Rows of different lengths: row ``i`` is ``values[name][indptr[i]:indptr[i + 1]]``
    for every value array (all of one length ``nnz``), as in CSR."""

    indptr: np.ndarray
    values: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ip = np.ascontiguousarray(self.indptr, dtype=np.int64)
        if ip.ndim != 1 or ip.size < 1 or ip[0] != 0 or np.any(np.diff(ip) < 0):
            raise ValueError("Ragged.indptr must be 1-D, non-decreasing from 0")
        self.indptr = ip
        nnz = int(ip[-1])
        vals = {}
        for k, v in self.values.items():
            _check_name(k, "Ragged value")
            vals[k] = _side_array(v, f"{k} (ragged)", nnz)
        self.values = vals

    def __len__(self) -> int:
        return int(self.indptr.shape[0] - 1)

    def take(self, rows: np.ndarray) -> Ragged:
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        counts = ends - starts
        ip = np.zeros(rows.size + 1, dtype=np.int64)
        np.cumsum(counts, out=ip[1:])
        pos = np.repeat(starts - ip[:-1], counts) + np.arange(ip[-1], dtype=np.int64)
        return Ragged(ip, {k: v[pos] for k, v in self.values.items()})

    @staticmethod
    def concat(parts: Sequence[Ragged]) -> Ragged:
        names = list(parts[0].values)
        if any(list(p.values) != names for p in parts):
            raise ValueError("ragged side data of different batches name different values")
        ip = [np.zeros(1, np.int64)]
        off = 0
        for p in parts:
            ip.append(p.indptr[1:] + off)
            off += int(p.indptr[-1])
        return Ragged(np.concatenate(ip),
                      {k: np.concatenate([p.values[k] for p in parts]) for k in names})


@dataclass
class DenseBatch:
    """Encoded images: float32 ``vectors`` ``(n, dim)`` plus side data ``extras`` (arrays
    with one row per image, or :class:`Ragged`). Row selection (``batch[rows]``) and
    :meth:`concat` keep them together."""

    vectors: np.ndarray
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        v = np.asarray(self.vectors)
        if v.ndim != 2:
            raise ValueError(f"vectors must be 2-D (n, dim), got shape {v.shape}")
        if v.dtype.kind not in "fiu":
            raise ValueError(f"vectors must be numeric, got dtype {v.dtype}")
        v = np.ascontiguousarray(v, dtype=np.float32)
        if v.size and not np.isfinite(v).all():
            bad = int(np.argwhere(~np.isfinite(v))[0, 0])
            raise ValueError(f"vectors must be finite: row {bad} holds NaN or inf")
        self.vectors = v
        n = v.shape[0]
        ex: dict[str, Any] = {}
        for k, a in self.extras.items():
            _check_name(k, "extras")
            if isinstance(a, Ragged):
                if len(a) != n:
                    raise ValueError(f"extras[{k!r}] has {len(a)} rows, vectors {n}")
                ex[k] = a
            else:
                ex[k] = _side_array(a, k, n)
        self.extras = ex

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __getitem__(self, rows: Any) -> DenseBatch:
        r = _rows_of(rows, len(self))
        return _trusted(self.vectors[r], {k: (a.take(r) if isinstance(a, Ragged) else a[r])
                                          for k, a in self.extras.items()})

    @staticmethod
    def concat(parts: Sequence[DenseBatch]) -> DenseBatch:
        parts = list(parts)
        if not parts:
            raise ValueError("concat needs at least one batch")
        names = list(parts[0].extras)
        for p in parts:
            if sorted(p.extras) != sorted(names):
                raise ValueError(f"batches carry different side data: {sorted(names)} vs "
                                 f"{sorted(p.extras)}")
            if p.dim != parts[0].dim:
                raise ValueError(f"batches have different dims: {parts[0].dim} vs {p.dim}")
        ex: dict[str, Any] = {}
        for k in names:
            vals = [p.extras[k] for p in parts]
            if isinstance(vals[0], Ragged):
                ex[k] = Ragged.concat(vals)
            else:
                if len({(v.dtype, v.shape[1:]) for v in vals}) > 1:
                    raise ValueError(f"side data {k!r} differs in dtype or shape between "
                                     "batches")
                ex[k] = np.concatenate(vals)
        return _trusted(np.concatenate([p.vectors for p in parts]), ex)


def as_batch(x: Any, name: str = "signatures") -> DenseBatch:
    """A :class:`DenseBatch` from a batch or a plain ``(n, dim)`` array (NumPy / torch)."""
    if isinstance(x, DenseBatch):
        return x
    from ..search.float_topk import as_vectors

    return DenseBatch(as_vectors(x, name))


class DenseIndex(AppendOnlyKeys):
    """Exact float-vector index with its signature, side data and keys.

    Parameters
    ----------
    signature : Signature, optional
        A fitted dense signature (``create_signature("cnn", num_classes=...)``); it ranks
        (``search_index``) and encodes queries. Without one, give ``metric``.
    metric : {"l2", "ip", "l1"}
        The distance of a signature-less index (ignored with a signature, which has its own).
    metadata : dict, optional
        JSON-serialisable description saved with the index.

    Examples
    --------
    >>> index = DenseIndex(metric="l2")                         # doctest: +SKIP
    >>> index.add(vectors, keys=paths)                          # doctest: +SKIP
    >>> distances, ids = index.search(queries, k=10)            # doctest: +SKIP
    """

    def __init__(self, signature: Any = None, *, metric: str | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
        from ..search.float_topk import METRICS

        if signature is not None:
            if not hasattr(signature, "search_index"):
                raise ValueError(f"signature {getattr(signature, 'name', signature)!r} does "
                                 "not rank dense vectors (it has no search_index); use its "
                                 "own index (signature.new_index())")
            signature.require_fitted()
            metric = getattr(signature, "metric", None) or "l2"
        elif metric is None:
            raise ValueError("DenseIndex needs a signature or a metric ('l2', 'ip', 'l1')")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
        self._signature = signature
        self.metric = str(metric)
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.metadata.setdefault("library_version", library_version())
        self._lock = threading.RLock()
        self._batch: DenseBatch | None = None
        self._keys: list[str] | None = None
        self._derived: dict[Any, Any] = {}
        self._mmap: Any = None

    # ------------------------------------------------------------------ properties
    @property
    def signature(self) -> Any:
        """The signature that encodes queries like the database (None: plain vectors)."""
        return self._signature

    def __len__(self) -> int:
        b = self._batch
        return 0 if b is None else len(b)

    @property
    def dim(self) -> int:
        """Vector dimension (-1 before the first add)."""
        b = self._batch
        return -1 if b is None else b.dim

    @property
    def vectors(self) -> np.ndarray:
        """The stored vectors ``(count, dim)`` (read-only when memory-mapped)."""
        b = self._batch
        return np.zeros((0, 0), np.float32) if b is None else b.vectors

    @property
    def batch(self) -> DenseBatch | None:
        """Everything stored, as one :class:`DenseBatch` (None while empty)."""
        return self._batch

    def __repr__(self) -> str:
        return f"DenseIndex({len(self)} images: {self.describe()})"

    def describe(self) -> str:
        """One line: what the vectors are."""
        if self._signature is not None:
            return self._signature.describe()
        return f"dense vectors, metric {self.metric}, dim {self.dim}"

    def storage_lines(self) -> list[str]:
        """How the entries are stored (for ``semcbir info``)."""
        b = self._batch
        if self.dim > 0 or b is None or not b.extras:
            nbytes = len(self) * max(self.dim, 0) * 4
            lines = [(f"vectors   {len(self):,} x {max(self.dim, 0)} float32 "
                      f"({nbytes:,} bytes), metric {self.metric}")]
        else:
            lines = ["vectors   none (the signature keeps its parts as side data)"]
        name_of = getattr(self._signature, "extra_label", None)
        if b is not None:
            for k, a in b.extras.items():
                what = f" [{name_of(k)}]" if callable(name_of) and name_of(k) else ""
                if isinstance(a, Ragged):
                    lines.append(f"extra     {k}{what}: ragged, {int(a.indptr[-1]):,} entries "
                                 f"({', '.join(a.values)})")
                else:
                    lines.append(f"extra     {k}{what}: {a.dtype} {tuple(a.shape)}")
        return lines

    # ------------------------------------------------------------------ mutations
    def add(self, signatures: Any, *, keys: Sequence[str] | None = None) -> np.ndarray:
        """Append encoded images (``signature.encode(...)``: a :class:`DenseBatch`, or an
        ``(n, dim)`` array); returns their int64 ids. ``keys``: one str per image (an index
        has keys for every entry or for none)."""
        batch = as_batch(signatures)
        m = len(batch)
        keys = check_new_keys(keys, m)
        with self._lock:
            n = len(self)
            self._check_keys_locked(keys)
            if self._batch is not None and batch.dim != self._batch.dim:
                raise ValueError(f"signatures have dim {batch.dim}, the index {self._batch.dim}"
                                 "; encode them with the index's signature")
            if m == 0:
                self._append_keys_locked(keys, 0)
                return np.zeros(0, dtype=np.int64)
            self._batch = batch if self._batch is None else DenseBatch.concat([self._batch,
                                                                              batch])
            self._append_keys_locked(keys, m)
            self._derived = {}
            self._mmap = None
            return np.arange(n, n + m, dtype=np.int64)

    def derived(self, key: Any, build: Callable[[], Any]) -> Any:
        """A structure derived from the stored rows, built once (``build()``) and kept until
        the next ``add`` (e.g. a re-ranking graph)."""
        with self._lock:
            d = self._derived
            if key not in d:
                d[key] = build()
            return d[key]

    def built(self, key: Any) -> Any:
        """The derived structure under ``key`` if it has been built (or loaded), else None."""
        with self._lock:
            return self._derived.get(key)

    def prepare(self, *, threads: int = 0) -> None:
        """Build now what the signature's searches derive from the database (a fused
        signature's normalisation, adaptive weights and re-ranking graph), so that
        :meth:`save` writes it and a loaded index searches without rebuilding it."""
        sig = self._signature
        if sig is not None and len(self):
            sig.prepare_index(self, threads=check_threads(threads))

    # ------------------------------------------------------------------ queries
    def reconstruct(self, ids: Any) -> np.ndarray:
        """The stored vectors of ``ids`` ``(len(ids), dim)`` (``KeyError`` if one is absent)."""
        rows = self._checked_ids(ids)
        b = self._batch
        return (np.zeros((0, 0), np.float32) if b is None else b.vectors[rows].copy())

    def reconstruct_batch(self, ids: Any) -> DenseBatch:
        """The stored rows of ``ids`` as one :class:`DenseBatch` (vectors and side data)."""
        rows = self._checked_ids(ids)
        b = self._batch
        if b is None:
            return DenseBatch(np.zeros((0, 0), np.float32))
        return b[rows]

    def search(self, queries: Any, k: int, *, threads: int = 0,
               return_penalised: bool = False) -> tuple[np.ndarray, ...]:
        """The ``k`` best entries per query: ``(distances, ids[, penalised])``.

        Parameters
        ----------
        queries
            Encoded queries (``signature.encode``: a :class:`DenseBatch`), or an
            ``(nq, dim)`` array for a signature without side data.
        k : int
            Results per query (>= 1); ``k > len(self)`` pads with id -1 and +inf.
        threads : int
            0 = all cores; results never depend on it.
        return_penalised : bool
            Also return a boolean ``(nq, k)`` array: results a signature moved after the
            others (e.g. beyond a re-ranked head); all False for plain vector search.

        Returns
        -------
        distances, ids[, penalised]
            float32 and int64 ``(nq, k)``, ascending, ties by the smaller id.
        """
        q = as_batch(queries, "queries")
        k = check_k(k)
        t = check_threads(threads)
        if len(self) and q.dim != self.dim:
            raise ValueError(f"queries have dim {q.dim}, the index {self.dim}; encode them "
                             "with the index's signature")
        if not len(self) or not len(q):
            d = np.full((len(q), k), np.inf, dtype=np.float32)
            i = np.full((len(q), k), -1, dtype=np.int64)
            p = np.zeros((len(q), k), dtype=bool)
        elif self._signature is not None:
            d, i, p = self._signature.search_index(self, q, k, threads=t)
        else:
            d, i = self.vector_topk(q.vectors, k, threads=t)
            p = np.zeros(d.shape, dtype=bool)
        return (d, i, p) if return_penalised else (d, i)

    def vector_topk(self, vectors: np.ndarray, k: int, *, threads: int = 0,
                    metric: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k of checked float32 query vectors against the stored vectors by
        ``metric`` (default the index's): :func:`~semcbir_fast.search.float_topk` without
        re-checking the database (it was checked when added)."""
        from ..search.float_topk import _sq_norms, resolve_backend, topk_prepared

        m = metric or self.metric
        be = resolve_backend("auto", m)
        x = self.vectors
        xnorm = self.derived(("sqnorms",), lambda: _sq_norms(x)) if (m == "l2" and be == "numpy") \
            else None
        q = np.ascontiguousarray(vectors, dtype=np.float32)
        return topk_prepared(q, x, k, m, be, threads, xnorm)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the index to one file atomically (see the module docstring)."""
        meta = json_metadata(self.metadata)
        with self._lock:  # the rows and what was derived from these very rows
            b, keys, built = self._batch, self._keys, dict(self._derived)
        sig = self._signature
        dim = 0 if b is None else b.dim
        vectors = np.zeros((0, dim), np.float32) if b is None else b.vectors
        sections: list[tuple[str, Any]] = [("vectors", vectors.astype("<f4"))]
        extras: dict[str, Any] = {}
        for name, a in ({} if b is None else b.extras).items():
            if isinstance(a, Ragged):
                vals = {}
                sections.append((f"x:{name}:indptr", a.indptr.astype("<i8")))
                for vn, v in a.values.items():
                    vals[vn] = {"dtype": v.dtype.name, "shape": list(v.shape[1:])}
                    sections.append((f"x:{name}:{vn}", v.astype(v.dtype.newbyteorder("<"))))
                extras[name] = {"kind": "ragged", "nnz": int(a.indptr[-1]), "values": vals}
            else:
                extras[name] = {"kind": "array", "dtype": a.dtype.name,
                                "shape": list(a.shape[1:])}
                sections.append((f"x:{name}", a.astype(a.dtype.newbyteorder("<"))))
        state: dict[str, Any] = {}
        derived: dict[str, Any] = {}
        sh: dict[str, Any] = {"signature": None}
        if sig is not None:
            sh = sig.to_header()
            for table, prefix, arrays in (
                    (state, "state", sig.state_sections()),
                    (derived, "derived", sig.derived_sections(built.get) if b is not None else [])):
                for name, arr in arrays:
                    arr = np.asarray(arr)
                    table[name] = {"dtype": arr.dtype.name, "shape": list(arr.shape)}
                    sections.append((f"{prefix}:{name}",
                                     arr.astype(arr.dtype.newbyteorder("<"))))
        header: dict[str, Any] = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            **sh,
            "metric": self.metric,
            "count": len(vectors),
            "dim": dim,
            "extras": extras,
            "state": state,
            "derived": derived,
        }
        return write_index(path, header, sections, keys, meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, mmap: bool = True,
             verify: bool = True) -> DenseIndex:
        """Load an index written by :meth:`save` (memory-mapped unless ``mmap=False``;
        ``verify`` checks the checksum).

        Raises
        ------
        FileNotFoundError
        IndexFormatError
            Not a dense index, or truncated, corrupted or newer.
        """
        return load_with(path, cls._from_container, mmap=mmap, verify=verify)

    @staticmethod
    def _shape(c: Container, spec: Any, what: str) -> tuple[np.dtype, list[int]]:
        if not isinstance(spec, dict) or spec.get("dtype") not in _DTYPES \
                or not isinstance(spec.get("shape"), list) \
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                           for s in spec["shape"]):
            raise c.error(f"corrupted header: {what} {spec!r}")
        return np.dtype(spec["dtype"]).newbyteorder("<"), list(spec["shape"])

    @classmethod
    def _from_container(cls, c: Container) -> DenseIndex:
        from ..signatures import get_signature

        h = c.header
        if h.get("format") != FORMAT_NAME:
            raise c.error(f"header is not a {FORMAT_NAME} header (format "
                          f"{h.get('format')!r}; load_index opens any index)")
        if h.get("version") != FORMAT_VERSION:
            raise c.error(f"header version {h.get('version')!r} != {FORMAT_VERSION}")
        count, dim = h.get("count"), h.get("dim")
        for name, v in (("count", count), ("dim", dim)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise c.error(f"corrupted header: {name} {v!r}")
        state_spec, extras_spec = h.get("state"), h.get("extras")
        if not isinstance(state_spec, dict) or not isinstance(extras_spec, dict):
            raise c.error("corrupted header: extras / state tables missing")
        derived_spec = h.get("derived", {})  # absent from files written before it existed
        if not isinstance(derived_spec, dict):
            raise c.error("corrupted header: derived table is not a table")
        tables: dict[str, dict[str, np.ndarray]] = {"state": {}, "derived": {}}
        for prefix, spec_table in (("state", state_spec), ("derived", derived_spec)):
            for name, spec in spec_table.items():
                dt, shape = cls._shape(c, spec, f"{prefix} {name!r}")
                tables[prefix][name] = c.array(f"{prefix}:{name}", dt,
                                               int(np.prod(shape))).reshape(shape)
        arrays = tables["state"]
        try:
            if h.get("signature") is None:
                idx = cls(metric=h.get("metric"), metadata=h.get("metadata") or {})
            else:
                kind = get_signature(h.get("signature"))
                if not hasattr(kind, "search_index"):
                    raise ValueError(f"signature {kind.name} is not a dense signature")
                sig = kind.from_header(h, arrays)
                idx = cls(sig, metadata=h.get("metadata") or {})
        except (KeyError, TypeError, ValueError) as exc:
            raise c.error(f"corrupted header: bad settings ({exc})") from None
        if h.get("metric") != idx.metric:
            raise c.error(f"corrupted header: metric {h.get('metric')!r} but the signature "
                          f"ranks by {idx.metric!r}")
        vec = c.array("vectors", "<f4", count * dim).reshape(count, dim)
        extras: dict[str, Any] = {}
        for name, spec in extras_spec.items():
            if not isinstance(spec, dict) or spec.get("kind") not in ("array", "ragged"):
                raise c.error(f"corrupted header: extra {name!r} {spec!r}")
            if spec["kind"] == "array":
                dt, shape = cls._shape(c, spec, f"extra {name!r}")
                per = int(np.prod(shape))
                extras[name] = c.array(f"x:{name}", dt, count * per).reshape(count, *shape)
            else:
                nnz = spec.get("nnz")
                if not isinstance(nnz, int) or isinstance(nnz, bool) or nnz < 0 \
                        or not isinstance(spec.get("values"), dict):
                    raise c.error(f"corrupted header: extra {name!r} {spec!r}")
                ip = c.array(f"x:{name}:indptr", "<i8", count + 1)
                if ip[0] != 0 or ip[-1] != nnz or np.any(np.diff(ip) < 0):
                    raise c.error(f"corrupted: {name} indptr is not non-decreasing from 0 to "
                                  f"{nnz}")
                vals = {}
                for vn, vs in spec["values"].items():
                    dt, shape = cls._shape(c, vs, f"extra {name}:{vn}")
                    per = int(np.prod(shape))
                    vals[vn] = c.array(f"x:{name}:{vn}", dt, nnz * per).reshape(nnz, *shape)
                extras[name] = Ragged(ip, vals)
        if vec.size and not np.isfinite(vec).all():
            raise c.error("corrupted: vectors hold NaN or inf")
        if count or dim or extras:
            idx._batch = _trusted(vec, extras)
        if tables["derived"]:
            if idx._signature is None or not count:
                raise c.error("corrupted header: derived arrays without a signature's rows")
            try:
                idx._signature.restore_derived(idx, tables["derived"])
            except ValueError as exc:
                raise c.error(f"corrupted: derived arrays ({exc})") from None
        idx._keys = c.keys(count) if h.get("has_keys") else None
        idx._mmap = c.keep
        return idx

    def info(self) -> dict[str, Any]:
        """A plain summary: settings, counts, key presence and metadata."""
        sig = self._signature
        return {
            "count": len(self),
            "dim": self.dim,
            "metric": self.metric,
            "has_keys": self.has_keys,
            "params": None if sig is None else sig.to_header().get("params"),
            "metadata": dict(self.metadata),
        }
