"""Former home of :class:`~semcbir_fast.index.SparseSignatureIndex` (``LocalIndex``) and
:func:`~semcbir_fast.index.load_index`; both now live in :mod:`semcbir_fast.index`."""

from __future__ import annotations

from .index import LocalIndex, SparseSignatureIndex, load_index
from .index.sparse import FORMAT_NAME

__all__ = ["FORMAT_NAME", "LocalIndex", "SparseSignatureIndex", "load_index"]
