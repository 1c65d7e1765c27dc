"""One index family: every index holds the signatures of one kind, ids, optional keys and
metadata, and answers ``search(queries, k) -> (distances, ids)`` exactly.

==========================  ======================  =======================================
class                       holds                   search
==========================  ======================  =======================================
:class:`SBSIndex`           SBS codes (uint8)       Hamming, SIMD; caller's ids, remove /
                                                    compact, range search
:class:`BinaryIndex`       any packed binary codes Hamming, SIMD; ids = rows
                            (deephash, ITQ)         (append-only)
:class:`SparseSignatureIndex`  sparse float rows    exact L2 + histogram filter; ids = rows
                            (SBoVP, hybrid)         (append-only)
==========================  ======================  =======================================

Shared interface (:class:`Index`): ``len``, ``ids()``, ``keys()``, ``keys_of(ids)``,
``has_keys``, ``add``, ``search``, ``reconstruct``, ``save`` / ``load``, ``info()``,
``describe()``, ``signature`` (the :class:`~semcbir_fast.signatures.Signature` that encodes
queries like the database) and ``metadata``. :func:`load_index` opens any index file by the
format tag in its header.
"""

from __future__ import annotations

import os
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .binary import FORMAT_NAME as BINARY_FORMAT
from .binary import BinaryIndex
from .container import MAGIC, IndexFormatError, read_format
from .dense import FORMAT_NAME as DENSE_FORMAT
from .dense import DenseBatch, DenseIndex, Ragged
from .sbs import FORMAT_NAME as SBS_FORMAT
from .sbs import FORMAT_VERSION, SBSIndex
from .sparse import FORMAT_NAME as SPARSE_FORMAT
from .sparse import LocalIndex, SparseSignatureIndex

__all__ = [
    "FORMATS",
    "FORMAT_VERSION",
    "MAGIC",
    "BinaryIndex",
    "DenseBatch",
    "DenseIndex",
    "Index",
    "IndexFormatError",
    "LocalIndex",
    "Ragged",
    "SBSIndex",
    "SparseSignatureIndex",
    "load_index",
]

#: Index classes by the ``format`` tag of their file header.
FORMATS: dict[str, Any] = {SBS_FORMAT: SBSIndex, SPARSE_FORMAT: SparseSignatureIndex}
FORMATS[DENSE_FORMAT] = DenseIndex
FORMATS[BINARY_FORMAT] = BinaryIndex


@runtime_checkable
class Index(Protocol):
    """What every index of the library offers."""

    metadata: dict[str, Any]

    def __len__(self) -> int: ...
    @property
    def has_keys(self) -> bool: ...
    @property
    def signature(self) -> Any: ...
    def ids(self) -> np.ndarray: ...
    def keys(self) -> list[str]: ...
    def keys_of(self, ids: Any) -> list[str | None]: ...
    def search(self, queries: Any, k: int, *, threads: int = 0) -> tuple[np.ndarray, ...]: ...
    def save(self, path: str | os.PathLike[str]) -> Any: ...
    def info(self) -> dict[str, Any]: ...
    def describe(self) -> str: ...


def load_index(path: str | os.PathLike[str], *, mmap: bool = True, verify: bool = True) -> Any:
    """Load any index file of the library, by the format tag in its header.

    Raises
    ------
    FileNotFoundError
    IndexFormatError
        Not an index file of this library, or truncated / corrupted / newer.
    """
    fmt = read_format(path)
    cls = FORMATS.get(fmt)
    if cls is None:
        raise IndexFormatError(path, f"unknown index format {fmt!r}; known: "
                               f"{', '.join(sorted(FORMATS))}")
    return cls.load(path, mmap=mmap, verify=verify)
