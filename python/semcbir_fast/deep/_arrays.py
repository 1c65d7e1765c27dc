"""Conversion at the edge of :mod:`semcbir_fast.deep`: NumPy in -> NumPy out, torch stays torch."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def _tensor(x: Any, name: str) -> tuple[torch.Tensor, bool]:
    """``(tensor, was_numpy)``: a NumPy array wrapped (no copy when C-contiguous), a tensor
    as is; TypeError for anything else."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x)), True
    if isinstance(x, torch.Tensor):
        return x, False
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")


def as_maps(x: Any, name: str = "maps") -> tuple[torch.Tensor, bool, bool]:
    """``(tensor (N, C, H, W) floating, was_numpy, was_single)`` from a 3-D or 4-D input.

    Half precision is computed in float32 (sums over many positions); float64 stays.
    """
    t, was_numpy = _tensor(x, name)
    if t.dim() not in (3, 4):
        raise ValueError(
            f"{name} must be (N, C, H, W) or (C, H, W), got shape {tuple(t.shape)}"
        )
    single = t.dim() == 3
    if single:
        t = t.unsqueeze(0)
    if t.shape[-1] == 0 or t.shape[-2] == 0:
        raise ValueError(f"{name} must have a non-empty spatial size, got shape {tuple(t.shape)}")
    if t.dtype != torch.float64:
        t = t.float()
    return t, was_numpy, single


def as_vectors(x: Any, name: str = "x") -> tuple[torch.Tensor, bool, bool]:
    """``(tensor (N, D) floating, was_numpy, was_single)`` from a 1-D or 2-D input."""
    t, was_numpy = _tensor(x, name)
    if t.dim() not in (1, 2):
        raise ValueError(f"{name} must be (N, D) or (D,), got shape {tuple(t.shape)}")
    single = t.dim() == 1
    if single:
        t = t.unsqueeze(0)
    if t.dtype != torch.float64:
        t = t.float()
    return t, was_numpy, single


def back(t: torch.Tensor, was_numpy: bool, single: bool) -> Any:
    """Undo :func:`as_maps` / :func:`as_vectors` on a batch-first result."""
    if single:
        t = t[0]
    if was_numpy:
        return t.detach().cpu().numpy()
    return t
