"""Image loading for the segmentation front end (OpenCV, imported lazily).

:func:`read_image` turns whatever a user has -- a path, the bytes of an encoded file, a
NumPy array or a torch tensor -- into one canonical form: a C-contiguous ``(H, W, 3)``
``uint8`` array in **RGB** order.

Decoding rules (all formats OpenCV reads: JPEG, PNG, BMP, TIFF, WebP, ...):

- files are read as bytes and decoded with ``cv2.imdecode``, so paths with non-ASCII
  characters work on every platform (``cv2.imread`` fails on them on Windows);
- the EXIF orientation of JPEGs is applied, exactly as ``cv2.imread`` does by default;
- OpenCV's BGR order is converted to RGB;
- grayscale images are replicated to three channels;
- an alpha channel (RGBA / BGRA) is **dropped**, not composited on a background: the
  colour of fully transparent pixels is kept as stored;
- 16-bit images are scaled to 8 bits with rounding, ``round(v * 255 / 65535)``;
  floating-point images (TIFF, EXR, HDR) are taken to lie in ``[0, 1]``, clipped and
  scaled the same way;
- an unreadable, empty, truncated or non-image file raises :class:`ImageReadError`
  (a ``ValueError``) that names the file;
- so does an image of more than :func:`max_image_pixels` pixels (``SEMCBIR_MAX_IMAGE_PIXELS``,
  default :data:`DEFAULT_MAX_IMAGE_PIXELS`, 2^28, about 268 million; 0 lifts it): a JPEG, PNG,
  WebP or BMP is refused from its header, before any pixel is allocated (a small file that
  declares a huge image, a "decompression bomb", costs nothing); other formats are refused
  after decoding (OpenCV's own cap, 2^30 pixels, bounds them).

Decoding once per pass (:func:`decode_scope`): a pipeline pass (an index-build chunk, an
evaluation, a query batch) reads each file several times -- the probe of the readable
files, the segmenter, each backbone pass of a deep signature, region crops. Inside a
``with decode_scope():`` block, :func:`read_image` of a *path* remembers the decoded array
under the file's absolute path, size and modification time, and a later read of the same,
unchanged file returns a copy of it instead of decoding again. The memo is bounded in bytes
(``max_bytes``, default ``SEMCBIR_DECODE_MEMO_MB`` MiB, 512; 0 turns it off), thread-safe
(threads that read one file at once wait for a single decode), process-wide (nested or
concurrent scopes share one memo, freed when the last one closes) and returns a private,
writable array every time, as outside a scope. Outside a scope nothing is remembered.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEFAULT_DECODE_MEMO_MB", "DEFAULT_MAX_IMAGE_PIXELS", "DecodeMemo", "DecodeStats",
           "ImageReadError", "ImageSource", "active_decode_memo", "decode_memo_bytes",
           "decode_scope", "describe_source", "max_image_pixels", "read_image"]

#: Anything :func:`read_image` accepts (a path, encoded bytes, an array or a tensor).
ImageSource = Any


class ImageReadError(ValueError):
    """An image could not be read or decoded.

    Attributes
    ----------
    source : str
        The file (or a short description of the in-memory input) that failed.
    reason : str
        Why it failed, without the file name.
    """

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"cannot read image {source}: {reason}")


def describe_source(src: Any) -> str:
    """A short printable name of an image source, used in errors and reports."""
    if isinstance(src, (str, os.PathLike)):
        return os.fsdecode(src)
    if isinstance(src, (bytes, bytearray, memoryview)):
        return f"<{len(memoryview(src).cast('B'))} bytes>"
    shape = getattr(src, "shape", None)
    if shape is not None:
        return f"<{type(src).__name__} shape={tuple(shape)} dtype={getattr(src, 'dtype', '?')}>"
    return f"<{type(src).__name__}>"


def _is_torch_tensor(obj: Any) -> bool:
    # Avoid importing torch just to answer "no".
    mod = type(obj).__module__
    return mod.startswith("torch") and type(obj).__name__ in ("Tensor", "Parameter")


def _to_uint8(img: np.ndarray, source: str) -> np.ndarray:
    """Scale a decoded image of any depth to uint8 (see module docstring)."""
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return ((img.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if img.dtype == np.int8:
        return (img.astype(np.int16) + 128).astype(np.uint8)
    if img.dtype == np.int16:
        return (((img.astype(np.int32) + 32768) * 255 + 32767) // 65535).astype(np.uint8)
    if np.issubdtype(img.dtype, np.floating):
        f = np.nan_to_num(img.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        return np.rint(np.clip(f, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ImageReadError(source, f"unsupported pixel type {img.dtype}")


#: Default of :func:`max_image_pixels` (2^28 pixels: 805 MB decoded as RGB).
DEFAULT_MAX_IMAGE_PIXELS = 1 << 28
_PIXELS_ENV = "SEMCBIR_MAX_IMAGE_PIXELS"


def _env_number(name: str, default: float, meaning: str) -> float:
    """The number >= 0 in environment variable ``name``, ``default`` when it is unset or
    blank; anything else raises ValueError saying ``meaning``."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{name} must be {meaning}, got {raw!r}")
    return value


def max_image_pixels() -> int:
    """The most pixels (width x height) :func:`read_image` decodes from a file or bytes:
    ``SEMCBIR_MAX_IMAGE_PIXELS`` when set (a number >= 0; 0 = no limit but OpenCV's own),
    else :data:`DEFAULT_MAX_IMAGE_PIXELS`."""
    return int(_env_number(_PIXELS_ENV, DEFAULT_MAX_IMAGE_PIXELS,
                           "a number of pixels >= 0 (0 = no limit)"))


def _too_many_pixels(source: str, width: int, height: int, limit: int) -> ImageReadError:
    return ImageReadError(
        source, f"it is {width} x {height} = {width * height:,} pixels, more than the limit "
        f"of {limit:,} ({_PIXELS_ENV}; 0 lifts it)")


def _decode_bytes(buf: bytes | bytearray | memoryview, source: str) -> np.ndarray:
    import cv2

    from .imagesize import probe_image

    arr = np.frombuffer(buf, dtype=np.uint8)
    if arr.size == 0:
        raise ImageReadError(source, "the file is empty (0 bytes)")
    limit = max_image_pixels()
    head = probe_image(buf) if limit else None
    if head is not None and head.pixels > limit:
        raise _too_many_pixels(source, head.width, head.height, limit)
    rgb_flag = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.11
    flags = (rgb_flag if rgb_flag is not None else cv2.IMREAD_COLOR) | cv2.IMREAD_ANYDEPTH
    try:
        img = cv2.imdecode(arr, flags)
    except cv2.error as exc:  # pragma: no cover - OpenCV raises only on odd inputs
        raise ImageReadError(source, f"OpenCV failed to decode it ({exc})") from None
    if img is None or img.size == 0:
        raise ImageReadError(
            source,
            f"not a readable image ({arr.size} bytes, starts with {bytes(arr[:8])!r}); "
            "it is corrupt, truncated or in a format OpenCV does not decode",
        )
    if limit and img.shape[0] * img.shape[1] > limit:  # a format probe_image does not read
        raise _too_many_pixels(source, img.shape[1], img.shape[0], limit)
    if img.ndim == 2:  # some decoders ignore IMREAD_COLOR for exotic formats
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    elif img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    if rgb_flag is None:
        img = img[:, :, ::-1]
    return np.ascontiguousarray(_to_uint8(img, source))


def _array_image(arr: np.ndarray, source: str) -> np.ndarray:
    """Validate an already-decoded ``(H, W, 3)`` uint8 RGB array."""
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(
            f"image array must be (H, W, 3) RGB, got shape {arr.shape}; "
            "convert grayscale with np.repeat(a[..., None], 3, axis=2) and drop alpha with a[..., :3]"
        )
    if arr.dtype != np.uint8:
        raise ValueError(
            f"image array must be uint8 (0..255), got dtype {arr.dtype}; "
            "scale it first, e.g. (a * 255).round().astype(np.uint8) for floats in [0, 1]"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"image array must be non-empty, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def tensor_to_hwc(t: Any) -> Any:
    """Validate a uint8 image tensor and return it as ``(H, W, 3)`` on its own device.

    Accepts ``(H, W, 3)`` (channels last) or ``(3, H, W)`` (channels first, the torchvision
    convention). A ``(3, H, 3)`` tensor is ambiguous and read as channels last.
    """
    import torch

    if t.dtype != torch.uint8:
        raise ValueError(
            f"image tensor must be uint8 (0..255), got dtype {t.dtype}; "
            "scale it first, e.g. (t * 255).round().to(torch.uint8) for floats in [0, 1]"
        )
    if t.dim() == 3 and t.shape[2] == 3:
        hwc = t
    elif t.dim() == 3 and t.shape[0] == 3:
        hwc = t.permute(1, 2, 0)
    else:
        raise ValueError(
            f"image tensor must be (H, W, 3) or (3, H, W), got shape {tuple(t.shape)}; "
            "a batch (N, ...) must be passed as a list of images"
        )
    if hwc.shape[0] == 0 or hwc.shape[1] == 0:
        raise ValueError(f"image tensor must be non-empty, got shape {tuple(t.shape)}")
    return hwc


def _read_file(path: Path) -> np.ndarray:
    """Read and decode one image file (errors name it)."""
    name = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageReadError(name, "no such file") from None
    except IsADirectoryError:
        raise ImageReadError(name, "it is a directory, not a file") from None
    except OSError as exc:
        raise ImageReadError(name, f"the file cannot be read ({exc.strerror or exc})") from None
    return _decode_bytes(data, name)


# ----------------------------------------------------------------------------- decode memo
#: Default bound of the decode memo of a :func:`decode_scope`, in MiB.
DEFAULT_DECODE_MEMO_MB = 512
_MEMO_ENV = "SEMCBIR_DECODE_MEMO_MB"


def decode_memo_bytes() -> int:
    """The default bound of a :func:`decode_scope`'s memo in bytes: ``SEMCBIR_DECODE_MEMO_MB``
    MiB when set (a number >= 0; 0 turns the memo off), else
    :data:`DEFAULT_DECODE_MEMO_MB`."""
    mb = _env_number(_MEMO_ENV, DEFAULT_DECODE_MEMO_MB,
                     "a number of MiB >= 0 (0 = no decode memo)")
    return int(mb * (1 << 20))


@dataclass
class _Entry:
    stamp: tuple[int, int]  # (size, mtime_ns) of the file when it was read
    array: np.ndarray  # read-only; callers get copies
    hits: int = 0


@dataclass
class DecodeStats:
    """Counters of a :class:`DecodeMemo` (for tests and measurements)."""

    #: files decoded (memo misses, including decodes that could not be kept)
    decodes: int = 0
    #: reads answered from the memo
    hits: int = 0
    #: decoded images not kept because the bound left no room (or they exceed it)
    refused: int = 0
    #: entries dropped to make room (only entries already read back at least once)
    evicted: int = 0
    #: entries dropped because their file changed on disk
    stale: int = 0


@dataclass(eq=False)
class DecodeMemo:
    """Decoded images of files, by absolute path, checked against the file's size and
    modification time; at most ``max_bytes`` of pixels held (see :func:`decode_scope`).

    Room policy: a pass reads its files in the same order several times (segmenter, then
    each backbone pass), for which least-recently-used eviction would keep nothing once
    the pass is larger than the bound. So an entry is evicted (oldest use first) only after
    it has been read back at least once; when no such entry is left, a new image is not
    kept and later reads of it decode it again. Memory never exceeds ``max_bytes``.
    """

    max_bytes: int
    stats: DecodeStats = field(default_factory=DecodeStats)
    nbytes: int = 0
    _entries: OrderedDict[str, _Entry] = field(default_factory=OrderedDict, repr=False)
    _inflight: dict[str, threading.Event] = field(default_factory=dict, repr=False)
    _read_back: int = field(default=0, repr=False)  # entries with hits > 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, path: object) -> bool:
        if not isinstance(path, (str, os.PathLike)):
            return False
        with self._lock:
            return os.path.abspath(os.fsdecode(path)) in self._entries

    def clear(self) -> None:
        """Drop every entry (the counters are kept)."""
        with self._lock:
            self._entries.clear()
            self.nbytes = 0
            self._read_back = 0

    def read(self, path: Path, decode: Callable[[Path], np.ndarray] | None = None
             ) -> np.ndarray:
        """``decode(path)`` (default: read and decode the file), or a copy of the array
        decoded from the same unchanged file before. Always a new, writable array."""
        decode = decode or _read_file
        key = os.path.abspath(str(path))
        try:
            st = os.stat(key)
        except OSError:  # missing, unreadable: let the decoder say why
            return decode(path)
        if not stat.S_ISREG(st.st_mode):
            return decode(path)
        stamp = (int(st.st_size), int(st.st_mtime_ns))
        hit: np.ndarray | None = None
        mine, waited = False, False
        while True:
            with self._lock:
                e = self._entries.get(key)
                if e is not None and e.stamp == stamp:
                    if not e.hits:
                        self._read_back += 1
                    e.hits += 1
                    self._entries.move_to_end(key)
                    self.stats.hits += 1
                    hit = e.array
                    break
                if e is not None:  # the file changed on disk: forget the old pixels
                    self._drop(key)
                    self.stats.stale += 1
                ev = self._inflight.get(key)
                if ev is None:
                    ev = self._inflight[key] = threading.Event()
                    mine = True
                    break
                if waited:  # the other thread's image was not kept: decode it here
                    break
            ev.wait()  # another thread decodes this file: use its result
            waited = True
        if hit is not None:
            return hit.copy()  # outside the lock: an entry's array is never written
        try:
            arr = decode(path)
            with self._lock:
                self.stats.decodes += 1
                kept = self._keep(key, stamp, arr)
        finally:
            if mine:
                with self._lock:
                    self._inflight.pop(key, None)
                ev.set()
        return arr.copy() if kept else arr

    # -- under the lock ---------------------------------------------------------------
    def _drop(self, key: str) -> None:
        e = self._entries.pop(key)
        self.nbytes -= e.array.nbytes
        if e.hits:
            self._read_back -= 1

    def _keep(self, key: str, stamp: tuple[int, int], arr: np.ndarray) -> bool:
        n = int(arr.nbytes)
        if n > self.max_bytes:
            self.stats.refused += 1
            return False
        if key in self._entries:  # decoded meanwhile by a thread that did not wait
            self._drop(key)
        if self.nbytes + n > self.max_bytes and self._read_back:
            for k in [k for k, e in self._entries.items() if e.hits]:  # oldest use first
                self._drop(k)
                self.stats.evicted += 1
                if self.nbytes + n <= self.max_bytes:
                    break
        if self.nbytes + n > self.max_bytes:
            self.stats.refused += 1
            return False
        kept = arr.copy()
        kept.flags.writeable = False
        self._entries[key] = _Entry(stamp, kept)
        self.nbytes += n
        return True


_scope_lock = threading.Lock()
_active_memo: DecodeMemo | None = None
_scope_depth = 0


def active_decode_memo() -> DecodeMemo | None:
    """The memo of the open :func:`decode_scope` (None outside one)."""
    return _active_memo


@contextlib.contextmanager
def decode_scope(max_bytes: int | None = None) -> Iterator[DecodeMemo | None]:
    """Within the block, :func:`read_image` decodes each image file at most once (while the
    memo has room): what one pipeline pass wraps around all the work on its images.

    Parameters
    ----------
    max_bytes : int, optional
        Bound of the decoded pixels held, in bytes (default :func:`decode_memo_bytes`:
        ``SEMCBIR_DECODE_MEMO_MB`` MiB, else 512 MiB); 0 turns the memo off for this scope.
        A scope opened while another is open (in any thread) joins its memo and bound.

    Yields
    ------
    DecodeMemo or None
        The memo in use (its ``stats`` count decodes and hits), None when it is off. Its
        entries are freed when the outermost scope closes.

    The key of an image is its file's absolute path, size and modification time: a file
    rewritten on disk is decoded again. Bytes, arrays and tensors are never memoised.
    """
    global _active_memo, _scope_depth
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(
            max_bytes, (int, np.integer)) or max_bytes < 0):
        raise ValueError(f"max_bytes must be an int >= 0 (0 = no memo), got {max_bytes!r}")
    with _scope_lock:
        memo = _active_memo
        if memo is None:
            limit = decode_memo_bytes() if max_bytes is None else int(max_bytes)
            if limit > 0:
                memo = _active_memo = DecodeMemo(limit)
        if memo is not None:
            _scope_depth += 1
    try:
        yield memo
    finally:
        if memo is not None:
            with _scope_lock:
                _scope_depth -= 1
                if _scope_depth == 0:
                    _active_memo = None
                    memo.clear()


def read_image(source: ImageSource) -> np.ndarray:
    """Read one image as a ``(H, W, 3)`` uint8 RGB array.

    Parameters
    ----------
    source : str, os.PathLike, bytes, bytearray, memoryview, numpy.ndarray or torch.Tensor
        A path to an image file; the bytes of an encoded image file; an already-decoded
        ``(H, W, 3)`` uint8 RGB array (returned as is, made C-contiguous); or a uint8
        torch tensor ``(H, W, 3)`` or ``(3, H, W)`` (copied to host memory). Inside a
        :func:`decode_scope`, a file decoded before in the scope (same path, size and
        modification time) is not decoded again.

    Returns
    -------
    numpy.ndarray
        C-contiguous ``(H, W, 3)`` ``uint8`` array, RGB order. See the module docstring for
        the handling of grayscale, alpha, 16-bit and EXIF orientation.

    Raises
    ------
    ImageReadError
        The file is missing, unreadable, empty, truncated or not an image. The message
        names the file.
    ValueError
        An in-memory array or tensor has the wrong shape or dtype.
    TypeError
        ``source`` is of no supported type.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(os.fsdecode(source))
        memo = _active_memo
        return memo.read(path) if memo is not None else _read_file(path)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode_bytes(source, describe_source(source))
    if isinstance(source, np.ndarray):
        return _array_image(source, describe_source(source))
    if _is_torch_tensor(source):
        return np.ascontiguousarray(tensor_to_hwc(source).detach().cpu().numpy())
    raise TypeError(
        f"source must be a path, bytes, a (H, W, 3) uint8 numpy array or a uint8 torch "
        f"tensor, got {type(source).__name__}"
    )
