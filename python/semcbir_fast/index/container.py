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
the destination (:func:`os.replace`): a crash leaves the old file or the new one, and the
temporary file of a killed write is removed by the next save or load of the same file
(:mod:`semcbir_fast._atomic`: only abandoned ones, never another live writer's).

Reading trusts nothing in the file: the preamble, the end marker and (``verify``) the
checksum are checked, the header must be a JSON object of at most :data:`MAX_HEADER_BYTES`
bytes nested at most :data:`MAX_HEADER_DEPTH` deep, and every section of the table must lie
inside the data area, 64-aligned, without overlapping another; the index classes then check
every number of their header against the sections (counts, sizes, ids, CSR structure,
finite values) so that a file that loads answers queries without further surprises.

Memory-mapped files and in-place rewrites: a loaded index keeps working when its file is
*replaced* (as :func:`write_container` does: rename), because the mapping holds the old
file. A file rewritten *in place* by another program (``cp other.sbsi index.sbsi``,
truncation) would make the mapped pages change or vanish (``SIGBUS``); a mapped index
therefore checks the file's size and modification time (:meth:`MappedFile.check`) before
it reads the mapping and raises :class:`IndexFormatError` ("modified in place") instead. A
rewrite that lands *during* one query cannot be caught this way: replace index files by
rename, or load with ``mmap=False``. (A private ``MAP_PRIVATE`` mapping would not help:
its pages that were never written still show the file's current contents, and it faults
the same way past a truncation.)
"""

from __future__ import annotations

import hashlib
import json
import mmap as _mmap
import operator
import os
import stat
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_path, remove_stale_temporaries

MAGIC = b"\x89SBS\r\n\x1a\n"
END_MAGIC = b"SBSIEND\n"
CONTAINER_VERSION = 1
_PREAMBLE = struct.Struct("<8sIIQ8s")  # magic, version, header_len, file_size, reserved
_DIGEST_SIZE = 16
_TRAILER = _DIGEST_SIZE + len(END_MAGIC)
_ALIGN = 64
#: Largest JSON header a file may have (bytes). The library's own are a few KB; the class
#: names of a 65,536-class model fit. (Parsed, a crafted header can take ~25x its size.)
MAX_HEADER_BYTES = 4 << 20
#: Deepest nesting of lists / objects in a header (the library writes 3 levels).
MAX_HEADER_DEPTH = 64
#: Most sections a file may list (the library writes at most 8).
MAX_SECTIONS = 64
_INT64_MAX = (1 << 63) - 1


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
    """A JSON round-trip copy of a user's metadata dict (clear error if it is not JSON, or
    nested deeper than a loader accepts)."""
    if not isinstance(metadata, dict):
        raise ValueError(  # noqa: TRY004 - the save's one error type for bad metadata
            f"metadata must be a dict, got {type(metadata).__name__}")
    try:
        out = json.loads(json.dumps(metadata))
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"metadata must be JSON-serialisable to save the index ({exc})") from None
    if _depth(out) > MAX_HEADER_DEPTH - 1:
        raise ValueError(f"metadata must be nested at most {MAX_HEADER_DEPTH - 1} levels deep "
                         "to save the index")
    return out


def _depth(value: Any) -> int:
    """Nesting depth of lists / dicts in a parsed JSON value (iterative: no recursion)."""
    deepest = 0
    todo = [(value, 1)]
    while todo:
        v, d = todo.pop()
        if isinstance(v, dict):
            v = list(v.values())
        elif not isinstance(v, list):
            continue
        deepest = max(deepest, d)
        todo.extend((x, d + 1) for x in v if isinstance(x, (list, dict)))
    return deepest


def header_int(value: Any, lo: int = 0, hi: int = _INT64_MAX) -> int | None:
    """``value`` when it is a JSON integer (not a bool) in ``[lo, hi]``, else None."""
    if isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi:
        return value
    return None


def write_index(path: str | os.PathLike[str], header: dict[str, Any],
                sections: Sequence[Section], keys: Sequence[str] | None,
                metadata: Any) -> Path:
    """Write one index file: ``header`` with the fields every index has (``has_keys``,
    ``metadata`` as :func:`json_metadata` made it, ``library_version``), ``sections`` with
    the key sections after them when ``keys`` is not None."""
    header = {**header, "has_keys": keys is not None, "metadata": metadata,
              "library_version": library_version()}
    if keys is not None:
        sections = [*sections, *encode_keys(keys)]
    return write_container(path, header, sections)


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
    if len(hbytes) > MAX_HEADER_BYTES:
        raise ValueError(f"the index header would have {len(hbytes):,} bytes, more than a "
                         f"loader accepts ({MAX_HEADER_BYTES:,}); store less metadata")
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


class MappedFile:
    """A read-only memory map of an index file, and the means to tell whether the file was
    rewritten in place since it was mapped (see the module docstring).

    The map (:attr:`mmap`) and a descriptor of the same file are kept open: the descriptor
    follows the mapped file even after a rename replaced it under its name, so that
    :meth:`check` looks at the file the pages come from.
    """

    def __init__(self, path: Path, fileno: int) -> None:
        self.path = path
        self._fd = os.dup(fileno)
        try:
            st = os.fstat(self._fd)
            self._identity = (st.st_size, st.st_mtime_ns)
            self.mmap = _mmap.mmap(self._fd, 0, access=_mmap.ACCESS_READ)
        except BaseException:
            os.close(self._fd)
            raise

    def check(self) -> None:
        """Raise :class:`IndexFormatError` if the mapped file changed size or was written
        since it was loaded (reading the map could then crash with ``SIGBUS``)."""
        fd = self._fd
        if fd < 0:
            return
        st = os.fstat(fd)
        if (st.st_size, st.st_mtime_ns) != self._identity:
            raise IndexFormatError(
                self.path,
                f"the file was modified in place after it was loaded (now {st.st_size} "
                f"bytes, was {self._identity[0]}); load it again (saves that replace the file "
                "by rename, as this library's do, keep loaded indexes valid)")

    def close(self) -> None:
        try:
            self.mmap.close()
        except BufferError:  # an array still points into it; the GC closes it later
            pass
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:
        fd, self._fd = getattr(self, "_fd", -1), -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:  # pragma: no cover
                pass


class Container:
    """A loaded (or memory-mapped) container: its header and typed views of its sections.

    The section table has been checked by :func:`read_container` (each section inside the
    data area, 64-aligned, no two overlapping); :meth:`array` also checks that a section
    holds exactly what the caller's header numbers imply.
    """

    def __init__(self, path: Path, buf: Any, header: dict[str, Any], dstart: int, end: int,
                 keep: MappedFile | None) -> None:
        self.path = path
        self.buf = buf
        self.header = header
        self._dstart = dstart
        self._end = end
        #: the MappedFile to keep alive with the arrays (None when the file was read)
        self.keep = keep

    def error(self, reason: str) -> IndexFormatError:
        return IndexFormatError(self.path, reason)

    def _section(self, name: str, nbytes: int) -> int:
        s = self.header["sections"].get(name)
        if s is None:
            raise self.error(f"corrupted header: section {name!r} missing")
        if nbytes < 0 or s["nbytes"] != nbytes:
            raise self.error(
                f"corrupted header: section {name!r} has {s['nbytes']} bytes, the header's "
                f"numbers need {nbytes}")
        return self._dstart + s["offset"]

    def has(self, name: str) -> bool:
        return name in self.header["sections"]

    def array(self, name: str, dtype: Any, count: int) -> np.ndarray:
        """A read-only view of ``count`` items of ``dtype`` (checked against the table)."""
        dt = np.dtype(dtype)
        try:
            count = operator.index(count)
        except TypeError:
            count = -1
        if count < 0:
            raise self.error(f"corrupted header: a negative or non-integer number of items "
                             f"for section {name!r}")
        off = self._section(name, count * dt.itemsize)
        return np.frombuffer(self.buf, dtype=dt, count=count, offset=off)

    def nbytes(self, name: str) -> int:
        """The size the table gives a section."""
        s = self.header["sections"].get(name)
        if s is None:
            raise self.error(f"corrupted header: section {name!r} missing")
        return int(s["nbytes"])

    def keys(self, count: int) -> list[str]:
        """String keys stored by :func:`encode_keys`."""
        offs = self.array("key_offsets", "<u8", count + 1)
        if offs[0] != 0 or np.any(offs[1:] < offs[:-1]) or int(offs[-1]) > self._end:
            raise self.error("corrupted: key offsets are not increasing from 0")
        blob_len = int(offs[-1])
        off = self._section("key_blob", blob_len)
        blob = bytes(memoryview(self.buf)[off:off + blob_len])
        try:
            return [blob[a:b].decode("utf-8") for a, b in zip(offs[:-1].tolist(),
                                                             offs[1:].tolist())]
        except UnicodeDecodeError as exc:
            raise self.error(f"corrupted key text ({exc})") from None

    def close(self) -> None:
        if self.keep is not None:
            self.keep.close()


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
    if hlen == 0 or hlen > MAX_HEADER_BYTES or _PREAMBLE.size + hlen + _TRAILER > size:
        raise IndexFormatError(
            path, f"corrupted: implausible header length {hlen} for a {size}-byte file"
        )
    if reserved != b"\0" * 8:
        raise IndexFormatError(path, "corrupted: reserved preamble bytes are not zero")


def _decode_header(path: Path, raw: bytes) -> dict[str, Any]:
    """The header JSON object (bounded: size by the preamble check, depth here)."""
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # ValueError: bad JSON, or an integer of more than sys.get_int_max_str_digits()
        # digits; RecursionError: nesting deeper than the parser's limit
        raise IndexFormatError(path, f"corrupted header ({str(exc)[:200]})") from None
    if not isinstance(header, dict):
        raise IndexFormatError(path, "corrupted header: not a JSON object")
    if _depth(header) > MAX_HEADER_DEPTH:
        raise IndexFormatError(path, f"corrupted header: nested deeper than "
                               f"{MAX_HEADER_DEPTH} levels")
    return header


def _check_sections(path: Path, header: dict[str, Any], dstart: int, end: int) -> None:
    """Every section of the table: a name and two integers, 64-aligned, inside
    ``[dstart, end)``, no two overlapping."""
    table = header.get("sections")
    if not isinstance(table, dict) or not table:
        raise IndexFormatError(path, "corrupted header: no section table")
    if len(table) > MAX_SECTIONS:
        raise IndexFormatError(path, f"corrupted header: {len(table)} sections")
    spans = []
    for name, s in table.items():
        off = header_int(s.get("offset")) if isinstance(s, dict) else None
        nb = header_int(s.get("nbytes")) if isinstance(s, dict) else None
        if off is None or nb is None or off % _ALIGN:
            raise IndexFormatError(
                path, f"corrupted header: section {name!r} is {s!r}, expected a 64-aligned "
                "offset >= 0 and a size >= 0")
        if dstart + off + nb > end:
            raise IndexFormatError(
                path, f"truncated or corrupted: section {name!r} needs bytes "
                f"[{dstart + off}, {dstart + off + nb}) but the data ends at {end}")
        spans.append((off, off + nb, name))
    reach, last = 0, None  # end of the sections so far (empty ones overlap nothing)
    for off, stop, name in sorted(spans):
        if stop == off:
            continue
        if off < reach:
            raise IndexFormatError(path, f"corrupted header: sections {last!r} and {name!r} "
                                   "overlap")
        reach, last = stop, name


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
        raw = bytes(mv[_PREAMBLE.size:_PREAMBLE.size + hlen])
    finally:
        mv.release()
    header = _decode_header(path, raw)
    dstart, end = _align(_PREAMBLE.size + hlen), size - _TRAILER
    _check_sections(path, header, dstart, end)
    return header, dstart, end


def _open(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no index file {path}; build one with `semcbir index` or the index's save()"
        ) from None
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(f"path must be an index file, got the folder {path}")
    if not stat.S_ISREG(st.st_mode):  # a FIFO or a device would block or never end
        raise IndexFormatError(path, "not a regular file")
    return path


def read_container(path: str | os.PathLike[str], *, mmap: bool = True,
                   verify: bool = True) -> Container:
    """Open a container: preamble, end marker, checksum (``verify``), header and section
    table checked (see the module docstring).

    With ``mmap`` the sections are views of a read-only memory map (``Container.keep``, a
    :class:`MappedFile`); otherwise the file is read into memory. Abandoned temporary files
    of killed saves of ``path`` are removed on the way. Raises ``FileNotFoundError`` or
    :class:`IndexFormatError`.
    """
    path = _open(path)
    remove_stale_temporaries(path)
    keep: MappedFile | None = None
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        _check_preamble(path, f.read(_PREAMBLE.size), size)
        if mmap:
            keep = MappedFile(path, f.fileno())
            buf: Any = keep.mmap
        else:
            f.seek(0)
            buf = f.read()
            if len(buf) != size:
                raise IndexFormatError(path, "the file changed while it was read")
    try:
        header, dstart, end = _parse(path, buf, verify)
    except BaseException:
        if keep is not None:
            keep.close()
        raise
    return Container(path, buf, header, dstart, end, keep)


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
    fmt = _decode_header(path, raw).get("format")
    if not isinstance(fmt, str):
        raise IndexFormatError(path, "corrupted header: no format name")
    return fmt
