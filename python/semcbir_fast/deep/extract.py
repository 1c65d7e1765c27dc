"""Backbone descriptors of image files, computed once: shared backbones and a descriptor
cache (what the deep signatures call).

- :func:`get_backbone`: one :class:`~semcbir_fast.models.backbone.Backbone` per (name,
  device) in the process (loading the weights costs ~0.2 s; several signatures share it).
- :func:`extract_cached`: the outputs of a reducer over a list of image files, from an
  in-process memo, then from a disk cache, else computed (:meth:`Backbone.extract`) and
  stored. The disk cache lives in ``<cache_dir>/deep/`` (``SEMCBIR_CACHE``, default
  ``~/.cache/semcbir_fast``), one ``.npz`` per (backbone, preprocessing, reducer, extra
  key, image list), keyed like the label-map cache
  (:func:`semcbir_fast.eval.cache.files_key`: each file's absolute path, size and
  modification time), written atomically. It is used for lists of at least
  :data:`MIN_CACHED` images (an evaluation, an index build; not single queries);
  ``SEMCBIR_DEEP_CACHE=0`` turns it off.

Devices: ``SEMCBIR_DEVICE`` (e.g. ``cpu``, ``cuda:1``) when set, else CUDA when available.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MIN_CACHED", "default_device", "extract_cached", "get_backbone", "labels_digest"]

#: Smallest image list whose descriptors go to the disk cache.
MIN_CACHED = 32
_MEMO_SIZE = 8
_lock = threading.RLock()
_backbones: dict[tuple[str, str], Any] = {}
_memo: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()


def default_device() -> str | None:
    """``SEMCBIR_DEVICE`` when set, else None (CUDA when available)."""
    return os.environ.get("SEMCBIR_DEVICE") or None


def get_backbone(name: str = "efficientnet-lite0", *, device: Any = None) -> Any:
    """The process's :class:`~semcbir_fast.models.backbone.Backbone` ``name`` on ``device``
    (default :func:`default_device`), built on first use."""
    from ..models.backbone import Backbone

    dev = device if device is not None else default_device()
    key = (str(name), str(dev))
    with _lock:
        bb = _backbones.get(key)
        if bb is None:
            bb = _backbones[key] = Backbone(name, device=dev)
        return bb


def labels_digest(label_maps: Sequence[np.ndarray]) -> str:
    """Hex SHA-256 of label maps (shapes, dtypes and values): part of a cache key for
    descriptors that depend on the segmentation."""
    h = hashlib.sha256()
    for m in label_maps:
        a = np.ascontiguousarray(m)
        h.update(f"{a.shape}{a.dtype.str}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _cache_path(parts: dict[str, Any], paths: Sequence[str]) -> Path:
    from .._paths import cache_dir
    from ..eval.cache import files_key

    key = files_key(parts, paths)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_"
                   for ch in f"{parts['backbone']}-{parts['what']}")[:80]
    return Path(cache_dir()) / "deep" / f"{safe}-{key[:24]}.npz"


def _use_disk(paths: Sequence[str], use_cache: bool | None) -> bool:
    if use_cache is not None:
        return bool(use_cache)
    return len(paths) >= MIN_CACHED and os.environ.get("SEMCBIR_DEEP_CACHE", "1") != "0"


def extract_cached(
    paths: Sequence[str | os.PathLike[str]],
    what: str,
    reducer: Any,
    *,
    backbone: str = "efficientnet-lite0",
    extra_key: Any = None,
    use_cache: bool | None = None,
    batch_size: int = 16,
    device: Any = None,
    progress: bool | None = None,
    compute: Callable[[Any], dict[str, np.ndarray]] | None = None,
    flip: bool = False,
) -> dict[str, np.ndarray]:
    """``Backbone(backbone).extract(paths, reducer=reducer)``, remembered.

    Parameters
    ----------
    paths : sequence of path
        Image files, in the order of the result rows.
    what : str
        Name of what ``reducer`` computes (part of the cache key: two reducers with one
        name must compute the same thing).
    reducer
        A reducer of :meth:`Backbone.extract` (name, callable or a sequence).
    extra_key
        JSON-ready value that also decides the result (a threshold, a label-map digest).
    use_cache : bool, optional
        Disk cache on / off (default: on for :data:`MIN_CACHED` images or more, unless
        ``SEMCBIR_DEEP_CACHE=0``). The in-process memo is always used.
    batch_size, device, progress
        Passed to :meth:`Backbone.extract` (``progress`` default: a bar on a terminal for
        64 images or more).
    compute : callable, optional
        ``compute(backbone) -> dict of (n, ...) arrays`` instead of running ``reducer``
        over the files (e.g. over crops of them); cached the same way (it must honour
        ``flip`` itself).
    flip : bool
        Test-time flipping (:meth:`Backbone.forward_batch`): maps averaged over each image
        and its mirror; part of the cache key.
    """
    import torch

    files = [os.path.abspath(os.fspath(p)) for p in paths]
    bb = get_backbone(backbone, device=device)
    parts = {"backbone": backbone, "preprocess": repr(bb.preprocess), "what": what,
             "extra": extra_key, "torch": torch.__version__, "format": 1}
    if flip:  # only then, so that the keys of unflipped descriptors stay as they were
        parts["flip"] = True
    from ..eval.cache import files_key

    key = files_key(parts, files) if files else json.dumps(parts, sort_keys=True)
    with _lock:
        if key in _memo:
            _memo.move_to_end(key)
            return dict(_memo[key])
    disk = _use_disk(files, use_cache) and bool(files)
    cpath = _cache_path(parts, files) if disk else None
    out: dict[str, np.ndarray] | None = None
    if cpath is not None and cpath.is_file():
        try:
            with np.load(cpath, allow_pickle=False) as z:
                if [str(p) for p in z["__paths__"]] == files:
                    out = {k: z[k] for k in z.files if k != "__paths__"}
        except (OSError, ValueError, KeyError, EOFError):
            out = None
    if out is None:
        if progress is None:
            progress = len(files) >= 64 and sys.stderr.isatty()
        if compute is not None:
            out = {k: np.asarray(v) for k, v in compute(bb).items()}
        else:
            out = bb.extract(files, reducer=reducer, batch_size=batch_size, progress=progress,
                             workers=2, flip=bool(flip)) if files else {}
        if cpath is not None:
            from .._atomic import atomic_path

            try:
                cpath.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(cpath) as tmp, open(tmp, "wb") as f:
                    np.savez(f, __paths__=np.array(files, dtype=str), **out)
            except OSError:  # pragma: no cover - read-only cache: recompute next time
                pass
    with _lock:
        _memo[key] = dict(out)
        while len(_memo) > _MEMO_SIZE:
            _memo.popitem(last=False)
    return dict(out)


def clear_memo() -> None:
    """Forget the in-process results (tests, memory)."""
    with _lock:
        _memo.clear()


def global_reducer(q: float = 0.5) -> Callable[[Any], dict[str, Any]]:
    """GAP, GeM (p = 3), CroW of the final map and paper 003's ``h``, ``eta~``, ``eta``
    (threshold ``q``): one backbone pass for the cnn and neural-codes signatures."""
    from .neural_codes import neural_codes
    from .pooling import crow, gap, gem

    def run(fb: Any) -> dict[str, Any]:
        final = fb.final.float()
        out = {"gap": gap(final), "gem": gem(final, 3.0), "crow": crow(final)}
        out.update(neural_codes([b.float() for b in fb.blocks], q=q).as_dict())
        return out

    return run
