"""Global descriptors from a convolutional feature map: GAP, GeM, CroW, and L2.

Every function takes a map ``(N, C, H, W)`` (or one ``(C, H, W)``) as a NumPy array or a
torch tensor, on any device, and returns ``(N, C)`` (or ``(C,)``) of the same kind
(NumPy in, NumPy out). Half-precision maps are reduced in float32.

- :func:`gap`: global average pooling, ``f_k = mean_ij x_kij``;
- :func:`gem`: generalised mean (Radenovic, Tolias and Chum, TPAMI 2019),
  ``f_k = (mean_ij max(x_kij, eps)^p)^(1/p)``: ``p = 1`` is GAP, ``p -> inf`` max pooling;
- :func:`crow`: cross-dimensional weighting (Kalantidis, Mellina and Osindero, "Cross-
  dimensional weighting for aggregated deep convolutional features", ECCV workshops
  2016), ``f_k = Omega_k * sum_ij S_ij x_kij`` with

  * spatial weights from the channel sum ``S'_ij = sum_k x_kij`` normalised by its
    ``a``-norm and raised to ``1/b``: ``S_ij = (S'_ij / (sum_mn S'_mn^a)^(1/a))^(1/b)``
    (``a = b = 2`` in the paper);
  * channel weights from the sparsity of each channel, ``Q_k`` = fraction of positions
    with ``x_kij > 0``: ``Omega_k = log(sum_h Q_h / Q_k)`` (0 for a channel that is zero
    everywhere: its sum is 0 anyway, so the paper's ``epsilon + Q_k`` gives the same
    descriptor without the overflow);

  the paper then L2-normalises, PCA-whitens and L2-normalises again
  (:func:`l2_normalize`, :mod:`semcbir_fast.deep.whitening`).

CroW (and GeM's clamp) assume non-negative maps, as after a ReLU: the EfficientNet-Lite head
map (ReLU6) is; its stage outputs (linear bottlenecks) are not.
"""

from __future__ import annotations

from typing import Any

import torch

from ._arrays import as_maps, as_vectors, back

__all__ = [
    "crow",
    "crow_channel_weights",
    "crow_spatial_weights",
    "gap",
    "gem",
    "l2_normalize",
]


def gap(maps: Any) -> Any:
    """Global average pooling: ``(N, C, H, W) -> (N, C)``."""
    t, np_in, single = as_maps(maps)
    return back(t.mean(dim=(2, 3)), np_in, single)


def gem(maps: Any, p: float = 3.0, *, eps: float = 1e-6) -> Any:
    """Generalised-mean pooling ``(mean max(x, eps)^p)^(1/p)``: ``(N, C, H, W) -> (N, C)``.

    Raises
    ------
    ValueError
        ``p`` not a finite number > 0, or ``eps`` not > 0.
    """
    if not (isinstance(p, (int, float)) and 0 < float(p) < float("inf")):
        raise ValueError(f"p must be a finite number > 0, got {p!r}")
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise ValueError(f"eps must be > 0, got {eps!r}")
    t, np_in, single = as_maps(maps)
    out = t.clamp(min=eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)
    return back(out, np_in, single)


def crow_spatial_weights(maps: Any, a: float = 2.0, b: float = 2.0) -> Any:
    """CroW spatial weights ``S``: ``(N, C, H, W) -> (N, H, W)`` (zero map -> zeros)."""
    if not (a > 0 and b > 0):
        raise ValueError(f"a and b must be > 0, got a={a!r}, b={b!r}")
    t, np_in, single = as_maps(maps)
    s = t.sum(dim=1)  # (N, H, W)
    norm = s.pow(a).sum(dim=(1, 2), keepdim=True).pow(1.0 / a)
    w = torch.where(norm > 0, s / norm.clamp(min=torch.finfo(s.dtype).tiny), torch.zeros_like(s))
    if b != 1:
        w = w.clamp(min=0).pow(1.0 / b)
    return back(w, np_in, single)


def crow_channel_weights(maps: Any) -> Any:
    """CroW channel weights ``Omega``: ``(N, C, H, W) -> (N, C)``, from the sparsity of
    each channel (see the module docstring)."""
    t, np_in, single = as_maps(maps)
    q = (t > 0).to(t.dtype).mean(dim=(2, 3))  # (N, C)
    total = q.sum(dim=1, keepdim=True)
    w = torch.where(q > 0, torch.log(total / q.clamp(min=torch.finfo(q.dtype).tiny)),
                    torch.zeros_like(q))
    return back(w, np_in, single)


def crow(maps: Any, a: float = 2.0, b: float = 2.0) -> Any:
    """CroW descriptor (before normalisation): ``(N, C, H, W) -> (N, C)``."""
    t, np_in, single = as_maps(maps)
    s = crow_spatial_weights(t, a, b)  # (N, H, W)
    omega = crow_channel_weights(t)  # (N, C)
    f = torch.einsum("nchw,nhw->nc", t, s) * omega
    return back(f, np_in, single)


def l2_normalize(x: Any, *, eps: float = 1e-12) -> Any:
    """Rows divided by their Euclidean norm (rows of norm < eps are left at ~0).

    ``(N, D)`` or ``(D,)``, NumPy or torch.
    """
    t, np_in, single = as_vectors(x)
    out = t / t.norm(dim=1, keepdim=True).clamp(min=eps)
    return back(out, np_in, single)
