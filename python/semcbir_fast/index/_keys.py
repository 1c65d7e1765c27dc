"""Keys of append-only indexes (ids ``0 .. count - 1`` in insertion order): one place for the
checks and accessors :class:`~semcbir_fast.index.DenseIndex`,
:class:`~semcbir_fast.index.SparseSignatureIndex` and :class:`~semcbir_fast.index.BinaryIndex`
share. An index has a key (a str) for every entry or for none.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["AppendOnlyKeys", "check_new_keys"]

_NO_KEYS = "this index has no keys: pass keys=... to add()"


def check_new_keys(keys: Sequence[str] | None, m: int, item: str = "image") -> list[str] | None:
    """``keys`` given to ``add`` for ``m`` new entries, as a list (``None`` stays ``None``);
    ValueError unless they are ``m`` strings."""
    if keys is None:
        return None
    if isinstance(keys, (str, bytes)):
        raise ValueError(  # noqa: TRY004 - a ValueError like every other bad key
            f"keys must be a sequence of str (one per {item}), got a single string")
    out = list(keys)
    if len(out) != m or not all(isinstance(k, str) for k in out):
        raise ValueError(f"keys must be {m} strings (one per {item})")
    return out


class AppendOnlyKeys:
    """Mixin: ``ids`` / ``keys`` / ``keys_of`` over ``self._keys`` (a list or ``None``), and
    the rule that every ``add`` has keys once the first one had (call
    :meth:`_check_keys_locked` under the index's lock)."""

    _keys: list[str] | None

    @property
    def has_keys(self) -> bool:
        """Whether the entries carry keys."""
        return self._keys is not None

    def ids(self) -> np.ndarray:
        """All ids (``0 .. len - 1``)."""
        return np.arange(len(self), dtype=np.int64)

    def keys(self) -> list[str]:
        """Keys of the entries in id order (``ValueError`` if the index has none)."""
        if self._keys is None:
            raise ValueError(_NO_KEYS)
        return list(self._keys)

    def keys_of(self, ids: Any) -> list[str | None]:
        """Keys of several ids (e.g. a row of search results); ``None`` for id -1 padding."""
        keys = self._keys
        if keys is None:
            raise ValueError(_NO_KEYS)
        return [keys[i] if 0 <= i < len(keys) else None
                for i in np.asarray(ids).reshape(-1).tolist()]

    def _checked_ids(self, ids: Any) -> np.ndarray:
        """``ids`` as int64 rows (ids are rows here); ValueError unless a 1-D sequence of
        integers, KeyError for an id not in the index."""
        rows = np.atleast_1d(np.asarray(ids))
        if rows.size and (rows.dtype.kind not in "iu" or rows.ndim != 1):
            raise ValueError(f"ids must be a 1-D sequence of integers, got {rows!r}")
        rows = rows.astype(np.int64)
        bad = (rows < 0) | (rows >= len(self))  # type: ignore[arg-type]
        if bad.any():
            raise KeyError(f"ids not in the index: {rows[bad][:10].tolist()}")
        return rows

    def _check_keys_locked(self, keys: list[str] | None) -> None:
        """ValueError when ``keys`` (of an ``add``) breaks "keys for every entry or none"."""
        if len(self) and (keys is None) != (self._keys is None):
            raise ValueError("this index has keys: pass keys=... with every add()"
                             if keys is None else "this index has no keys (its first add "
                             "had none); build a new index to store keys")

    def _append_keys_locked(self, keys: list[str] | None, m: int) -> None:
        """Record the keys of ``m`` appended entries (``m`` may be 0: an empty first add
        with keys makes a keyed index)."""
        if keys is None:
            return
        if m == 0:
            if len(self) == 0:
                self._keys = []
            return
        self._keys = (self._keys or []) + keys
