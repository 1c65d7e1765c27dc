"""Local keypoints and descriptors for SBoVP and the hybrid signature (SPEC.md section 3.1).

:func:`extract_features` runs an OpenCV detector over a batch of images with a thread pool
(OpenCV releases the GIL while it detects) and a progress bar, and returns one
:class:`Features` per image.

Detectors (looked up both in ``cv2`` and ``cv2.xfeatures2d``, since OpenCV 5 moved KAZE and
AKAZE to the contrib module):

========  ===========================  ======================================
method    descriptor                   notes
========  ===========================  ======================================
kaze      64 float32 (default)         paper 000's best; ~0.1-0.2 s per image
sift      128 float32
akaze     61 uint8 (binary, MLDB)      bits are unpacked for k-means / means
orb       32 uint8 (binary)            bits are unpacked for k-means / means
surf      64 float32                   only in OpenCV builds with the non-free
                                       modules (no PyPI wheel has it)
========  ===========================  ======================================

Images are converted to 8-bit grayscale before detection. Keypoint coordinates follow
OpenCV's convention: ``(x, y)`` in pixels, the centre of pixel ``(row, col)`` at
``(col, row)``.

OpenCV is imported only when a function here runs.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

__all__ = [
    "DESCRIPTOR_METHODS",
    "Features",
    "available_methods",
    "extract_features",
    "load_features",
    "make_detector",
    "save_features",
]

#: Methods this module knows, in order of preference.
DESCRIPTOR_METHODS: tuple[str, ...] = ("kaze", "sift", "akaze", "orb", "surf")

_FACTORY = {
    "kaze": "KAZE_create",
    "sift": "SIFT_create",
    "akaze": "AKAZE_create",
    "orb": "ORB_create",
    "surf": "SURF_create",
}
_BINARY = {"akaze", "orb"}


@dataclass
class Features:
    """Keypoints and descriptors of one image.

    Attributes
    ----------
    xy : numpy.ndarray
        float32 ``(n, 2)``: keypoint ``(x, y)`` in pixels of the image.
    descriptors : numpy.ndarray
        ``(n, D)``: float32 for KAZE/SIFT/SURF, packed uint8 bits for ORB/AKAZE.
    image_size : tuple of int
        ``(height, width)`` of the image the keypoints were detected on.
    method : str
        Detector name (``"kaze"``, ``"sift"``, ...).
    """

    xy: np.ndarray
    descriptors: np.ndarray
    image_size: tuple[int, int]
    method: str

    def __post_init__(self) -> None:
        self.xy = np.ascontiguousarray(self.xy, dtype=np.float32).reshape(-1, 2)
        d = np.asarray(self.descriptors)
        if d.ndim != 2 or d.shape[0] != self.xy.shape[0]:
            raise ValueError(
                f"descriptors must be (n, D) with one row per keypoint ({self.xy.shape[0]}), "
                f"got shape {d.shape}")
        self.descriptors = np.ascontiguousarray(d)
        h, w = (int(v) for v in self.image_size)
        if h <= 0 or w <= 0:
            raise ValueError(f"image_size must be (height, width) > 0, got {self.image_size}")
        self.image_size = (h, w)
        self.method = str(self.method)

    def __len__(self) -> int:
        return int(self.xy.shape[0])

    @property
    def binary(self) -> bool:
        """Whether the descriptors are packed bits (uint8)."""
        return self.descriptors.dtype == np.uint8


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "semcbir_fast.features needs OpenCV: pip install opencv-contrib-python-headless "
            "(or semcbir_fast[segment])") from exc
    return cv2


def _factory(method: str) -> Callable[..., Any] | None:
    cv2 = _cv2()
    name = _FACTORY[method]
    for mod in (cv2, getattr(cv2, "xfeatures2d", None)):
        fn = getattr(mod, name, None) if mod is not None else None
        if fn is not None:
            return fn
    return None


def available_methods() -> list[str]:
    """Detector methods that the installed OpenCV can actually create."""
    out = []
    for m in DESCRIPTOR_METHODS:
        try:
            make_detector(m)
        except (ValueError, ImportError):
            continue
        out.append(m)
    return out


def _check_method(method: Any) -> str:
    if not isinstance(method, str) or method.lower() not in _FACTORY:
        raise ValueError(
            f"method must be one of {', '.join(DESCRIPTOR_METHODS)}, got {method!r}")
    return method.lower()


def make_detector(method: str = "kaze", **params: Any) -> Any:
    """An OpenCV ``Feature2D`` for ``method`` (``params`` go to its ``*_create``).

    Raises
    ------
    ValueError
        Unknown method, or one this OpenCV build lacks (SURF in every PyPI wheel); the
        message names the methods that are available.
    """
    method = _check_method(method)
    fn = _factory(method)
    err = None
    if fn is not None:
        try:
            return fn(**params)
        except _cv2().error as exc:  # e.g. SURF: "patented ... excluded in this configuration"
            err = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    others = [m for m in DESCRIPTOR_METHODS if m != method and _factory(m) is not None]
    why = f" ({err})" if err else ""
    hint = (" SURF is patented and compiled out of every PyPI OpenCV wheel; build OpenCV with "
            "OPENCV_ENABLE_NONFREE to get it." if method == "surf" else
            " Install opencv-contrib-python-headless for KAZE/AKAZE.")
    raise ValueError(
        f"method={method!r} is not available in this OpenCV {_cv2().__version__}{why}; use "
        f"one of {', '.join(others) or '(none)'} instead.{hint}")


def _gray(image: Any) -> np.ndarray:
    """8-bit grayscale of a path, encoded bytes, (H, W) uint8 or (H, W, 3) RGB image."""
    if isinstance(image, np.ndarray) and image.ndim == 2:
        if image.dtype != np.uint8:
            raise ValueError(f"a 2-D (grayscale) image must be uint8, got dtype {image.dtype}")
        return np.ascontiguousarray(image)
    from .imageio import read_image

    rgb = read_image(image)
    return _cv2().cvtColor(rgb, _cv2().COLOR_RGB2GRAY)


def _detect(detector: Any, gray: np.ndarray, method: str, max_keypoints: int | None) -> Features:
    kps, desc = detector.detectAndCompute(gray, None)
    n = len(kps)
    binary = method in _BINARY
    if n == 0 or desc is None:
        dim = int(detector.descriptorSize()) if hasattr(detector, "descriptorSize") else 0
        dt = np.uint8 if binary else np.float32
        return Features(np.zeros((0, 2), np.float32), np.zeros((0, dim), dt), gray.shape[:2],
                        method)
    xy = np.array([kp.pt for kp in kps], dtype=np.float32).reshape(n, 2)
    if max_keypoints is not None and n > max_keypoints:
        resp = np.array([kp.response for kp in kps], dtype=np.float64)
        keep = np.sort(np.argsort(-resp, kind="stable")[:max_keypoints])
        xy, desc = xy[keep], desc[keep]
    desc = np.ascontiguousarray(desc, dtype=np.uint8 if binary else np.float32)
    return Features(xy, desc, gray.shape[:2], method)


def extract_features(
    images: Iterable[Any],
    method: str = "kaze",
    *,
    max_keypoints: int | None = None,
    threads: int = 0,
    progress: bool = True,
    detector_params: dict[str, Any] | None = None,
) -> list[Features]:
    """Detect keypoints and compute descriptors on every image.

    Parameters
    ----------
    images : iterable
        Paths, encoded bytes, ``(H, W, 3)`` uint8 RGB arrays, ``(H, W)`` uint8 grayscale
        arrays or uint8 torch tensors (see :func:`semcbir_fast.imageio.read_image`).
    method : {"kaze", "sift", "akaze", "orb", "surf"}
        Detector / descriptor (default KAZE, 64-d, as in paper 000).
    max_keypoints : int, optional
        Keep at most this many keypoints per image, the strongest by detector response
        (in detection order). Default: all.
    threads : int
        Images processed at once (0 = all cores). Each thread has its own detector.
    progress : bool
        Show a tqdm progress bar on stderr (for more than one image).
    detector_params : dict, optional
        Keyword arguments of the OpenCV ``*_create`` factory (e.g. ``{"threshold": 0.0005}``
        for KAZE).

    Returns
    -------
    list of Features
        One per image, in input order; an image with no keypoint gives an empty
        :class:`Features` (``n = 0``) rather than an error.

    Raises
    ------
    ValueError
        Unknown or unavailable method, bad ``max_keypoints`` / ``threads``, or an image that
        cannot be read (:class:`~semcbir_fast.imageio.ImageReadError` names the file).
    """
    from ._convert import check_threads

    method = _check_method(method)
    params = dict(detector_params or {})
    make_detector(method, **params)  # fail early, with the friendly error
    if max_keypoints is not None:
        if isinstance(max_keypoints, bool) or not isinstance(max_keypoints, (int, np.integer)) \
                or max_keypoints < 1:
            raise ValueError(f"max_keypoints must be an int >= 1 or None, got {max_keypoints!r}")
        max_keypoints = int(max_keypoints)
    t = check_threads(threads)
    items = list(images)
    workers = max(1, min(t or (os.cpu_count() or 1), len(items) or 1))
    local = threading.local()

    def one(img: Any) -> Features:
        det = getattr(local, "detector", None)
        if det is None:
            det = local.detector = make_detector(method, **params)
        return _detect(det, _gray(img), method, max_keypoints)

    out: list[Features] = []
    bar = None
    if progress and len(items) > 1:
        from tqdm import tqdm

        bar = tqdm(total=len(items), unit="img", desc=f"features ({method})")
    try:
        if workers == 1:
            for img in items:
                out.append(one(img))
                if bar is not None:
                    bar.update(1)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for f in pool.map(one, items):
                    out.append(f)
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return out


def save_features(path: str | os.PathLike[str] | BinaryIO, features: Sequence[Features]
                  ) -> None:
    """Write a list of :class:`Features` to one ``.npz`` file or open binary file (all of
    the same method)."""
    feats = list(features)
    methods = {f.method for f in feats}
    if len(methods) > 1:
        raise ValueError(f"features must all come from one method, got {sorted(methods)}")
    counts = np.array([len(f) for f in feats], dtype=np.int64)
    dims = {f.descriptors.shape[1] for f in feats}
    if len(dims) > 1:
        raise ValueError(f"features must all have one descriptor size, got {sorted(dims)}")
    dim = dims.pop() if dims else 0
    dtype = feats[0].descriptors.dtype if feats else np.float32
    desc = (np.concatenate([f.descriptors.reshape(-1, dim) for f in feats])
            if feats and counts.sum() else np.zeros((0, dim), dtype))
    xy = np.concatenate([f.xy for f in feats]) if feats else np.zeros((0, 2), np.float32)
    sizes = np.array([f.image_size for f in feats], dtype=np.int64).reshape(-1, 2)
    np.savez(path if hasattr(path, "write") else Path(path), format=np.array("semcbir_fast.features/1"),
             method=np.array(methods.pop() if methods else ""), counts=counts, xy=xy,
             descriptors=desc, image_size=sizes)


def load_features(path: str | os.PathLike[str]) -> list[Features]:
    """Read a file written by :func:`save_features` (``ValueError`` for a file that is not
    one, or is damaged: every array is checked against the others)."""
    from ._serialize import read_arrays

    z = read_arrays(path, "features")
    tag, method = z.get("format"), z.get("method")
    if tag is None or tag.ndim != 0 or str(tag) != "semcbir_fast.features/1" \
            or not {"counts", "xy", "descriptors", "image_size"} <= set(z):
        raise ValueError(f"{path} is not a semcbir_fast features file")
    counts, xy, desc, sizes = z["counts"], z["xy"], z["descriptors"], z["image_size"]
    bad = None
    if method is None or method.ndim != 0 or method.dtype.kind != "U" \
            or str(method) not in (*DESCRIPTOR_METHODS, ""):
        bad = f"method {method!r}"
    elif counts.ndim != 1 or counts.dtype.kind not in "iu" or (counts < 0).any():
        bad = "counts are not integers >= 0"
    elif sizes.shape != (counts.shape[0], 2) or sizes.dtype.kind not in "iu" \
            or (sizes <= 0).any():
        bad = f"image sizes of shape {sizes.shape} for {counts.shape[0]} images"
    elif xy.ndim != 2 or xy.shape[1] != 2 or xy.dtype.kind != "f" \
            or not np.isfinite(xy).all():
        bad = "keypoints are not finite (n, 2) coordinates"
    elif desc.ndim != 2 or desc.dtype not in (np.float32, np.uint8) or (
            desc.dtype == np.float32 and not np.isfinite(desc).all()):
        bad = f"descriptors of shape {desc.shape} and dtype {desc.dtype}"
    elif sum(counts.tolist()) != xy.shape[0] or desc.shape[0] != xy.shape[0]:
        bad = (f"{sum(counts.tolist())} keypoints counted, {xy.shape[0]} stored, "
               f"{desc.shape[0]} descriptors")
    if bad is not None:
        raise ValueError(f"{path}: corrupted features file ({bad})")
    ends = np.cumsum(counts.astype(np.int64))
    starts = ends - counts
    m = str(method)
    return [Features(xy[s:e], desc[s:e], tuple(sizes[i]), m)
            for i, (s, e) in enumerate(zip(starts.tolist(), ends.tolist()))]
