"""Devices and compute types of the segmenter (torch imported on first call)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch


def _resolve_device(device: Any) -> torch.device:
    """None (CUDA when available, else the CPU), a name or a ``torch.device`` -> a checked
    CPU or CUDA device; a bare ``"cuda"`` gets the current device's index."""
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be like 'cpu', 'cuda' or 'cuda:1', got {device!r} ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} asks for CUDA, but torch.cuda.is_available() is False "
            f"(torch {torch.__version__}); pass device='cpu' or install a CUDA build of torch"
        )
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be a CPU or CUDA device, got {dev}")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


_DTYPE_NAMES = {"float32": None, "fp32": None, "float16": "float16", "fp16": "float16",
                "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}


def _resolve_dtype(dtype: Any, device: torch.device) -> torch.dtype | None:
    """The autocast type for ``device``: None (float32), ``torch.float16`` or
    ``torch.bfloat16``; names such as ``"fp16"`` or ``"bf16"`` are accepted."""
    import torch

    if isinstance(dtype, str):
        if dtype.lower() not in _DTYPE_NAMES:
            raise ValueError(
                f"dtype must be None, torch.float16 or torch.bfloat16, got {dtype!r}"
            )
        name = _DTYPE_NAMES[dtype.lower()]
        dtype = None if name is None else getattr(torch, name)
    if dtype is None or dtype == torch.float32:
        return None
    if dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(
            f"dtype must be None (float32), torch.float16 or torch.bfloat16 (autocast), got {dtype}"
        )
    if device.type == "cpu" and dtype == torch.float16:
        raise ValueError(
            "dtype=torch.float16 is not supported on the CPU (no fast fp16 kernels); "
            "use dtype=torch.bfloat16 (CPU autocast) or None (float32), or a CUDA device"
        )
    return dtype


def _to_device(a: Any, device: torch.device) -> Any:
    """NumPy array or tensor -> tensor on ``device`` without waiting for queued device work
    (host data goes through pinned memory with an asynchronous copy on CUDA)."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
