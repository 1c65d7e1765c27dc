"""On-disk caches of what is slow to compute per image set: label maps of a segmentation
model (:func:`segment_cached`) and local features (:func:`features_cached`), shared by every
command (index, eval) and keyed alike (:func:`files_key`).

Label maps: 
one ``.npz`` file in ``<cache_dir>/labels/`` (``SEMCBIR_CACHE``, default
``~/.cache/semcbir_fast``) named ``<model>-<key>.npz``, where ``key`` is a SHA-256 over:
the model file's bytes and its sidecar, the compute dtype and resize mode, and the list of
images with each file's absolute path, size and modification time. Any change to the model
or to an image therefore misses the cache. The file holds ``shapes`` (int64 ``(N, 2)``),
``flat`` (all maps concatenated, uint8 or uint16) and ``paths``; it is written to a
temporary name and renamed. Features: ``<cache_dir>/sbovp/features-<method>-<key>.npz``,
keyed by the method, ``max_keypoints``, the OpenCV version and the same image list.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_path

__all__ = [
    "cache_key",
    "features_cached",
    "files_key",
    "label_cache_path",
    "load_label_cache",
    "save_label_cache",
    "segment_cached",
]


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def files_key(parts: dict[str, Any], images: Sequence[str | os.PathLike[str]]) -> str:
    """Hex SHA-256 of ``parts`` (JSON-ready) plus each image's absolute path, size and
    modification time: any change to the settings or to an image misses the cache."""
    rows = []
    for p in images:
        st = os.stat(p)
        rows.append([os.path.abspath(p), st.st_size, st.st_mtime_ns])
    return hashlib.sha256(json.dumps({**parts, "images": rows}, sort_keys=True).encode()
                          ).hexdigest()


def cache_key(
    model_path: str | os.PathLike[str],
    images: Sequence[str | os.PathLike[str]],
    *,
    dtype: str = "float32",
    resize: str = "logits",
) -> str:
    """Hex key of the label maps of ``images`` under the model file ``model_path``."""
    mp = Path(model_path)
    side = mp.with_suffix(".json")
    parts: dict[str, Any] = {
        "model": _file_digest(mp),
        "sidecar": side.read_text() if side.is_file() else None,
        "dtype": dtype,
        "resize": resize,
    }
    return files_key(parts, images)


def label_cache_path(
    model_name: str, key: str, cache_root: str | os.PathLike[str] | None = None
) -> Path:
    """Where the entry ``key`` of model ``model_name`` lives."""
    from semcbir_fast._paths import cache_dir

    root = Path(cache_root) if cache_root is not None else cache_dir()
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in model_name)[:60]
    return root / "labels" / f"{safe}-{key[:24]}.npz"


def save_label_cache(path: Path, maps: Sequence[np.ndarray], paths: Sequence[str]) -> None:
    """Write label maps atomically (see module docstring)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = np.uint16 if any(m.dtype.itemsize > 1 for m in maps) else np.uint8
    shapes = np.array([m.shape for m in maps], dtype=np.int64).reshape(-1, 2)
    flat = (
        np.concatenate([np.asarray(m, dtype=dtype).reshape(-1) for m in maps])
        if maps
        else np.zeros(0, dtype=dtype)
    )
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, shapes=shapes, flat=flat, paths=np.array(list(paths), dtype=str))


def load_label_cache(
    path: Path, expect_paths: Sequence[str] | None = None
) -> list[np.ndarray] | None:
    """Label maps of a cache entry, or None if it is missing, unreadable or for other images."""
    if not path.is_file():
        return None
    from .._serialize import read_arrays

    try:
        z = read_arrays(path, "label cache")
    except ValueError:
        return None
    shapes, flat, paths = z.get("shapes"), z.get("flat"), z.get("paths")
    if shapes is None or flat is None or paths is None or shapes.ndim != 2 \
            or shapes.shape[1] != 2 or shapes.dtype.kind not in "iu" or (shapes < 0).any() \
            or flat.ndim != 1 or flat.dtype not in (np.uint8, np.uint16) \
            or paths.ndim != 1 or paths.dtype.kind != "U" or len(paths) != len(shapes):
        return None
    if expect_paths is not None and [str(p) for p in paths] != [str(p) for p in expect_paths]:
        return None
    sizes = [h * w for h, w in shapes.tolist()]
    if sum(sizes) != flat.shape[0]:
        return None
    out: list[np.ndarray] = []
    pos = 0
    for (h, w), n in zip(shapes.tolist(), sizes):
        out.append(flat[pos : pos + n].reshape(h, w))
        pos += n
    return out


def segment_cached(
    images: Sequence[str | os.PathLike[str]],
    *,
    model: str = "ade20k-mnv2",
    device: Any = None,
    dtype: Any = None,
    batch_size: int = 16,
    progress: bool = True,
    use_cache: bool = True,
    cache_root: str | os.PathLike[str] | None = None,
    log: Any = None,
) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Label maps of ``images`` by ``model``, from the cache when possible.

    Parameters
    ----------
    images : sequence of path
    model : str
        Registered model name or TorchScript path (see :func:`semcbir_fast.segment.load_segmenter`).
    device, dtype, batch_size, progress
        Passed to the segmenter.
    use_cache : bool, default True
        Read and write the cache; False always segments (and writes nothing).
    cache_root : path, optional
        Cache folder (default :func:`semcbir_fast._paths.cache_dir`).
    log : callable, optional
        Called with one-line status messages (e.g. ``print`` to stderr).

    Returns
    -------
    maps, info
        One label map per image (input order) and ``{"model", "num_classes",
        "class_names", "model_path", "cache": "hit"|"miss"|"off", "cache_file"}``.

    Raises
    ------
    ValueError
        If an image cannot be read (every image of an evaluation must be segmented).
    """
    from semcbir_fast.models.sidecar import read_sidecar
    from semcbir_fast.segment import _resolve_model, load_segmenter

    paths = [os.fspath(p) for p in images]
    model_path = _resolve_model(model)
    meta = read_sidecar(model_path)
    dname = "float32" if dtype is None else str(dtype).replace("torch.", "")
    info: dict[str, Any] = {
        "model": model if isinstance(model, str) else os.fspath(model),
        "model_name": meta.name,
        "num_classes": meta.num_classes,
        "class_names": list(meta.class_names),
        "model_path": str(model_path),
        "cache": "off",
        "cache_file": None,
    }
    cpath = None
    if use_cache:
        key = cache_key(model_path, paths, dtype=dname)
        cpath = label_cache_path(meta.name, key, cache_root)
        info["cache_file"] = str(cpath)
        maps = load_label_cache(cpath, paths)
        if maps is not None:
            info["cache"] = "hit"
            if log:
                log(f"label maps of {len(paths)} images from cache {cpath}")
            return maps, info
        info["cache"] = "miss"
    seg = load_segmenter(model_path, device=device, dtype=dtype)
    info["device"] = str(seg.device)
    if log:
        log(f"segmenting {len(paths)} images with {meta.name} on {seg.device} ...")
    res = seg.segment(paths, batch_size=batch_size, progress=progress, on_error="skip")
    if res.failed:
        head = "; ".join(f"{src} ({reason})" for _, src, reason in res.failed[:3])
        raise ValueError(
            f"{len(res.failed)} of {len(paths)} images could not be read: {head}; an "
            "evaluation needs every image (remove or fix them)"
        )
    maps = [np.asarray(m) for m in res.labels]
    if cpath is not None:
        save_label_cache(cpath, maps, paths)
    return maps, info


def features_cache_path(paths: Sequence[Any], method: str, max_keypoints: int | None) -> Path:
    """Where the features of ``paths`` by ``method`` are cached."""
    from semcbir_fast._paths import cache_dir

    try:
        import cv2

        cv = cv2.__version__
    except ImportError:  # pragma: no cover
        cv = "?"
    key = files_key({"method": method, "max_keypoints": max_keypoints, "opencv": cv}, paths)
    return Path(cache_dir()) / "sbovp" / f"features-{method}-{key[:24]}.npz"


def features_cached(
    paths: Sequence[Any],
    method: str = "kaze",
    *,
    max_keypoints: int | None = None,
    threads: int = 0,
    progress: bool = False,
    use_cache: bool = True,
    log: Any = None,
) -> list[Any]:
    """Keypoints and descriptors of ``paths`` (:func:`semcbir_fast.features.extract_features`),
    cached (see the module docstring)."""
    from semcbir_fast.features import extract_features, load_features, save_features

    paths = [str(p) for p in paths]
    cpath = features_cache_path(paths, method, max_keypoints) if use_cache else None
    if cpath is not None and cpath.is_file():
        try:
            feats = load_features(cpath)
        except (OSError, ValueError, KeyError):
            feats = []
        if len(feats) == len(paths):
            if log is not None:
                log(f"features ({method}) of {len(paths)} images read from {cpath}")
            return feats
    feats = extract_features(
        paths, method, max_keypoints=max_keypoints, threads=threads, progress=progress
    )
    if cpath is not None:
        try:
            cpath.parent.mkdir(parents=True, exist_ok=True)
            tmp = cpath.with_name(cpath.stem + ".tmp.npz")  # np.savez wants the .npz ending
            save_features(tmp, feats)
            tmp.replace(cpath)
        except OSError:  # pragma: no cover - read-only cache: just recompute next time
            pass
    return feats
