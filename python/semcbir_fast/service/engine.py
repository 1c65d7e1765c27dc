"""What the web service does, without the web: one loaded index and model, queries by an
uploaded image or a stored id, the image files and thumbnails the index holds.

:class:`SearchService` is plain Python (no FastAPI here): :mod:`semcbir_fast.service.app`
puts HTTP around it, and a test or a notebook can call it directly. Every user mistake
raises :class:`ServiceError` with an HTTP status (always a 4xx) and a one-line reason.

Threads: all methods may be called from several threads at once. Searches run
concurrently (the indexes are safe for that); model calls (segmentation, local features)
are serialised by a lock, since one model call already uses every core (or the GPU).
"""

from __future__ import annotations

import mimetypes
import os
import random
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..imagesize import FORMATS, probe_image
from ..pipeline import QueryResult, Retriever
from ..signatures import Inputs

__all__ = ["SearchService", "ServiceConfig", "ServiceError", "open_service"]

_MiB = 1 << 20
#: What an upload can be turned into here (decoded arrays): label maps and local features.
#: A signature that needs more (``"images"``: it reads image *files* itself) is searched
#: by stored id only.
_UPLOAD_INPUTS = frozenset({"labels", "features"})
_INT = re.compile(r"[+-]?[0-9]{1,19}")


class ServiceError(Exception):
    """A request the service refuses: ``status`` (a 4xx) and a one-line ``reason``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason.splitlines()[0] if reason else "bad request"


@dataclass(frozen=True)
class ServiceConfig:
    """Limits and tuning of a :class:`SearchService` (the ``semcbir serve`` flags).

    Attributes
    ----------
    max_upload_bytes : int
        Largest uploaded file, bytes (16 MiB); the request body is counted while it is
        received and cut off past this (plus 64 KiB for the form's own bytes).
    max_pixels : int
        Largest uploaded image, width x height pixels (40 million), checked on the file's
        header before decoding.
    max_k : int
        Largest ``k`` a request may ask for (100); ``default_k`` when it asks for none (10).
    thumb_size : int
        Longest side of a thumbnail, pixels (256); ``thumb_cache`` thumbnails are kept in
        memory (1024, least recently used first out).
    workers : int
        Threads that run queries, decoding and thumbnails off the event loop (0: as many
        as cores, at most 8).
    max_pending : int
        Requests queued or running for those threads at once; more get 503 (64).
    search_threads : int
        Threads of one index scan (1: concurrency comes from the requests; 0 = all cores).
    allowed_hosts : tuple of str, optional
        ``Host`` header values accepted (protection against DNS rebinding on a loopback
        server); None accepts any.
    """

    max_upload_bytes: int = 16 * _MiB
    max_pixels: int = 40_000_000
    max_k: int = 100
    default_k: int = 10
    thumb_size: int = 256
    thumb_cache: int = 1024
    workers: int = 0
    max_pending: int = 64
    search_threads: int = 1
    allowed_hosts: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_pixels", "max_k", "default_k", "thumb_size",
                     "max_pending"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        for name in ("thumb_cache", "workers", "search_threads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an int >= 0, got {v!r}")
        if self.default_k > self.max_k:
            raise ValueError(f"default_k ({self.default_k}) must be <= max_k ({self.max_k})")

    @property
    def executor_workers(self) -> int:
        return self.workers or min(8, os.cpu_count() or 1)


# ----------------------------------------------------------------------------- parsing
def _text(value: Any) -> str:
    s = str(value)
    return repr(s[:40] + ("..." if len(s) > 40 else ""))


def parse_int(value: Any, name: str, lo: int, hi: int) -> int:
    """A form / JSON value as an int in ``[lo, hi]`` (``ServiceError`` 400 otherwise)."""
    if isinstance(value, bool):
        raise ServiceError(400, f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
    if isinstance(value, int):
        v = value
    elif isinstance(value, str) and _INT.fullmatch(value.strip()):
        v = int(value.strip())
    else:
        raise ServiceError(400, f"{name} must be an integer in [{lo}, {hi}], got {_text(value)}")
    if not lo <= v <= hi:
        raise ServiceError(400, f"{name} must be an integer in [{lo}, {hi}], got {v}")
    return v


def parse_number(value: Any, name: str) -> float:
    """A form / JSON value as a finite number >= 0 (``ServiceError`` 400 otherwise)."""
    if isinstance(value, bool):
        raise ServiceError(400, f"{name} must be a number >= 0, got {value!r}")
    try:
        v = float(value) if isinstance(value, (int, float)) or (
            isinstance(value, str) and len(value) <= 40) else float("nan")
    except (ValueError, OverflowError):
        v = float("nan")
    if not np.isfinite(v) or v < 0:
        raise ServiceError(400, f"{name} must be a number >= 0, got {_text(value)}")
    return v


_ID_MAX = (1 << 63) - 1


# ----------------------------------------------------------------------------- retriever
class _ServiceRetriever(Retriever):
    """:class:`~semcbir_fast.pipeline.Retriever` for what a service receives: decoded
    images (``query_arrays``) and stored ids (``query_ids``); files go through
    ``Retriever.query`` as before. Both encode like the database (the index's signature;
    label maps from the segmenter; local features with the signature's method)."""

    def __init__(self, index: Any, segmenter: Any, *, threads: int) -> None:
        super().__init__(index, segmenter, threads=threads, use_cache=False)
        self.signature = index.signature  # built once: SBSIndex builds one per access
        self._model_lock = threading.Lock()

    def encode_arrays(self, images: Sequence[np.ndarray], *,
                      timings: dict[str, float] | None = None) -> Any:
        """Signatures of ``(H, W, 3)`` uint8 RGB images with the index's signature."""
        sig = self.signature
        labels: list[np.ndarray] = []
        feats = None
        tm = timings if timings is not None else {}
        with self._model_lock:
            if "labels" in sig.requires:
                if self.segmenter is None:
                    raise ServiceError(409, "this server runs without a model: search by id")
                t0 = time.perf_counter()
                labels = [self.segmenter.segment(img, progress=False) for img in images]
                tm["segment_ms"] = 1e3 * (time.perf_counter() - t0)
            if "features" in sig.requires:
                from ..features import extract_features

                t0 = time.perf_counter()
                feats = extract_features(list(images), sig.feature_method, threads=1,
                                         progress=False)
                tm["features_ms"] = 1e3 * (time.perf_counter() - t0)
        t0 = time.perf_counter()
        enc = sig.encode(Inputs(labels, feats, [f"<upload {i}>" for i in range(len(images))]),
                         threads=1)
        tm["encode_ms"] = 1e3 * (time.perf_counter() - t0)
        return enc

    def query_arrays(self, images: Sequence[np.ndarray], k: int, *,
                     timings: dict[str, float] | None = None) -> QueryResult:
        """The ``k`` best indexed images of decoded query images."""
        enc = self.encode_arrays(images, timings=timings)
        return self._search(enc, k, ["segmented"] * len(images), timings)

    def query_ids(self, ids: Sequence[int], k: int, *,
                  timings: dict[str, float] | None = None) -> QueryResult:
        """The ``k`` best indexed images of stored entries (their stored signatures, as
        ``Retriever.query`` does for a query image that is in the index)."""
        try:
            batch = self.index.reconstruct_batch(list(ids))
        except KeyError:
            raise ServiceError(404, f"no image with id {ids[0]} in the index") from None
        return self._search(batch, k, ["index"] * len(ids), timings)

    def _search(self, batch: Any, k: int, source: list[str],
                timings: dict[str, float] | None) -> QueryResult:
        t0 = time.perf_counter()
        index = self.index
        d, i, p = index.search(batch, k, threads=self.threads, return_penalised=True)
        keys = [index.keys_of(r) if index.has_keys else [None] * i.shape[1] for r in i]
        if timings is not None:
            timings["search_ms"] = 1e3 * (time.perf_counter() - t0)
        return QueryResult(d, i, p, keys, source)


# ----------------------------------------------------------------------------- service
@dataclass
class _Thumbs:
    """A small LRU cache of encoded thumbnails, by id."""

    size: int
    items: OrderedDict[int, tuple[float, bytes]] = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, key: int, stamp: float) -> bytes | None:
        with self.lock:
            hit = self.items.get(key)
            if hit is None or hit[0] != stamp:
                return None
            self.items.move_to_end(key)
            return hit[1]

    def put(self, key: int, stamp: float, data: bytes) -> None:
        if self.size == 0:
            return
        with self.lock:
            self.items[key] = (stamp, data)
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)


class SearchService:
    """One index and its model, loaded once, answering queries from several threads.

    Parameters
    ----------
    index
        Any index of :mod:`semcbir_fast.index` (``load_index``).
    segmenter : Segmenter, optional
        The model that made the index's label maps (None: queries by id only; uploads get
        409).
    config : ServiceConfig, optional
    name : str, optional
        What :meth:`info` calls the index (default: its file name, else "index").
    model : str, optional
        The model's name or path, for :meth:`info`.
    """

    def __init__(self, index: Any, segmenter: Any = None, *,
                 config: ServiceConfig | None = None, name: str | None = None,
                 model: str | None = None) -> None:
        self.config = config or ServiceConfig()
        self.index = index
        self.segmenter = segmenter
        self.name = name or "index"
        self.model = model
        self.retriever = _ServiceRetriever(index, segmenter,
                                           threads=self.config.search_threads)
        self.signature = self.retriever.signature
        self._thumbs = _Thumbs(self.config.thumb_cache)
        self._ids = index.ids()
        if segmenter is not None and segmenter.num_classes != self.signature.num_classes \
                and "labels" in self.signature.requires:
            raise ValueError(f"model {model or getattr(segmenter.meta, 'name', '?')} has "
                             f"{segmenter.num_classes} classes but {self.name} has "
                             f"{self.signature.num_classes}; pass the index's --model")

    # ------------------------------------------------------------------ description
    def uploads_refused(self) -> str | None:
        """Why uploads cannot be searched here (None when they can)."""
        sig = self.signature
        extra = sorted(set(sig.requires) - _UPLOAD_INPUTS)
        if extra:
            return (f"uploads are not supported for {sig.name} indexes (they need image "
                    f"files: {', '.join(extra)}): search by an indexed image's id")
        if self.segmenter is None and "labels" in sig.requires:
            return "this server runs without a model: search by an indexed image's id"
        return None

    def info(self) -> dict[str, Any]:
        """What the page and API clients need to know: the index, the model, the limits."""
        sig, cfg = self.signature, self.config
        return {
            "index": self.name,
            "count": len(self.index),
            "has_images": bool(self.index.has_keys),
            "signature": sig.name,
            "describe": self.index.describe(),
            "distance": sig.distance,
            "integer_distances": bool(sig.integer_distances),
            "filtered": getattr(sig, "filter_epsilon", None) is not None,
            "model": (getattr(self.segmenter.meta, "name", None) or self.model)
            if self.segmenter is not None else None,
            "uploads": self.uploads_refused() is None,
            "options": {
                "k": {"min": 1, "max": cfg.max_k, "default": cfg.default_k},
                "max_distance": {"min": 0, "integer": bool(sig.integer_distances)},
            },
            "limits": {"max_upload_bytes": cfg.max_upload_bytes,
                       "max_pixels": cfg.max_pixels, "formats": list(FORMATS)},
            "library_version": _version(),
        }

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)

    # ------------------------------------------------------------------ queries
    def parse_k(self, value: Any) -> int:
        if value is None or value == "":
            return self.config.default_k
        return parse_int(value, "k", 1, self.config.max_k)

    def parse_max_distance(self, value: Any) -> float | None:
        if value is None or value == "":
            return None
        return parse_number(value, "max_distance")

    def search_upload(self, data: bytes, *, k: int, max_distance: float | None = None,
                      filename: str | None = None) -> dict[str, Any]:
        """Search by the bytes of an image file (JPEG, PNG, WebP or BMP)."""
        t0 = time.perf_counter()
        tm: dict[str, float] = {}
        why = self.uploads_refused()
        if why:
            raise ServiceError(409, why)
        if not data:
            raise ServiceError(400, "the uploaded file is empty")
        if len(data) > self.config.max_upload_bytes:
            raise ServiceError(413, _too_large(self.config.max_upload_bytes))
        head = probe_image(data)
        if head is None:
            raise ServiceError(415, f"not a {', '.join(FORMATS[:-1])} or {FORMATS[-1]} image "
                               f"(or its header is cut short); the file starts with "
                               f"{bytes(data[:8])!r}")
        if head.pixels > self.config.max_pixels:
            raise ServiceError(413, f"image too large: {head.width} x {head.height} = "
                               f"{head.pixels:,} pixels, the limit is "
                               f"{self.config.max_pixels:,} (--max-pixels)")
        from ..imageio import ImageReadError, read_image

        try:
            img = read_image(data)
        except ImageReadError:
            raise ServiceError(422, f"cannot decode the {head.format} image: it is corrupt "
                               "or truncated") from None
        h, w = img.shape[:2]
        if h * w > self.config.max_pixels:  # a header that lied
            raise ServiceError(413, f"image too large: {w} x {h} pixels")
        tm["decode_ms"] = 1e3 * (time.perf_counter() - t0)
        res = self.retriever.query_arrays([img], k, timings=tm)
        query = {"upload": (filename or "")[:200], "format": head.format, "width": int(w),
                 "height": int(h)}
        return self._response(res, k, max_distance, query, tm, t0)

    def search_id(self, id: Any, *, k: int, max_distance: float | None = None
                  ) -> dict[str, Any]:
        """Search by a stored image (its stored signature)."""
        t0 = time.perf_counter()
        i = parse_int(id, "id", 0, _ID_MAX)
        tm: dict[str, float] = {}
        res = self.retriever.query_ids([i], k, timings=tm)
        key = self.index.keys_of([i])[0] if self.index.has_keys else None
        return self._response(res, k, max_distance, {"id": i, "key": key}, tm, t0)

    def random_id(self) -> int:
        """An id of the index, uniformly at random (404 when it is empty)."""
        if not len(self._ids):
            raise ServiceError(404, "the index is empty")
        return int(self._ids[random.randrange(len(self._ids))])

    def _response(self, res: QueryResult, k: int, max_distance: float | None,
                  query: dict[str, Any], tm: dict[str, float], t0: float) -> dict[str, Any]:
        integer = bool(self.signature.integer_distances)
        filtered = getattr(self.signature, "filter_epsilon", None) is not None
        results = []
        for r, (i, d, key, pen) in enumerate(zip(res.ids[0].tolist(), res.distances[0].tolist(),
                                                 res.keys[0], res.penalised[0].tolist())):
            if i < 0 or (max_distance is not None and d > max_distance):
                continue
            item: dict[str, Any] = {"rank": r + 1, "id": int(i), "key": key,
                                    "distance": int(d) if integer else float(d)}
            if filtered:
                item["penalised"] = bool(pen)
            results.append(item)
        tm["total_ms"] = 1e3 * (time.perf_counter() - t0)
        return {"query": query, "k": k, "signature": self.signature.name,
                "distance": self.signature.distance, "results": results,
                "timings": {key: round(v, 3) for key, v in tm.items()}}

    # ------------------------------------------------------------------ files
    def image_file(self, id: Any) -> tuple[str, str]:
        """``(path, media type)`` of the stored image ``id``: only a key of the index, never
        a path from the request (``ServiceError`` 404 when there is none)."""
        i = parse_int(id, "id", 0, _ID_MAX)
        if not self.index.has_keys:
            raise ServiceError(404, "this index stores no image paths")
        key = self.index.keys_of([i])[0]
        if key is None:
            raise ServiceError(404, f"no image with id {i} in the index")
        if not os.path.isabs(key) or not os.path.isfile(key):
            raise ServiceError(404, f"image {i} is no longer on disk")
        media = mimetypes.guess_type(key)[0] or ""
        return key, media if media.startswith("image/") and "svg" not in media \
            else "application/octet-stream"

    def thumbnail(self, id: Any) -> bytes:
        """A JPEG of the stored image ``id`` whose longest side is at most ``thumb_size``."""
        i = parse_int(id, "id", 0, _ID_MAX)
        path, _ = self.image_file(i)
        try:
            stamp = os.stat(path).st_mtime
        except OSError:
            raise ServiceError(404, f"image {i} is no longer on disk") from None
        hit = self._thumbs.get(i, stamp)
        if hit is not None:
            return hit
        import cv2

        from ..imageio import ImageReadError, read_image

        try:
            img = read_image(path)
        except ImageReadError:
            raise ServiceError(404, f"image {i} cannot be read any more") from None
        h, w = img.shape[:2]
        s = self.config.thumb_size / max(h, w)
        if s < 1:
            img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))),
                             interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img[:, :, ::-1]),
                               [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:  # pragma: no cover - OpenCV encodes any uint8 RGB image
            raise ServiceError(404, f"image {i} cannot be made into a thumbnail")
        data = buf.tobytes()
        self._thumbs.put(i, stamp, data)
        return data


def _too_large(limit: int) -> str:
    return f"upload too large: more than {limit / _MiB:g} MiB (--max-upload-mb)"


def _version() -> str:
    from .. import __version__

    return __version__


def open_service(path: str | os.PathLike[str], *, model: str | None = None,
                 no_model: bool = False, device: Any = None, dtype: Any = None,
                 config: ServiceConfig | None = None) -> SearchService:
    """Load the index at ``path`` and its model once, for :class:`SearchService`.

    The model is ``model`` when given (a registered name or a TorchScript file), else the
    name recorded in the index, only if it is a registered model name: a *path* recorded in
    an index file is never loaded (an index is data; pass ``model`` to load a file).
    ``no_model``: serve queries by id only. ``ValueError`` / ``FileNotFoundError`` with a
    one-line reason otherwise.
    """
    from ..index import load_index

    index = load_index(path)
    name = Path(path).name
    seg = None
    spec = None
    if not no_model and "labels" in index.signature.requires:
        from ..segment import available_segmenters, load_segmenter

        spec = model or index.metadata.get("model")
        if not spec:
            raise ValueError(f"{name} does not record its model; pass --model NAME|PATH "
                             "(or --no-model to search by id only)")
        if model is None and spec not in available_segmenters():
            raise ValueError(f"{name} records the model file {spec!r}; a model path is never "
                             "taken from an index: pass --model to load it (registered "
                             f"names: {', '.join(available_segmenters())})")
        seg = load_segmenter(spec, device=device, dtype=dtype)
    return SearchService(index, seg, config=config, name=name, model=spec)
