"""One way to serialise the library's array objects (vocabularies, signature matrices).

Each such class has a pair ``to_state() -> (meta, arrays)`` / ``from_state(meta, arrays)``:
``meta`` a flat dict of JSON scalars (str, int, float, bool, None), ``arrays`` a dict of
NumPy arrays. The same pair serves the stand-alone ``.npz`` files (:func:`write_npz` /
:func:`read_npz`: every meta entry a 0-d array, ``None`` stored as ``""``, beside a
``format`` tag) and the index container (meta in the JSON header, arrays as sections).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["read_npz", "write_npz"]


def write_npz(path: str | os.PathLike[str], fmt: str, meta: dict[str, Any],
              arrays: dict[str, np.ndarray]) -> None:
    """Write ``meta`` and ``arrays`` to an ``.npz`` file tagged ``format = fmt``."""
    fields = {k: np.array("" if v is None else v) for k, v in meta.items()}
    np.savez(Path(path), format=np.array(fmt), **fields, **arrays)


def read_npz(path: str | os.PathLike[str], fmt: str, what: str,
             required: tuple[str, ...] = ()) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a file written by :func:`write_npz`: ``(meta, arrays)``.

    0-d entries become Python scalars in ``meta`` (``""`` stays ``""``: the caller maps it
    back to None where None is meant); the others are ``arrays``. Raises ``ValueError``
    naming ``what`` when the file cannot be read, has another format tag or lacks one of
    ``required``.
    """
    try:
        z = np.load(Path(path), allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"cannot read {what} {path}: {exc}") from None
    with z:
        files = set(z.files)
        if "format" not in files or str(z["format"]) != fmt or not set(required) <= files:
            raise ValueError(f"{path} is not a semcbir_fast {what} file ({fmt})")
        meta: dict[str, Any] = {}
        arrays: dict[str, np.ndarray] = {}
        for name in sorted(files - {"format"}):
            a = z[name]
            if a.ndim == 0:
                meta[name] = a.item()
            else:
                arrays[name] = a
    return meta, arrays
