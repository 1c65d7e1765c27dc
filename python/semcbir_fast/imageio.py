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
  (a ``ValueError``) that names the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ImageReadError", "ImageSource", "describe_source", "read_image"]

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


def _decode_bytes(buf: bytes | bytearray | memoryview, source: str) -> np.ndarray:
    import cv2

    arr = np.frombuffer(buf, dtype=np.uint8)
    if arr.size == 0:
        raise ImageReadError(source, "the file is empty (0 bytes)")
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


def read_image(source: ImageSource) -> np.ndarray:
    """Read one image as a ``(H, W, 3)`` uint8 RGB array.

    Parameters
    ----------
    source : str, os.PathLike, bytes, bytearray, memoryview, numpy.ndarray or torch.Tensor
        A path to an image file; the bytes of an encoded image file; an already-decoded
        ``(H, W, 3)`` uint8 RGB array (returned as is, made C-contiguous); or a uint8
        torch tensor ``(H, W, 3)`` or ``(3, H, W)`` (copied to host memory).

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
