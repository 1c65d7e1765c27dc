"""Inputs of the segmenter: one image or many -> decoded uint8 RGB -> the device.

Accepted inputs: file paths (``str`` / ``os.PathLike``), bytes of encoded files, uint8
``(H, W, 3)`` RGB arrays (or one ``(N, H, W, 3)`` array), uint8 tensors ``(H, W, 3)`` /
``(3, H, W)`` (or ``(N, ...)``) on any device. Files are decoded by
:mod:`semcbir_fast.imageio` (OpenCV, imported there lazily); every failure to read one
input is an :class:`~semcbir_fast.imageio.ImageReadError` naming the input.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from semcbir_fast.imageio import ImageReadError, describe_source, read_image, tensor_to_hwc

from .device import _to_device

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .timings import _Timings


def _is_tensor(x: Any) -> bool:
    mod = type(x).__module__
    return mod.startswith("torch") and type(x).__name__ in ("Tensor", "Parameter")


def _split_inputs(images: Any) -> tuple[list[Any], bool]:
    """(list of single-image sources, whether the input was one image)."""
    if isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview)):
        return [images], True
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            return [images], True
        if images.ndim == 4:
            return list(images), False
        raise ValueError(
            f"images as an array must be (H, W, 3) or (N, H, W, 3) uint8 RGB, got shape {images.shape}"
        )
    if _is_tensor(images):
        if images.dim() == 3:
            return [images], True
        if images.dim() == 4:
            return list(images.unbind(0)), False
        raise ValueError(
            "images as a tensor must be (H, W, 3), (3, H, W), (N, H, W, 3) or (N, 3, H, W) "
            f"uint8, got shape {tuple(images.shape)}"
        )
    if isinstance(images, Iterable):
        items = list(images)
        for i, x in enumerate(items):
            if not (isinstance(x, (str, os.PathLike, bytes, bytearray, memoryview, np.ndarray))
                    or _is_tensor(x)):
                raise TypeError(
                    f"images[{i}] must be a path, bytes, a uint8 array or tensor, got "
                    f"{type(x).__name__}"
                )
        return items, False
    raise TypeError(
        "images must be a path, bytes, an image array/tensor or a list of them, got "
        f"{type(images).__name__}"
    )


def _decode(src: Any, timings: _Timings) -> Any:
    """One source -> uint8 (H, W, 3): NumPy on the host, or a tensor on its device."""
    t0 = time.perf_counter()
    try:
        if _is_tensor(src):
            try:
                return tensor_to_hwc(src)
            except ValueError as exc:
                raise ImageReadError(describe_source(src), str(exc)) from None
        try:
            return read_image(src)
        except ImageReadError:
            raise
        except ValueError as exc:  # bad in-memory array
            raise ImageReadError(describe_source(src), str(exc)) from None
    finally:
        timings.add("decode_cpu", time.perf_counter() - t0)


def _upload(imgs: list[Any], device: torch.device) -> list[tuple[Any, list[int]]]:
    """uint8 HWC images -> ``[(uint8 (k, H, W, 3) device tensor, positions)]``, one entry
    per image size, in first-seen order.

    Host images of one size are stacked into one (pinned, on CUDA) buffer and copied with
    one asynchronous transfer; nothing here waits for the device.
    """
    import torch

    groups: dict[tuple[int, int], list[int]] = {}
    for p, im in enumerate(imgs):
        groups.setdefault((int(im.shape[0]), int(im.shape[1])), []).append(p)
    cuda = device.type == "cuda"
    out = []
    for (h, w), pos in groups.items():
        if all(isinstance(imgs[p], np.ndarray) for p in pos):
            buf = torch.empty((len(pos), h, w, 3), dtype=torch.uint8, pin_memory=cuda)
            np.stack([imgs[p] for p in pos], out=buf.numpy())
            t = buf.to(device, non_blocking=True) if cuda else buf
        else:
            t = torch.stack([_to_device(imgs[p], device) for p in pos])
        out.append((t, pos))
    return out
