"""One way to serialise the library's array objects (vocabularies, signature matrices).

Each such class has a pair ``to_state() -> (meta, arrays)`` / ``from_state(meta, arrays)``:
``meta`` a flat dict of JSON scalars (str, int, float, bool, None), ``arrays`` a dict of
NumPy arrays. The same pair serves the stand-alone ``.npz`` files (:func:`write_npz` /
:func:`read_npz`: every meta entry a 0-d array, ``None`` stored as ``""``, beside a
``format`` tag) and the index container (meta in the JSON header, arrays as sections).

Reading trusts nothing in the file (:func:`read_arrays`): the zip archive's sizes must agree
with each other and with each ``.npy`` member's header, only plain numeric, boolean and
string arrays are accepted (never pickles, objects or structured types), and a member is
read only once its declared size matches the bytes the archive holds for it. Memory is
therefore bounded by the sizes the file itself declares and holds (for the library's own,
uncompressed files: the file's size). Every failure is a ``ValueError`` naming the file.
"""

from __future__ import annotations

import os
import struct
import tokenize
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

__all__ = ["read_arrays", "read_npz", "write_npz"]

#: Most members an ``.npz`` file may have (the library writes at most 12).
MAX_MEMBERS = 64
_NPY_HEADER_MAX = 10000  # numpy's own default limit on a .npy header
_DEFLATE_MAX_RATIO = 1100  # deflate expands at most ~1032x: more is a corrupted size
_KINDS = "biufcUS"  # bool, ints, floats, complex, str, bytes (no objects, no structs)
#: What a damaged or crafted .npz can raise inside zipfile / zlib / numpy's header parser.
_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, OSError, EOFError,
                KeyError, ValueError, struct.error, UnicodeDecodeError, NotImplementedError,
                RuntimeError, OverflowError, SyntaxError, tokenize.TokenError, RecursionError,
                TypeError)


def write_npz(path: str | os.PathLike[str], fmt: str, meta: dict[str, Any],
              arrays: dict[str, np.ndarray]) -> None:
    """Write ``meta`` and ``arrays`` to an ``.npz`` file tagged ``format = fmt``."""
    fields = {k: np.array("" if v is None else v) for k, v in meta.items()}
    np.savez(Path(path), format=np.array(fmt), **fields, **arrays)


def _member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """One ``.npy`` member, its header checked against the archive before any allocation."""
    with zf.open(info) as f:
        version = npy_format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(f, _NPY_HEADER_MAX)
        elif version == (2, 0):
            shape, fortran, dtype = npy_format.read_array_header_2_0(f, _NPY_HEADER_MAX)
        else:
            raise ValueError(f"member {info.filename}: .npy version {version}")
        if dtype.kind not in _KINDS or dtype.hasobject or dtype.fields is not None \
                or dtype.subdtype is not None or dtype.itemsize == 0:
            raise ValueError(f"member {info.filename}: unsupported dtype {dtype}")
        if not all(isinstance(d, int) and d >= 0 for d in shape):
            raise ValueError(f"member {info.filename}: bad shape {shape}")
        count = 1
        for d in shape:
            count *= d
        nbytes = count * dtype.itemsize
        start = f.tell()
        if start + nbytes != info.file_size:
            raise ValueError(f"member {info.filename}: its header declares {nbytes} bytes of "
                             f"data, the archive holds {info.file_size - start}")
        data = f.read(nbytes)
        if len(data) != nbytes or f.read(1):
            raise ValueError(f"member {info.filename}: {len(data)} bytes of data, expected "
                             f"{nbytes}")
    arr = np.frombuffer(data, dtype=dtype, count=count).reshape(
        shape, order="F" if fortran else "C")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def read_arrays(path: str | os.PathLike[str], what: str) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file by name, read defensively (see the module docstring).

    Raises ``ValueError`` naming ``what`` for a file that cannot be read or is not a plain
    ``.npz`` of numeric / string arrays consistent with its own sizes.
    """
    path = Path(path)
    try:
        size = os.stat(path).st_size
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if not infos or len(infos) > MAX_MEMBERS:
                raise ValueError(f"{len(infos)} members")
            names = [i.filename for i in infos]
            if len(set(names)) != len(names) or not all(n.endswith(".npy") for n in names):
                raise ValueError("members are not distinct .npy arrays")
            held = 0
            for i in infos:
                held += i.compress_size
                if i.compress_type == zipfile.ZIP_STORED:
                    ok = i.compress_size == i.file_size
                elif i.compress_type == zipfile.ZIP_DEFLATED:
                    ok = i.file_size <= _DEFLATE_MAX_RATIO * i.compress_size + 1024
                else:
                    ok = False
                if not ok or i.flag_bits & 0x1:  # 0x1: encrypted
                    raise ValueError(f"member {i.filename}: unsupported or inconsistent sizes "
                                     "or compression")
            if held > size:  # members overlap: the same bytes read several times
                raise ValueError("the members hold more bytes than the file")
            return {i.filename[:-4]: _member(zf, i) for i in infos}
    except FileNotFoundError:
        raise ValueError(f"cannot read {what} {path}: no such file") from None
    except _READ_ERRORS as exc:
        raise ValueError(f"cannot read {what} {path}: {str(exc)[:300]}") from None


def read_npz(path: str | os.PathLike[str], fmt: str, what: str,
             required: tuple[str, ...] = ()) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a file written by :func:`write_npz`: ``(meta, arrays)``.

    0-d entries become Python scalars in ``meta`` (``""`` stays ``""``: the caller maps it
    back to None where None is meant); the others are ``arrays``. Raises ``ValueError``
    naming ``what`` when the file cannot be read (:func:`read_arrays`), has another format
    tag or lacks one of ``required``.
    """
    z = read_arrays(path, what)
    tag = z.get("format")
    if tag is None or tag.ndim != 0 or tag.dtype.kind != "U" or str(tag) != fmt \
            or not set(required) <= set(z):
        raise ValueError(f"{path} is not a semcbir_fast {what} file ({fmt})")
    meta: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    for name in sorted(set(z) - {"format"}):
        a = z[name]
        if a.ndim == 0:
            meta[name] = a.item()
        else:
            arrays[name] = a
    return meta, arrays
