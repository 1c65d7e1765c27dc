"""Logit geometry: where each output pixel falls on the logit grid, and the argmax there.

Output pixel ``y`` of an image of height ``H`` is mapped to the model input by the inverse
of the input resize (pixel centres, ``align_corners=False``:
``u = (y + 0.5) * Hin / H - 0.5``; ``u = y`` for padded inputs) and then to the logit grid
of height ``h``. Models differ there: TensorFlow-style models (the ADE20K DeepLabV3+, input
513, logits 129) put logit ``i`` on input pixel ``i * (Hin - 1) / (h - 1)``
("corners"); PyTorch-style models (HRNet, input 512, logits 128) on the centre of a cell
of ``Hin / h`` pixels ("centres"). The sidecar may say which (an ``align_corners`` entry);
otherwise a grid with ``(Hin - 1) % (h - 1) == 0`` and ``Hin % h != 0`` is read as
"corners" and anything else as "centres". The result is sampled bilinearly at exactly those
positions (two separable gathers), which costs the same as one ``F.interpolate`` and
avoids resizing 151-channel logits twice. With the ADE20K model this reproduces the source
ONNX graph followed by a bilinear resize of its 513x513 logits on 100 % of the pixels of
the Corel images tested (95.8-99.6 % if the "centres" convention were used instead).

Argmax after or before the resize (``resize="logits"`` or ``"labels"``), measured with the
ADE20K model on 8 Corel-1K images (384x256, 2-core CPU, ``bench/bench_segment.py`` group
``postprocess``): the two agree on 97.2-97.4 % of the pixels, the disagreements lying on
class boundaries; the SBS codes differ by 0-8 bits of 755 at ``levels=0`` and 2-21 bits of
12080 at ``levels=2``. The exact "logits" result is computed by resampling only the pixels
whose four logit-grid neighbours disagree on their argmax (the others provably keep that
label), which costs 80-170 ms per image on the CPU instead of 0.6-1.5 s for resampling
every pixel, against 13-25 ms for "labels" and 0.4-1.8 s for the model itself (the range is
the load of the shared machine). "logits" is therefore the default on every device; on CUDA
every pixel is resampled by default (the sparse path needs a device-to-host synchronisation
to count the boundary pixels); ``Segmenter.logits_impl`` selects either path, and the CUDA
rows of the same benchmark group compare them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .device import _to_device

if TYPE_CHECKING:  # pragma: no cover
    import torch


def _axis_positions(out: int, model_in: int, logit: int, resized: bool,
                    corners: bool) -> np.ndarray:
    """Position on the logit grid (float64) of every output pixel along one axis."""
    y = np.arange(out, dtype=np.float64)
    u = (y + 0.5) * model_in / out - 0.5 if resized else y
    if corners:
        v = u * (logit - 1) / (model_in - 1) if model_in > 1 else np.zeros_like(u)
    else:
        v = (u + 0.5) * logit / model_in - 0.5
    return np.clip(v, 0.0, logit - 1)


def _is_corners(model_in: int, logit: int) -> bool:
    return (model_in > 1 and logit > 1 and (model_in - 1) % (logit - 1) == 0
            and model_in % logit != 0)


@dataclass
class _Bilinear:
    """Separable bilinear sampling: rows ``y0/y1`` with weight ``fy``, columns likewise."""

    y0: Any
    y1: Any
    x0: Any
    x1: Any
    fy: Any
    fx: Any


def _sampling_grid(size: tuple[int, int], model_in: tuple[int, int], logit: tuple[int, int],
                   resized: bool, mode: str, align: bool | None,
                   device: torch.device) -> Any:
    """Sampling positions on the logit grid of every pixel of an image of ``size`` (H, W).

    ``mode="labels"``: the nearest logit row and column indices (two int64 tensors).
    Otherwise a :class:`_Bilinear`. ``align`` is the sidecar's ``align_corners`` (None:
    guess per axis with :func:`_is_corners`). The tensors live on ``device``.
    """
    (H, W), (h, w) = size, logit
    corners_y = align if align is not None else _is_corners(model_in[0], h)
    corners_x = align if align is not None else _is_corners(model_in[1], w)
    py = _axis_positions(H, model_in[0], h, resized, bool(corners_y))
    px = _axis_positions(W, model_in[1], w, resized, bool(corners_x))
    if mode == "labels":
        return (_to_device(np.rint(py).astype(np.int64), device),
                _to_device(np.rint(px).astype(np.int64), device))
    y0 = np.floor(py).astype(np.int64)
    x0 = np.floor(px).astype(np.int64)
    fy, fx = py - y0, px - x0
    # a neighbour with weight 0 does not contribute: point it at the other one, so
    # that the pixel counts as interior in the sparse path
    y1 = np.where(fy > 0, np.minimum(y0 + 1, h - 1), y0)
    x1 = np.where(fx > 0, np.minimum(x0 + 1, w - 1), x0)
    return _Bilinear(*(_to_device(a, device) for a in (y0, y1, x0, x1)),
                     _to_device(fy.astype(np.float32), device),
                     _to_device(fx.astype(np.float32), device))


#: bytes of float intermediates one post-processing step may allocate
_CHUNK_BYTES = 256 << 20


def _argmax_bilinear_dense(logits: Any, g: _Bilinear, out_dtype: Any) -> Any:
    """argmax over classes of the bilinearly resampled logits, computed for every pixel."""
    import torch

    k, c = int(logits.shape[0]), int(logits.shape[1])
    H, W = g.y0.numel(), g.x0.numel()
    out = torch.empty((k, H, W), dtype=out_dtype, device=logits.device)
    budget = _CHUNK_BYTES * (4 if logits.device.type == "cuda" else 1)
    step = max(1, min(k, budget // max(1, c * H * W * 4 * 2)))
    fx = g.fx.view(1, 1, 1, W)
    fy = g.fy.view(1, 1, H, 1)
    for s in range(0, k, step):
        lg = logits[s: s + step].float()
        cols = torch.lerp(lg.index_select(3, g.x0), lg.index_select(3, g.x1), fx)
        full = torch.lerp(cols.index_select(2, g.y0), cols.index_select(2, g.y1), fy)
        out[s: s + step] = full.max(dim=1).indices.to(out_dtype)
    return out


def _argmax_bilinear_sparse(logits: Any, g: _Bilinear, out_dtype: Any) -> Any:
    """Same result as :func:`_argmax_bilinear_dense`, resampling only boundary pixels.

    A resampled logit vector is a convex combination of its (up to) four neighbours on the
    logit grid. Where the four share their first-maximum class ``c``, ``c`` is also the
    first maximum of the combination (it is >= every other class in each term, and > every
    class before it), so only pixels whose neighbours disagree -- those near a label
    boundary, typically a few percent -- need the full ``C``-channel interpolation.
    """
    import torch

    c = int(logits.shape[1])
    lab = logits.max(dim=1).indices  # (k, h, w)
    rows0 = lab.index_select(1, g.y0)
    rows1 = lab.index_select(1, g.y1)
    a = rows0.index_select(2, g.x0)
    mask = a != rows0.index_select(2, g.x1)
    mask |= a != rows1.index_select(2, g.x0)
    mask |= a != rows1.index_select(2, g.x1)
    out = a.to(torch.int32)  # index_put_ has no uint16 kernel: convert at the end
    del rows0, rows1
    idx = mask.nonzero()  # (P, 3): image, row, column (synchronises on CUDA)
    if idx.shape[0] == 0:
        return out.to(out_dtype)
    lgc = logits.permute(0, 2, 3, 1).float().contiguous()  # (k, h, w, C)
    step = max(1, _CHUNK_BYTES // (c * 4 * 6))
    for s in range(0, idx.shape[0], step):
        b, yy, xx = idx[s: s + step].unbind(1)
        ya, yb, xa, xb = g.y0[yy], g.y1[yy], g.x0[xx], g.x1[xx]
        fx = g.fx[xx].unsqueeze(1)
        top = torch.lerp(lgc[b, ya, xa], lgc[b, ya, xb], fx)
        bot = torch.lerp(lgc[b, yb, xa], lgc[b, yb, xb], fx)
        val = torch.lerp(top, bot, g.fy[yy].unsqueeze(1))
        out[b, yy, xx] = val.max(dim=1).indices.to(torch.int32)
    return out.to(out_dtype)
