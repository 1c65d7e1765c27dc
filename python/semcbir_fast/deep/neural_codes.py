"""Neural codes with significant convolutional activations (paper 003: Staszewski,
Jaworski, Cao and Rutkowski, "A new approach to descriptors generation for image retrieval
by analyzing activations of deep neural network layers", IEEE TNNLS 2021).

Notation of the paper (section III). The network has convolutional blocks
``L_1 ... L_N`` with outputs ``y_m`` of ``C_m`` maps of ``H_m x W_m``, each block halving
the size of the previous one, then fully connected layers. The descriptors of an image are

- ``h(x) = [y_{N+1}, y_{N+2}]`` (eq. 7), the fully connected activations ("neural codes",
  Babenko et al. 2014);
- ``eta~(x) = [w_1, ..., w_N]`` (eq. 15), one value per channel of every block:

  * eq. 8: the significant neurons of the last block, per channel ``k``:
    ``z_{N,k}(i, j) = 1 if y_{N,k}(i, j) >= q else 0`` (``q = 0.5`` in the paper);
  * eqs. 11-13: a neuron ``(i, j)`` of block ``m < N`` corresponds to neuron
    ``(floor(i / s_m), floor(j / s_m))`` of block ``N``, ``s_m = 2^(N - m)`` the ratio of
    their strides; its weight ``z_m(i, j)`` counts the significant neurons of block ``N``
    (over all channels) it corresponds to, i.e. ``z_m`` is the count map
    ``c(i', j') = sum_k z_{N,k}(i', j')`` upsampled by ``s_m`` (nearest). The same ``z_m``
    serves every channel of block ``m``. (Eq. 13 of the paper writes
    ``chi_{Z_{N,k}}``; its text and Algorithm 1 use the sets ``Z_{m,k}`` of eq. 12, which
    is what is implemented.)
  * eq. 14: ``w_{m,k} = sum_ij z_m(i, j) y_{m,k}(i, j) / sum_ij z_m(i, j)``; for ``m = N``
    the weights are the channel's own ``z_{N,k}``, so ``w_{N,k}`` is the plain mean of the
    significant activations of channel ``k``.

  The paper leaves ``0 / 0`` undefined: here a channel of block ``N`` without a
  significant neuron gets ``w_{N,k} = 0``, and when no neuron of block ``N`` is
  significant at all, every ``w_m`` is 0.
- ``eta(x) = [h(x), eta~(x)]`` (eq. 16).

Sizes that are not exact powers of two (inputs that are not multiples of 32) follow the
networks' "SAME" padding, ``H_m' = ceil(H_m / 2)``: the correspondence stays
``floor(i / s_m)``, and ``s_m`` is inferred as the power of two with
``ceil(H_m / s_m) = H_N`` and ``ceil(W_m / s_m) = W_N`` (or given as ``strides``).

VGG16 -> EfficientNet-Lite (what :class:`semcbir_fast.models.backbone.Backbone` feeds in)
-----------------------------------------------------------------------------------------
VGG16 (224 px input) has five blocks ending in max-pooling, outputs at strides
2 / 4 / 8 / 16 / 32 (112 ... 7 px; 64, 128, 256, 512, 512 channels, after ReLU), then
FC6 and FC7 (4096 each) and the softmax. EfficientNet-Lite has a stem, seven MBConv
stages (strides 2, 4, 8, 16, 16, 32, 32), a 1x1 "head" convolution to 1280 channels with
BN + ReLU6, global average pooling and one linear classifier; it has no hidden fully
connected layer. The mapping used:

==================  =================================  ===================================
paper (VGG16)       EfficientNet-Lite0 (224 px)        why
==================  =================================  ===================================
``y_1`` (pool1)     stage 1 output, 16 x 112 x 112     last map at stride 2
``y_2`` (pool2)     stage 2 output, 24 x 56 x 56       last map at stride 4
``y_3`` (pool3)     stage 3 output, 40 x 28 x 28       last map at stride 8
``y_4`` (pool4)     stage 5 output, 112 x 14 x 14      last map at stride 16
``y_N`` (pool5)     head map, 1280 x 7 x 7 (ReLU6)     last map at stride 32; non-negative
                                                       like pool5, so ``q`` is meaningful
``h`` (FC6, FC7)    global average of the head map,    the penultimate activation, the
                    1280-d                             classifier's input
==================  =================================  ===================================

Stages 4, 6 and 7 are skipped because another stage ends at the same stride (as VGG's
inner convolutions are: only the pooled block outputs enter the descriptor). The stage
outputs are linear bottlenecks (no ReLU), so unlike VGG's they can be negative; the weighted
means of eq. 14 are defined all the same. With ReLU6 the head activations lie in
``[0, 6]``; ``q = 0.5`` is the paper's value, chosen for VGG16 and not retuned here.
Dimensions for Lite0: ``h`` 1280, ``eta~`` 16 + 24 + 40 + 112 + 1280 = 1472, ``eta`` 2752.

All functions take NumPy arrays or torch tensors ``(N, C, H, W)`` (or one ``(C, H, W)``)
and return the same kind, batch-first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ._arrays import as_maps, as_vectors, back

__all__ = [
    "NeuralCodes",
    "block_weights",
    "correspondence_stride",
    "eta_tilde",
    "last_block_weights",
    "neural_codes",
    "significance_counts",
]

_PAPER_Q = 0.5


def correspondence_stride(block_hw: Sequence[int], last_hw: Sequence[int]) -> int:
    """``s_m``: the power of two with ``ceil(H_m / s) = H_N`` and ``ceil(W_m / s) = W_N``.

    Raises
    ------
    ValueError
        No power of two maps the block onto the last block (pass ``strides`` explicitly).
    """
    hm, wm = int(block_hw[0]), int(block_hw[1])
    hn, wn = int(last_hw[0]), int(last_hw[1])
    s = 1
    while s <= max(hm, wm):
        if -(-hm // s) == hn and -(-wm // s) == wn:
            return s
        s *= 2
    raise ValueError(
        f"a block of spatial size {hm}x{wm} does not reduce to the last block's {hn}x{wn} "
        "by any power-of-two stride with ceil rounding; pass strides= explicitly"
    )


def significance_counts(last: Any, q: float = _PAPER_Q) -> Any:
    """Count map ``c(i, j) = sum_k [y_{N,k}(i, j) >= q]``: ``(N, C, H, W) -> (N, H, W)``
    (eqs. 8 and 13 before the upsampling), as the input's float type."""
    t, np_in, single = as_maps(last, "last")
    return back((t >= q).to(t.dtype).sum(dim=1), np_in, single)


def last_block_weights(last: Any, q: float = _PAPER_Q) -> Any:
    """``w_N``: per channel, the mean of its significant activations (eq. 14, ``m = N``);
    0 for a channel with none. ``(N, C, H, W) -> (N, C)``."""
    t, np_in, single = as_maps(last, "last")
    z = (t >= q).to(t.dtype)
    num = (z * t).sum(dim=(2, 3))
    den = z.sum(dim=(2, 3))
    w = torch.where(den > 0, num / den.clamp(min=1), torch.zeros_like(num))
    return back(w, np_in, single)


def block_weights(block: Any, counts: Any, stride: int | None = None) -> Any:
    """``w_m`` of a block ``m < N`` (eq. 14): the mean of each channel weighted by the
    upsampled count map.

    Parameters
    ----------
    block : array or tensor
        ``y_m``, ``(N, C_m, H_m, W_m)``.
    counts : array or tensor
        ``(N, H_N, W_N)`` from :func:`significance_counts`.
    stride : int, optional
        ``s_m``; inferred with :func:`correspondence_stride` when omitted.

    Returns
    -------
    ``(N, C_m)``; rows whose count map is all zero are 0.
    """
    t, np_in, single = as_maps(block, "block")
    c = counts if isinstance(counts, torch.Tensor) else torch.from_numpy(counts)
    if c.dim() == 2:
        c = c.unsqueeze(0)
    if c.dim() != 3 or c.shape[0] != t.shape[0]:
        raise ValueError(
            f"counts must be (N, H_N, W_N) with N={t.shape[0]} like the block, got shape "
            f"{tuple(c.shape)}"
        )
    c = c.to(device=t.device, dtype=t.dtype)
    hm, wm = t.shape[-2], t.shape[-1]
    s = correspondence_stride((hm, wm), c.shape[-2:]) if stride is None else int(stride)
    if s < 1:
        raise ValueError(f"stride must be >= 1, got {stride!r}")
    iy = torch.clamp(torch.arange(hm, device=t.device) // s, max=c.shape[-2] - 1)
    ix = torch.clamp(torch.arange(wm, device=t.device) // s, max=c.shape[-1] - 1)
    z = c.index_select(1, iy).index_select(2, ix)  # (N, H_m, W_m)
    num = torch.einsum("nchw,nhw->nc", t, z)
    den = z.sum(dim=(1, 2)).unsqueeze(1)
    w = torch.where(den > 0, num / den.clamp(min=1), torch.zeros_like(num))
    return back(w, np_in, single)


def eta_tilde(blocks: Sequence[Any], q: float = _PAPER_Q, *,
              strides: Sequence[int] | None = None) -> Any:
    """``eta~(x) = [w_1, ..., w_N]`` (eq. 15): ``(N, sum_m C_m)``.

    Parameters
    ----------
    blocks : sequence of arrays or tensors
        ``[y_1, ..., y_N]``, each ``(N, C_m, H_m, W_m)``; the last one defines the
        significant neurons.
    q : float
        Significance threshold of eq. 8.
    strides : sequence of int, optional
        ``s_m`` for ``y_1 ... y_{N-1}`` (``len(blocks) - 1`` values); inferred from the
        sizes when omitted.
    """
    if len(blocks) == 0:
        raise ValueError("blocks must hold at least the last block")
    if strides is not None and len(strides) != len(blocks) - 1:
        raise ValueError(
            f"strides must give one value per block before the last ({len(blocks) - 1}), "
            f"got {len(strides)}"
        )
    last, np_in, single = as_maps(blocks[-1], "blocks[-1]")
    counts = significance_counts(last, q)
    parts = []
    for m, y in enumerate(blocks[:-1]):
        t, _, _ = as_maps(y, f"blocks[{m}]")
        if t.shape[0] != last.shape[0]:
            raise ValueError(
                f"blocks[{m}] has {t.shape[0]} images, the last block {last.shape[0]}"
            )
        s = None if strides is None else strides[m]
        parts.append(block_weights(t.to(last.device), counts, s).to(last.dtype))
    parts.append(last_block_weights(last, q))
    return back(torch.cat(parts, dim=1), np_in, single)


@dataclass
class NeuralCodes:
    """The three descriptors of paper 003 for a batch (NumPy or torch, batch-first).

    Attributes
    ----------
    h : ``(N, D_h)``, the fully connected / penultimate code (eq. 7).
    eta_tilde : ``(N, sum C_m)``, the significant convolutional activations (eq. 15).
    eta : ``(N, D_h + sum C_m)``, both concatenated (eq. 16).
    """

    h: Any
    eta_tilde: Any
    eta: Any

    def as_dict(self) -> dict[str, Any]:
        """``{"h": ..., "eta_tilde": ..., "eta": ...}`` (what a Backbone reducer returns)."""
        return {"h": self.h, "eta_tilde": self.eta_tilde, "eta": self.eta}


def neural_codes(blocks: Sequence[Any], h: Any = None, q: float = _PAPER_Q, *,
                 strides: Sequence[int] | None = None) -> NeuralCodes:
    """``h(x)``, ``eta~(x)`` and ``eta(x) = [h, eta~]`` (Algorithm 1 of paper 003).

    Parameters
    ----------
    blocks : sequence of arrays or tensors
        ``[y_1, ..., y_N]`` (see :func:`eta_tilde`).
    h : array or tensor, optional
        ``(N, D_h)`` fully connected activations (VGG16: ``[FC6, FC7]``). Default: the
        global average of the last block, the penultimate activation of networks without
        hidden fully connected layers (EfficientNet-Lite: the pooled 1280-d head).
    q, strides
        See :func:`eta_tilde`.
    """
    if len(blocks) == 0:
        raise ValueError("blocks must hold at least the last block")
    last, np_in, single = as_maps(blocks[-1], "blocks[-1]")
    ts = [as_maps(b, f"blocks[{m}]")[0] for m, b in enumerate(blocks[:-1])] + [last]
    et = eta_tilde(ts, q, strides=strides)
    if h is None:
        hv = last.mean(dim=(2, 3))
    else:
        hv, _, _ = as_vectors(h, "h")
        if hv.shape[0] != last.shape[0]:
            raise ValueError(f"h must have one row per image ({last.shape[0]}), got {hv.shape[0]}")
        hv = hv.to(device=et.device, dtype=et.dtype)
    eta = torch.cat([hv, et], dim=1)
    return NeuralCodes(h=back(hv, np_in, single), eta_tilde=back(et, np_in, single),
                       eta=back(eta, np_in, single))
