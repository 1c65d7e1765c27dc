"""The single-file container shared by every index format of the library.

One file = a preamble, a JSON header, 64-byte aligned binary sections and a checksummed
trailer. :mod:`semcbir_fast.index` (SBS codes) and :mod:`semcbir_fast.local_index` (SBoVP
and hybrid signatures) store different sections in it; the header's ``"format"`` tells them
apart. The layout (all integers little-endian, ``align64(x)`` rounds up to a multiple of 64):

====================  ===========================================================
offset                content
====================  ===========================================================
0                     magic ``b"\\x89SBS\\r\\n\\x1a\\n"`` (8 bytes; PNG-style: catches text-mode
                      and 7-bit transfers)
8                     container version, uint32 (= 1)
12                    header length ``H`` in bytes, uint32
16                    total file size, uint64 (detects truncation and appended data)
24                    reserved, 8 zero bytes
32                    header: UTF-8 JSON object of ``H`` bytes; always has ``format``,
                      ``version`` and ``sections`` (``{name: {"offset": relative to D,
                      "nbytes": ...}}``)
32 + H                zero padding up to ``D = align64(32 + H)``
D + offset            each section, on a 64-byte boundary (zero padding between them)
size - 24             checksum: BLAKE2b with a 16-byte digest over bytes ``[0, size - 24)``
size - 8              end magic ``b"SBSIEND\\n"``
====================  ===========================================================

Because ``D`` and every section offset are multiples of 64 and ``mmap`` maps whole pages,
memory-mapped sections are 64-byte aligned, as the SIMD kernels prefer. A write goes to a
temporary file in the destination folder which is flushed, ``fsync``-ed and renamed over
the destination (:func:`os.replace`): a crash leaves the old file or the new one.
"""

from __future__ import annotations

import hashlib
import json
import mmap as _mmap
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_path

MAGIC = b"\x89SBS\r\n\x1a\n"
END_MAGIC = b"SBSIEND\n"
CONTAINER_VERSION = 1
_PREAMBLE = struct.Struct("<8sIIQ8s")  # magic, version, header_len, file_size, reserved
_DIGEST_SIZE = 16
_TRAILER = _DIGEST_SIZE + len(END_MAGIC)
_ALIGN = 64
_MAX_HEADER = 1 << 30


class IndexFormatError(ValueError):
    """A file is not a readable index: foreign, truncated, corrupted or too new.

    Attributes
    ----------
    path : str
        The file that failed to load.
    reason : str
        What is wrong with it, without the file name.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"cannot load index {self.path}: {reason}")


def _align(x: int) -> int:
    return (x + _ALIGN - 1) // _ALIGN * _ALIGN


def library_version() -> str:
    from .. import __version__

    return __version__


Section = tuple[str, Any]  # (name, numpy array or bytes)


def encode_keys(keys: Sequence[str]) -> list[Section]:
    """The ``key_offsets`` (uint64, ``count + 1``) and ``key_blob`` sections of string keys."""
    enc = [k.encode("utf-8") for k in keys]
    offs = np.zeros(len(enc) + 1, dtype="<u8")
    if enc:
        np.cumsum([len(b) for b in enc], out=offs[1:])
    return [("key_offsets", offs), ("key_blob", b"".join(enc))]


def json_metadata(metadata: dict[str, Any]) -> Any:
    """A JSON round-trip copy of a user's metadata dict (clear error if it is not JSON)."""
    try:
        return json.loads(json.dumps(metadata))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata must be JSON-serialisable to save the index ({exc})") from None


def write_container(path: str | os.PathLike[str], header: dict[str, Any],
                    sections: Sequence[Section]) -> Path:
    """Write ``header`` (JSON-serialisable; ``sections`` is added) and the sections atomically.

    ``sections`` must not be empty. Arrays are written as their C-order bytes (give them the
    little-endian dtype you want on disk).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"path must be a file name, got the folder {path}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")
    blobs: list[tuple[str, Any, int]] = []
    for name, arr in sections:
        if isinstance(arr, bytes):
            blobs.append((name, arr, len(arr)))
        else:
            flat = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
            blobs.append((name, flat, int(flat.shape[0])))
    table: dict[str, dict[str, int]] = {}
    pos = 0
    for name, _, nb in blobs:
        table[name] = {"offset": pos, "nbytes": nb}
        pos = _align(pos + nb)
    # The last section needs no trailing padding: the trailer follows it directly.
    data_len = table[blobs[-1][0]]["offset"] + blobs[-1][2]
    hbytes = json.dumps({**header, "sections": table}, separators=(",", ":"),
                        sort_keys=True).encode("utf-8")
    dstart = _align(_PREAMBLE.size + len(hbytes))
    size = dstart + data_len + _TRAILER
    pre = _PREAMBLE.pack(MAGIC, CONTAINER_VERSION, len(hbytes), size, b"\0" * 8)

    h = hashlib.blake2b(digest_size=_DIGEST_SIZE)
    with atomic_path(path, durable=True) as tmp, open(tmp, "wb") as f:

        def put(b: Any) -> None:
            h.update(b)
            f.write(b)

        put(pre)
        put(hbytes)
        put(b"\0" * (dstart - _PREAMBLE.size - len(hbytes)))
        written = 0
        for name, arr, nb in blobs:
            off = table[name]["offset"]
            if off > written:
                put(b"\0" * (off - written))
                written = off
            step = 1 << 24
            for s in range(0, nb, step):
                put(arr[s:s + step])
            written += nb
        f.write(h.digest())
        f.write(END_MAGIC)
        f.flush()
        os.fsync(f.fileno())
    return path


class Container:
    """A loaded (or memory-mapped) container: its header and typed views of its sections."""

    def __init__(self, path: Path, buf: Any, header: dict[str, Any], dstart: int, end: int,
                 keep: Any) -> None:
        self.path = path
        self.buf = buf
        self.header = header
        self._dstart = dstart
        self._end = end
        #: the mmap object to keep alive with the arrays (None when the file was read)
        self.keep = keep

    def error(self, reason: str) -> IndexFormatError:
        return IndexFormatError(self.path, reason)

    def _section(self, name: str, nbytes: int) -> int:
        s = self.header["sections"].get(name)
        if not isinstance(s, dict) or not all(
            isinstance(s.get(k), int) and not isinstance(s.get(k), bool)
            for k in ("offset", "nbytes")
        ):
            raise self.error(f"corrupted header: section {name!r} missing or malformed")
        off, nb = self._dstart + s["offset"], s["nbytes"]
        if s["offset"] < 0 or s["offset"] % _ALIGN or nb != nbytes:
            raise self.error(
                f"corrupted header: section {name!r} at {s['offset']} with {nb} bytes, "
                f"expected a 64-aligned offset and {nbytes} bytes")
        if off + nb > self._end:
            raise self.error(
                f"truncated: section {name!r} needs bytes [{off}, {off + nb}) but the data "
                f"ends at {self._end}")
        return off

    def has(self, name: str) -> bool:
        return name in self.header["sections"]

    def array(self, name: str, dtype: Any, count: int) -> np.ndarray:
        """A read-only view of ``count`` items of ``dtype`` (checked against the table)."""
        dt = np.dtype(dtype)
        off = self._section(name, count * dt.itemsize)
        return np.frombuffer(self.buf, dtype=dt, count=count, offset=off)

    def nbytes(self, name: str) -> int:
        """The size the table gives a section (validated when it is read)."""
        s = self.header["sections"].get(name)
        nb = s.get("nbytes") if isinstance(s, dict) else None
        if not isinstance(nb, int) or isinstance(nb, bool) or nb < 0:
            raise self.error(f"corrupted header: section {name!r} missing or malformed")
        return nb

    def keys(self, count: int) -> list[str]:
        """String keys stored by :func:`encode_keys`."""
        offs = self.array("key_offsets", "<u8", count + 1).astype(np.int64)
        blob_len = int(offs[-1])
        if offs[0] != 0 or np.any(np.diff(offs) < 0) or blob_len < 0:
            raise self.error("corrupted: key offsets are not increasing from 0")
        off = self._section("key_blob", blob_len)
        blob = bytes(memoryview(self.buf)[off:off + blob_len])
        try:
            return [blob[a:b].decode("utf-8") for a, b in zip(offs[:-1].tolist(),
                                                             offs[1:].tolist())]
        except UnicodeDecodeError as exc:
            raise self.error(f"corrupted key text ({exc})") from None

    def close(self) -> None:
        if self.keep is not None:
            try:
                self.keep.close()
            except BufferError:  # an array still points into it; the GC closes it later
                pass


def _check_preamble(path: Path, head: bytes, size: int) -> None:
    if len(head) < len(MAGIC) or head[: len(MAGIC)] != MAGIC:
        if len(head) < len(MAGIC) and MAGIC.startswith(head):
            raise IndexFormatError(path, f"truncated: {size} bytes, not even a full preamble")
        raise IndexFormatError(
            path,
            f"not a semcbir index (starts with {head[:8]!r}, expected {MAGIC!r}); is it "
            "an image or another program's file?",
        )
    if len(head) < _PREAMBLE.size:
        raise IndexFormatError(path, f"truncated: {size} bytes, not even a full preamble")
    _, version, hlen, fsize, reserved = _PREAMBLE.unpack(head)
    if version != CONTAINER_VERSION:
        raise IndexFormatError(
            path,
            f"format version {version}, but this library (semcbir_fast "
            f"{library_version()}) reads version {CONTAINER_VERSION}; "
            + ("upgrade semcbir_fast" if version > CONTAINER_VERSION
               else "the file is corrupted"),
        )
    if fsize != size:
        what = "truncated" if size < fsize else "has unexpected trailing data"
        raise IndexFormatError(
            path, f"{what}: the preamble says {fsize} bytes, the file has {size}"
        )
    if hlen == 0 or hlen > _MAX_HEADER or _PREAMBLE.size + hlen + _TRAILER > size:
        raise IndexFormatError(
            path, f"corrupted: implausible header length {hlen} for a {size}-byte file"
        )
    if reserved != b"\0" * 8:
        raise IndexFormatError(path, "corrupted: reserved preamble bytes are not zero")


def _parse(path: Path, buf: Any, verify: bool) -> tuple[dict[str, Any], int, int]:
    size = len(buf)
    mv = memoryview(buf)
    try:
        _, _, hlen, _, _ = _PREAMBLE.unpack_from(mv, 0)
        if bytes(mv[size - len(END_MAGIC):]) != END_MAGIC:
            raise IndexFormatError(path, "truncated or corrupted: the end marker is missing")
        if verify:
            h = hashlib.blake2b(digest_size=_DIGEST_SIZE)
            step = 1 << 26
            with mv[: size - _TRAILER] as body:
                for s in range(0, len(body), step):
                    with body[s:s + step] as part:
                        h.update(part)
            if h.digest() != bytes(mv[size - _TRAILER: size - len(END_MAGIC)]):
                raise IndexFormatError(
                    path,
                    "corrupted: checksum mismatch (the file was modified or damaged after it "
                    "was written); rebuild it or restore a copy",
                )
        try:
            header = json.loads(bytes(mv[_PREAMBLE.size:_PREAMBLE.size + hlen]).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise IndexFormatError(path, f"corrupted header ({exc})") from None
    finally:
        mv.release()
    if not isinstance(header, dict) or not isinstance(header.get("sections"), dict):
        raise IndexFormatError(path, "corrupted header: no section table")
    return header, _align(_PREAMBLE.size + hlen), size - _TRAILER


def _open(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"no index file {path}; build one with `semcbir index` or the index's save()"
        )
    if path.is_dir():
        raise IsADirectoryError(f"path must be an index file, got the folder {path}")
    return path


def read_container(path: str | os.PathLike[str], *, mmap: bool = True,
                   verify: bool = True) -> Container:
    """Open a container: preamble, end marker, checksum (``verify``) and header checked.

    With ``mmap`` the sections are views of a read-only memory map (``Container.keep``);
    otherwise the file is read into memory. Raises ``FileNotFoundError`` or
    :class:`IndexFormatError`.
    """
    path = _open(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        _check_preamble(path, f.read(_PREAMBLE.size), size)
        if mmap:
            buf: Any = _mmap.mmap(f.fileno(), 0, access=_mmap.ACCESS_READ)
        else:
            f.seek(0)
            buf = f.read()
    try:
        header, dstart, end = _parse(path, buf, verify)
    except BaseException:
        if mmap:
            try:
                buf.close()
            except BufferError:  # a view still points into it; the GC closes it later
                pass
        raise
    return Container(path, buf, header, dstart, end, buf if mmap else None)


def load_with(path: str | os.PathLike[str], build: Any, *, mmap: bool = True,
              verify: bool = True) -> Any:
    """``build(read_container(path))``; the memory map is closed if ``build`` fails."""
    c = read_container(path, mmap=mmap, verify=verify)
    try:
        return build(c)
    except BaseException:
        c.close()
        raise


def read_format(path: str | os.PathLike[str]) -> str:
    """The header's ``format`` name of an index file (reads only the preamble and header)."""
    path = _open(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(_PREAMBLE.size)
        _check_preamble(path, head, size)
        hlen = _PREAMBLE.unpack(head)[2]
        raw = f.read(hlen)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexFormatError(path, f"corrupted header ({exc})") from None
    fmt = header.get("format") if isinstance(header, dict) else None
    if not isinstance(fmt, str):
        raise IndexFormatError(path, "corrupted header: no format name")
    return fmt
