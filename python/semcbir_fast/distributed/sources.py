"""Where the images of a distributed build come from: local folders and files, or any
filesystem URI that pyarrow opens (``s3://``, ``gs://``, ``hdfs://``, ``file://``; and any
fsspec protocol through pyarrow's fsspec handler), as Ray Data reads them.

Keys: a local image's key is its absolute path (:func:`semcbir_fast.pipeline.image_key`,
as for a single-machine build); a remote image's key is its URI. A worker copies a remote
image to a local scratch folder before it is decoded (the decoders, the label-map cache and
the feature extractors read files) and stores it under its URI.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["discover_images", "fetch", "is_uri"]

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(item: str) -> bool:
    """Whether ``item`` is a filesystem URI (``scheme://...``) rather than a local path."""
    return bool(_URI.match(item))


def _filesystem(uri: str) -> tuple[Any, str]:
    """``(pyarrow FileSystem, path inside it)`` of a URI; fsspec protocols that pyarrow does
    not know are wrapped in its fsspec handler."""
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except (ValueError, TypeError):  # pyarrow's ArrowInvalid is a ValueError
        pass
    try:
        import fsspec
    except ImportError:
        raise ValueError(f"cannot open {uri}: pyarrow does not know its scheme and fsspec "
                         "is not installed") from None
    fs, path = fsspec.core.url_to_fs(uri)
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def _scheme_prefix(uri: str, inner: str, listed: str) -> str:
    """The URI of ``listed`` (a path inside the filesystem of ``uri``)."""
    scheme = uri.split("://", 1)[0]
    if scheme == "file":
        return "file://" + listed if listed.startswith("/") else "file:///" + listed
    return f"{scheme}://{listed}"


def discover_images(inputs: Sequence[str]) -> list[str]:
    """Image keys under the folders, files and URIs given (recursively, hidden files and
    folders skipped), each folder's images in natural order, without duplicates.

    Raises ``FileNotFoundError`` for a local path that does not exist and ``ValueError``
    for a local file that is not an image.
    """
    from ..eval.datasets import IMAGE_EXTENSIONS, find_images
    from ..pipeline import image_key

    out: list[str] = []
    seen: set[str] = set()
    for item in inputs:
        item = os.fspath(item)
        if is_uri(item):
            found = _list_uri(item, IMAGE_EXTENSIONS)
        else:
            p = Path(item)
            if p.is_dir():
                found = [image_key(x) for x in find_images(p)]
            elif p.is_file():
                if not p.name.lower().endswith(IMAGE_EXTENSIONS):
                    raise ValueError(f"{item} is not an image file (known endings: "
                                     f"{' '.join(IMAGE_EXTENSIONS)})")
                found = [image_key(p)]
            else:
                raise FileNotFoundError(f"no such folder or file: {item}")
        for k in found:
            if k not in seen:
                seen.add(k)
                out.append(k)
    return out


def _natural(s: str) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def _list_uri(uri: str, extensions: Sequence[str]) -> list[str]:
    import pyarrow.fs as pafs

    fs, inner = _filesystem(uri)
    info = fs.get_file_info(inner)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"no such folder or file: {uri}")
    if info.type == pafs.FileType.File:
        entries = [info]
    else:
        entries = [e for e in fs.get_file_info(pafs.FileSelector(inner, recursive=True))
                   if e.type == pafs.FileType.File]
    keep = []
    for e in entries:
        rel = e.path[len(inner):].lstrip("/") if e.path.startswith(inner) else e.base_name
        if any(part.startswith(".") for part in rel.split("/") if part):
            continue
        if e.base_name.lower().endswith(tuple(extensions)):
            keep.append(e.path)
    keep.sort(key=_natural)
    return [_scheme_prefix(uri, inner, p) for p in keep]


def fetch(keys: Sequence[str], scratch: str | os.PathLike[str]
          ) -> tuple[list[str], dict[str, str], list[tuple[str, str]]]:
    """Local files for ``keys``: local paths as they are, URIs copied into ``scratch``.

    Returns ``(local paths in key order, {local path: key}, [(key, reason)] of the URIs that
    could not be copied)``.
    """
    local: list[str] = []
    key_of: dict[str, str] = {}
    failed: list[tuple[str, str]] = []
    scratch = Path(scratch)
    for n, key in enumerate(keys):
        if not is_uri(key):
            local.append(key)
            key_of[key] = key
            continue
        try:
            fs, inner = _filesystem(key)
            dst = scratch / f"{n:07d}{Path(inner).suffix.lower()}"
            with fs.open_input_stream(inner) as src, open(dst, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        except (OSError, ValueError) as exc:
            failed.append((key, f"cannot fetch: {exc}"))
            continue
        local.append(str(dst))
        key_of[str(dst)] = key
    return local, key_of, failed
