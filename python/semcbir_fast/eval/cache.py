"""On-disk caches of what is slow to compute per image, shared by every command (index,
eval, search, gallery): label maps of a segmentation model (:class:`LabelStore`,
:func:`segment_paths`, :func:`segment_cached`) and local features (:class:`FeatureStore`,
:func:`features_cached`).

Both keep one entry file per image, below ``<cache_dir>`` (``SEMCBIR_CACHE``, default
``~/.cache/semcbir_fast``):

- label maps: ``labels/<model>-<key>/<k[:2]>/<k[2:32]>.npz``, where ``key`` is a SHA-256
  over the model file's bytes and its sidecar, the runtime, the compute dtype and the
  resize mode (:func:`model_key`), and ``k`` a SHA-256 over the image's absolute path, size
  and modification time (:func:`image_key_of`). The entry holds ``shapes`` (int64
  ``(1, 2)``), ``flat`` (uint8 or uint16) and ``paths`` (the image's absolute path,
  checked on read); it is written to a temporary name and renamed, as soon as the image is
  segmented;
- features: ``features/<method>-<key>/<k[:2]>/<k[2:32]>.npz`` (a
  :func:`~semcbir_fast.features.save_features` file of one image), ``key`` over the method,
  ``max_keypoints`` and the OpenCV version.

Any change to the model, the runtime or an image therefore misses; a subset of images
(``eval --limit``) or a later ``index --append`` hits the entries of the images it shares;
a corrupt entry is a miss and is rewritten. Delete the folder to reclaim the space.
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
    "FeatureStore",
    "LabelStore",
    "dtype_name",
    "features_cached",
    "files_key",
    "image_key_of",
    "label_cache_path",
    "load_label_cache",
    "model_key",
    "save_label_cache",
    "segment_cached",
    "segment_paths",
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


_MODEL_KEYS: dict[tuple[Any, ...], str] = {}


def model_key(
    model_path: str | os.PathLike[str],
    *,
    runtime: str = "torch",
    dtype: str = "float32",
    resize: str = "logits",
) -> str:
    """Hex key of what makes a label map: the model file's bytes and its sidecar, the
    runtime that runs it, the compute dtype and the resize mode (memoised per file state)."""
    mp = Path(model_path)
    st = mp.stat()
    memo: tuple[Any, ...] = (os.path.abspath(mp), st.st_size, st.st_mtime_ns, runtime, dtype,
                             resize)
    members: list[dict[str, Any]] = []
    if mp.suffix == ".composite":  # a composite segmenter: its key covers every member model
        from semcbir_fast.segment.composite import members_key_parts

        members = members_key_parts(mp)
        for m in members:
            if m["file"]:
                mst = os.stat(m["model"])
                memo += (m["model"], mst.st_size, mst.st_mtime_ns)
    key = _MODEL_KEYS.get(memo)
    if key is None:
        side = mp.with_suffix(".json")
        parts = {"model": _file_digest(mp),
                 "sidecar": side.read_text() if side.is_file() else None,
                 "runtime": runtime, "dtype": dtype, "resize": resize}
        if members:
            parts["members"] = [
                model_key(m["model"], runtime=m["runtime"], dtype=dtype, resize=resize)
                if m["file"] else m["model"] for m in members]
        key = _MODEL_KEYS[memo] = hashlib.sha256(
            json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return key


def image_key_of(path: str | os.PathLike[str]) -> str:
    """Hex key of one image file: its absolute path, size and modification time."""
    return files_key({}, [path])


def label_cache_path(
    model_name: str, key: str, cache_root: str | os.PathLike[str] | None = None
) -> Path:
    """The folder of the label maps of the model ``model_name`` whose :func:`model_key` is
    ``key``: one entry file per image below it (:class:`LabelStore`)."""
    from semcbir_fast._paths import cache_dir

    root = Path(cache_root) if cache_root is not None else cache_dir()
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in model_name)[:60]
    return root / "labels" / f"{safe}-{key[:24]}"


class _ImageStore:
    """Entries of one kind of per-image result, one file per image below ``folder``:
    ``<folder>/<k[:2]>/<k[2:32]>.npz`` where ``k`` is :func:`image_key_of` the image
    (absolute path, size, modification time), so that a changed or moved image misses. An
    unwritable folder is ignored after the first failed write (results are recomputed)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self._writable = True

    def entry(self, image: str | os.PathLike[str]) -> Path:
        k = image_key_of(image)
        return self.folder / k[:2] / f"{k[2:32]}.npz"

    def _write(self, image: str | os.PathLike[str], write: Any) -> None:
        if not self._writable:
            return
        try:
            path = self.entry(image)
            path.parent.mkdir(parents=True, exist_ok=True)
            write(path)
        except OSError:  # read-only or full cache: keep going without it
            self._writable = False


class LabelStore(_ImageStore):
    """Label maps of one model (file + runtime + dtype + resize), one entry per image.

    Each entry (:class:`_ImageStore`) is written atomically by :func:`save_label_cache`
    (one map, with the image's path) as soon as the image is segmented, so an interrupted
    command keeps what it did, and every command (``index``, ``eval``, ``search``,
    ``gallery``) shares it. A corrupt or foreign entry is a miss (and is rewritten).
    """

    @classmethod
    def for_model(cls, model_path: str | os.PathLike[str], model_name: str, *,
                  runtime: str = "torch", dtype: str = "float32", resize: str = "logits",
                  cache_root: str | os.PathLike[str] | None = None) -> LabelStore:
        key = model_key(model_path, runtime=runtime, dtype=dtype, resize=resize)
        return cls(label_cache_path(model_name, key, cache_root))

    @classmethod
    def for_segmenter(cls, segmenter: Any, *, resize: str = "logits",
                      cache_root: str | os.PathLike[str] | None = None) -> LabelStore | None:
        """The store of a :class:`~semcbir_fast.segment.Segmenter` (None when it was not
        loaded from a file, so that its maps have no stable identity)."""
        path = getattr(segmenter, "path", None)
        if path is None or not Path(path).is_file():
            return None
        return cls.for_model(path, segmenter.meta.name, runtime=getattr(segmenter, "runtime", "torch"),
                             dtype=dtype_name(getattr(segmenter, "dtype", None)),
                             resize=resize, cache_root=cache_root)

    def get(self, image: str | os.PathLike[str]) -> np.ndarray | None:
        """The cached map of ``image``, or None (missing, unreadable, changed image)."""
        try:
            path = self.entry(image)
        except OSError:
            return None
        maps = load_label_cache(path, [os.path.abspath(image)])
        return maps[0] if maps else None

    def put(self, image: str | os.PathLike[str], labels: np.ndarray) -> None:
        self._write(image, lambda path: save_label_cache(
            path, [np.asarray(labels)], [os.path.abspath(image)]))


class FeatureStore(_ImageStore):
    """Local features of one method (:func:`semcbir_fast.features.extract_features`) per
    image, keyed by the method, ``max_keypoints`` and the OpenCV version
    (:func:`save_features` files of one image each)."""

    @classmethod
    def for_method(cls, method: str, max_keypoints: int | None = None,
                   cache_root: str | os.PathLike[str] | None = None) -> FeatureStore:
        from semcbir_fast._paths import cache_dir

        try:
            import cv2

            cv = cv2.__version__
        except ImportError:  # pragma: no cover
            cv = "?"
        key = hashlib.sha256(json.dumps(
            {"method": method, "max_keypoints": max_keypoints, "opencv": cv},
            sort_keys=True).encode()).hexdigest()
        root = Path(cache_root) if cache_root is not None else cache_dir()
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in method)[:30]
        return cls(root / "features" / f"{safe}-{key[:24]}")

    def get(self, image: str | os.PathLike[str]) -> Any:
        from semcbir_fast.features import load_features

        try:
            path = self.entry(image)
            if not path.is_file():
                return None
            feats = load_features(path)
        except (OSError, ValueError):
            return None
        return feats[0] if len(feats) == 1 else None

    def put(self, image: str | os.PathLike[str], features: Any) -> None:
        from semcbir_fast.features import save_features

        def write(path: Path) -> None:
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                save_features(f, [features])

        self._write(image, write)


def dtype_name(dtype: Any) -> str:
    """"float32" for None, else the torch dtype's short name ("bfloat16", "float16")."""
    return "float32" if dtype is None else str(dtype).replace("torch.", "")


def save_label_cache(path: Path, maps: Sequence[np.ndarray], paths: Sequence[str]) -> None:
    """Write label maps atomically (compressed ``shapes``, ``flat``, ``paths``)."""
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


def segment_paths(
    paths: Sequence[str | os.PathLike[str]],
    segmenter: Any,
    *,
    store: LabelStore | None = None,
    use_cache: bool = True,
    batch_size: int = 16,
    progress: Any = True,
    log: Any = None,
) -> tuple[list[str], list[np.ndarray], list[tuple[str, str]], int]:
    """Label maps of image files, each looked up in the per-image cache first.

    ``segmenter`` is a :class:`~semcbir_fast.segment.Segmenter` or a callable returning one
    (called only when some image misses the cache; then ``store`` must be given for the
    lookup). ``progress``: a bool, or an open tqdm bar advanced by one per image. Segmented maps are written to the store as they come (an interrupted call keeps
    them). Returns ``(paths kept, their maps, [(path, reason)] of the unreadable ones,
    number of cache hits)``, in input order.
    """
    paths = [os.fspath(p) for p in paths]
    loaded = hasattr(segmenter, "segment")
    if use_cache and store is None and loaded:
        store = LabelStore.for_segmenter(segmenter)
    if not use_cache:
        store = None
    maps: list[np.ndarray | None] = (
        [store.get(p) for p in paths] if store is not None else [None] * len(paths))
    misses = [i for i, m in enumerate(maps) if m is None]
    hits = len(paths) - len(misses)
    shared_bar = hasattr(progress, "update")  # the caller's bar of a whole job
    if shared_bar:
        progress.update(hits)
        log = None  # the bar says it
    if log and hits:
        assert store is not None
        log(f"label maps of {hits} of {len(paths)} images from the cache {store.folder}")
    failed: dict[int, str] = {}
    if misses:
        seg = segmenter if loaded else segmenter()
        if not loaded and use_cache and store is None:
            store = LabelStore.for_segmenter(seg)
        if log:
            log(f"segmenting {len(misses)} images with {seg.meta.name} "
                f"({getattr(seg, 'runtime', 'torch')}, {seg.device}) ...")
        for batch in seg.iter_batches(
                [paths[i] for i in misses], batch_size=batch_size, on_error="skip",
                progress=progress if shared_bar else bool(progress) and len(misses) > 1):
            for j, lab in zip(batch.indices, batch.labels):
                i = misses[j]
                maps[i] = lab = np.asarray(lab)
                if store is not None:
                    store.put(paths[i], lab)
            for j, _src, reason in batch.failed:
                failed[misses[j]] = reason
    ok = [i for i, m in enumerate(maps) if m is not None]
    return ([paths[i] for i in ok], [maps[i] for i in ok],  # type: ignore[misc]
            [(paths[i], failed[i]) for i in sorted(failed)], hits)


def segment_cached(
    images: Sequence[str | os.PathLike[str]],
    *,
    model: Any = None,
    device: Any = None,
    dtype: Any = None,
    runtime: str | None = None,
    batch_size: int = 16,
    progress: bool = True,
    use_cache: bool = True,
    cache_root: str | os.PathLike[str] | None = None,
    log: Any = None,
) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Label maps of ``images`` by ``model``, from the per-image cache when possible (the
    model is loaded only when an image misses it).

    Parameters
    ----------
    images : sequence of path
    model : str, optional
        Registered model name or model file (see :func:`semcbir_fast.segment.load_segmenter`);
        default :data:`semcbir_fast.segment.DEFAULT_SEGMENTER` (``"ade20k+voc"``).
    device, dtype, runtime, batch_size, progress
        Passed to the segmenter (``runtime=None``: ``"auto"``).
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
        "class_names", "model_path", "runtime", "cache": "hit"|"partial"|"miss"|"off",
        "cache_file"}`` (``cache_file``: the store's folder).

    Raises
    ------
    ValueError
        If an image cannot be read (every image of an evaluation must be segmented).
    """
    from semcbir_fast.models.sidecar import read_sidecar
    from semcbir_fast.segment import load_segmenter
    from semcbir_fast.segment.registry import DEFAULT_SEGMENTER, _resolve

    if model is None:
        model = DEFAULT_SEGMENTER
    paths = [os.fspath(p) for p in images]
    model_path, rt = _resolve(model, runtime=runtime, device=device, dtype=dtype)
    meta = read_sidecar(model_path)
    info: dict[str, Any] = {
        "model": model if isinstance(model, str) else os.fspath(model),
        "model_name": meta.name,
        "num_classes": meta.num_classes,
        "class_names": list(meta.class_names),
        "model_path": str(model_path),
        "runtime": rt,
        "cache": "off",
        "cache_file": None,
    }
    store = None
    if use_cache:
        store = LabelStore.for_model(model_path, meta.name, runtime=rt,
                                     dtype=dtype_name(dtype), cache_root=cache_root)
        info["cache_file"] = str(store.folder)

    def load() -> Any:
        seg = load_segmenter(model_path, device=device, dtype=dtype)
        info["device"] = str(seg.device)
        return seg

    _, maps, failed, hits = segment_paths(paths, load, store=store, use_cache=use_cache,
                                          batch_size=batch_size, progress=progress, log=log)
    if failed:
        head = "; ".join(f"{src} ({reason})" for src, reason in failed[:3])
        raise ValueError(
            f"{len(failed)} of {len(paths)} images could not be read: {head}; an "
            "evaluation needs every image (remove or fix them)"
        )
    if use_cache:
        info["cache"] = ("hit" if hits == len(paths) else "miss" if hits == 0 else "partial")
    return maps, info


def features_cached(
    paths: Sequence[Any],
    method: str = "kaze",
    *,
    max_keypoints: int | None = None,
    threads: int = 0,
    progress: bool = False,
    use_cache: bool = True,
    cache_root: str | os.PathLike[str] | None = None,
    log: Any = None,
) -> list[Any]:
    """Keypoints and descriptors of ``paths`` (:func:`semcbir_fast.features.extract_features`),
    each image looked up in the per-image cache first (:class:`FeatureStore`)."""
    from semcbir_fast.features import extract_features

    paths = [str(p) for p in paths]
    store = FeatureStore.for_method(method, max_keypoints, cache_root) if use_cache else None
    feats: list[Any] = [store.get(p) for p in paths] if store else [None] * len(paths)
    misses = [i for i, f in enumerate(feats) if f is None]
    if log is not None and store is not None and len(misses) < len(paths):
        log(f"features ({method}) of {len(paths) - len(misses)} of {len(paths)} images "
            f"from the cache {store.folder}")
    if misses:
        new = extract_features([paths[i] for i in misses], method, max_keypoints=max_keypoints,
                               threads=threads, progress=progress)
        for i, f in zip(misses, new):
            feats[i] = f
            if store is not None:
                store.put(paths[i], f)
    return feats
