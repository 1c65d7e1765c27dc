"""The manifest of a sharded index: which shard files hold which ids, written last and
atomically by :func:`~semcbir_fast.distributed.build_sharded`.

A sharded index is a folder::

    photos.shards/
        manifest.json        this file (written last, atomically: its presence means the
                             build completed)
        shard-00000.idx      a normal index file of this library (checksummed, memory-mappable;
        shard-00001.idx      ``semcbir info`` / ``load_index`` open it on its own)
        ...

Shard ``j`` holds the images it was given that could be read, under the local ids ``0 ..
count - 1`` (in its images' order); the manifest gives each shard the global id range
``[id_start, id_stop)``, contiguous in shard order, so that global ids are exactly the ids
one index built from every image in the same order would give (``build_index`` numbers the
readable images in order).

JSON fields: ``format`` (``"semcbir-sharded-index"``), ``version`` (1), ``library_version``,
``created``, ``index_format`` (the shards' container format tag), ``signature`` (the
signature's index header, :meth:`~semcbir_fast.signatures.Signature.to_header`), ``count``
(images indexed), ``inputs`` (images planned), ``shards`` (one object per shard: ``file``
relative to the manifest's folder, ``count``, ``inputs``, ``id_start``, ``id_stop``,
``nbytes``, ``digest``: the hex BLAKE2b digest in the shard file's trailer, which ties the
manifest to exactly that file), ``failed`` (``[{"key", "reason", "shard"}]``: every image
that could not be read, never silently dropped) and ``metadata`` (model, class names, ...).

:func:`read_manifest` trusts nothing: a manifest that is not one, names a shard that is
missing, of another size or digest, corrupted (:func:`~semcbir_fast.index.load_index`'s
checks), of another signature or another count is refused with a :class:`ManifestError`
naming the manifest, the shard and the fix.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._atomic import atomic_path
from ..index.container import END_MAGIC, IndexFormatError, library_version

__all__ = ["MANIFEST_FORMAT", "MANIFEST_NAME", "MANIFEST_VERSION", "Manifest", "ManifestError",
           "ShardEntry", "manifest_path", "read_manifest", "shard_digest", "write_manifest"]

MANIFEST_FORMAT = "semcbir-sharded-index"
MANIFEST_VERSION = 1
#: File name of the manifest inside a sharded index's folder.
MANIFEST_NAME = "manifest.json"
#: Largest manifest read (bytes): ~150 bytes per shard and per failed image.
MAX_MANIFEST_BYTES = 256 << 20
_DIGEST_BYTES = 16  # the container's BLAKE2b digest, stored before END_MAGIC


class ManifestError(IndexFormatError):
    """A sharded index cannot be opened: its manifest is not readable, or names a shard
    that is missing, corrupted or does not match it (``path`` is the manifest)."""


@dataclass(frozen=True)
class ShardEntry:
    """One shard of a manifest: its file (relative to the manifest's folder), the images it
    holds (``count``) and was given (``inputs``), its global id range and its file's size
    and trailer digest."""

    file: str
    count: int
    inputs: int
    id_start: int
    id_stop: int
    nbytes: int
    digest: str

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "count": self.count, "inputs": self.inputs,
                "id_start": self.id_start, "id_stop": self.id_stop, "nbytes": self.nbytes,
                "digest": self.digest}


@dataclass
class Manifest:
    """A parsed manifest (see the module docstring); ``root`` is its folder."""

    root: Path
    index_format: str
    signature: dict[str, Any]
    shards: list[ShardEntry]
    failed: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    inputs: int = 0
    created: str = ""
    writer_version: str = ""

    @property
    def count(self) -> int:
        """Images indexed (the sum of the shards' counts)."""
        return sum(s.count for s in self.shards)

    @property
    def path(self) -> Path:
        return self.root / MANIFEST_NAME

    def shard_path(self, entry: ShardEntry) -> Path:
        return self.root / entry.file

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "library_version": library_version(),
            "created": self.created,
            "index_format": self.index_format,
            "signature": self.signature,
            "count": self.count,
            "inputs": self.inputs,
            "shards": [s.to_dict() for s in self.shards],
            "failed": list(self.failed),
            "metadata": self.metadata,
        }


def manifest_path(path: str | os.PathLike[str]) -> Path:
    """The manifest file of a sharded index given as its folder or as the manifest itself."""
    p = Path(path)
    return p / MANIFEST_NAME if p.is_dir() else p


def shard_digest(path: str | os.PathLike[str]) -> tuple[int, str]:
    """``(size in bytes, hex trailer digest)`` of an index file (reads its last 24 bytes;
    the full checksum is checked by ``load_index``)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < _DIGEST_BYTES + len(END_MAGIC):
            raise IndexFormatError(path, f"truncated: {size} bytes")
        f.seek(size - _DIGEST_BYTES - len(END_MAGIC))
        tail = f.read(_DIGEST_BYTES + len(END_MAGIC))
    if tail[_DIGEST_BYTES:] != END_MAGIC:
        raise IndexFormatError(path, "truncated or corrupted: the end marker is missing")
    return size, tail[:_DIGEST_BYTES].hex()


def write_manifest(manifest: Manifest) -> Path:
    """Write ``manifest`` to ``<root>/manifest.json`` atomically (temporary file, fsync,
    rename): readers see the old manifest or the new one."""
    path = manifest.path
    text = json.dumps(manifest.to_dict(), indent=1, sort_keys=True)
    with atomic_path(path, durable=True) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    return path


def _int(v: Any, lo: int = 0) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= lo else None


def _parse(path: Path, raw: bytes) -> Manifest:
    def bad(reason: str) -> ManifestError:
        return ManifestError(path, reason)

    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise bad(f"not a JSON manifest ({str(exc)[:200]})") from None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise bad(f"not a sharded-index manifest (format {doc.get('format') if isinstance(doc, dict) else None!r}, "
                  f"expected {MANIFEST_FORMAT!r}); single index files open with load_index")
    if _int(doc.get("version")) != MANIFEST_VERSION:
        raise bad(f"manifest version {doc.get('version')!r}, this library (semcbir_fast "
                  f"{library_version()}) reads {MANIFEST_VERSION}")
    fmt, sig = doc.get("index_format"), doc.get("signature")
    if not isinstance(fmt, str) or not isinstance(sig, dict):
        raise bad("corrupted: index_format / signature missing")
    shards_doc = doc.get("shards")
    if not isinstance(shards_doc, list):
        raise bad("corrupted: no shard list")
    shards: list[ShardEntry] = []
    nxt = 0
    root = path.parent
    for j, s in enumerate(shards_doc):
        if not isinstance(s, dict):
            raise bad(f"corrupted: shard entry {j} is not an object")
        vals = {k: _int(s.get(k)) for k in ("count", "inputs", "id_start", "id_stop", "nbytes")}
        name, digest = s.get("file"), s.get("digest")
        if any(v is None for v in vals.values()) or not isinstance(name, str) \
                or not isinstance(digest, str):
            raise bad(f"corrupted: shard entry {j} is {s!r}")
        # shard files live inside the manifest's folder: no absolute paths, no '..'
        if Path(name).is_absolute() or ".." in Path(name).parts or not name:
            raise bad(f"corrupted: shard entry {j} names {name!r}, not a file inside "
                      f"{root}")
        if vals["id_start"] != nxt or vals["id_stop"] != nxt + vals["count"] \
                or vals["count"] > vals["inputs"]:
            raise bad(f"corrupted: shard {name} has ids [{vals['id_start']}, "
                      f"{vals['id_stop']}) for {vals['count']} images, expected to start at "
                      f"{nxt}")
        nxt = vals["id_stop"]
        shards.append(ShardEntry(name, vals["count"], vals["inputs"], vals["id_start"],
                                 vals["id_stop"], vals["nbytes"], digest))
    if _int(doc.get("count")) != nxt:
        raise bad(f"corrupted: count {doc.get('count')!r} but the shards hold {nxt} images")
    failed = doc.get("failed", [])
    meta = doc.get("metadata", {})
    if not isinstance(failed, list) or not isinstance(meta, dict):
        raise bad("corrupted: failed / metadata")
    return Manifest(root, fmt, sig, shards, failed, meta, _int(doc.get("inputs")) or 0,
                    str(doc.get("created", "")), str(doc.get("library_version", "")))


def read_manifest(path: str | os.PathLike[str], *, check_files: bool = True) -> Manifest:
    """Parse a manifest (the file or its folder) and, with ``check_files``, check that every
    shard it names exists with the recorded size and trailer digest (cheap: the last 24
    bytes; the shards' full checksums are checked when they are loaded).

    Raises
    ------
    FileNotFoundError
        No manifest there (an unfinished build writes none: run it again to complete it).
    ManifestError
        Not a manifest, or a shard missing or not the file the manifest names.
    """
    p = manifest_path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no sharded-index manifest {p}; build one with build_sharded / `semcbir index "
            "--ray` (a build that did not finish writes none: run it again to complete it)"
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise ManifestError(p, "not a regular file")
    if st.st_size > MAX_MANIFEST_BYTES:
        raise ManifestError(p, f"{st.st_size:,} bytes, more than a manifest may have "
                            f"({MAX_MANIFEST_BYTES:,})")
    m = _parse(p, p.read_bytes())
    if check_files:
        for s in m.shards:
            check_shard_file(m, s)
    return m


def check_shard_file(m: Manifest, s: ShardEntry) -> Path:
    """The path of shard ``s`` after checking that it exists with the manifest's size and
    digest (:class:`ManifestError` otherwise)."""
    f = m.shard_path(s)
    try:
        size, digest = shard_digest(f)
    except FileNotFoundError:
        raise ManifestError(m.path, f"shard {s.file} is missing ({f}); copy the whole "
                            "folder, or rebuild: a rerun of the build rewrites missing "
                            "shards") from None
    except IndexFormatError as exc:
        raise ManifestError(m.path, f"shard {s.file} is corrupted ({exc.reason}); rerun the "
                            "build to rewrite it") from None
    except OSError as exc:
        raise ManifestError(m.path, f"shard {s.file} cannot be read ({exc})") from None
    if size != s.nbytes or digest != s.digest:
        raise ManifestError(m.path, f"shard {s.file} is not the file this manifest names "
                            f"(size {size} vs {s.nbytes}, digest {digest[:12]}.. vs "
                            f"{s.digest[:12]}..): it was replaced or damaged; rerun the "
                            "build to make them agree")
    return f


def load_shard(m: Manifest, s: ShardEntry, *, mmap: bool = True, verify: bool = True) -> Any:
    """Load shard ``s`` of ``m`` with :func:`~semcbir_fast.index.load_index` and check it
    against the manifest (file, checksum, format, count, signature): ``ManifestError``."""
    from ..index import load_index

    f = check_shard_file(m, s)
    try:
        idx = load_index(f, mmap=mmap, verify=verify)
    except IndexFormatError as exc:
        raise ManifestError(m.path, f"shard {s.file} is corrupted ({exc.reason}); rerun the "
                            "build to rewrite it") from None
    if len(idx) != s.count:
        raise ManifestError(m.path, f"shard {s.file} holds {len(idx)} images, the manifest "
                            f"says {s.count}")
    head = _plain(idx.signature.to_header())
    if head != _plain(m.signature):
        raise ManifestError(m.path, f"shard {s.file} has another signature than the manifest "
                            f"({idx.signature.describe()})")
    return idx


def _plain(x: Any) -> Any:
    """A JSON round trip (tuples -> lists) so that headers compare as stored."""
    return json.loads(json.dumps(x, sort_keys=True))
