"""Semantic Binary Signature encoder in PyTorch, on the label maps' own device.

:func:`encode_sbs_torch` produces the same bytes as :func:`semcbir_fast.encode_sbs` (the
C++ encoder) and as SPEC.md section 1, for label maps that already live on a GPU (the
output of :meth:`semcbir_fast.segment.Segmenter.segment` with ``as_torch=True``): the label
maps never leave the device, only the codes (``stride`` bytes per image) are copied to
the host, once per call.

Algorithm, per group of maps of the same size (a batch ``(N, H, W)`` is one group):

1. a block-index map ``B[y, x] = by * g + bx`` for the finest grid ``g = 2**levels``
   (row ``y`` lies in block row ``by`` iff ``floor(by*H/g) <= y < floor((by+1)*H/g)``);
2. one ``bincount`` (CPU) or ``index_add_`` (CUDA: no read-back of the maximum key, so
   nothing waits for the device) over the key ``(image * 4**levels + B) * M + label`` gives
   ``count[image, block, class]`` (void pixels go to a discarded bin); batches whose
   counts would exceed 2**26 cells are done in slices of images;
3. coarser grids (``pyramid=True``) are sums of 2x2 children: the block bounds of level
   ``l`` are a subset of those of level ``l + 1`` (``floor(2*by*H / 2**(l+1)) ==
   floor(by*H / 2**l)``), so this is exact for every ``H, W``, even grids finer than the map;
4. ``total`` = sum over classes; level = ``(4*count + total - 1) // total`` (exact integer
   arithmetic), 0 where ``count == 0``; presence and thermometer bits are laid out as in
   SPEC section 1, levels concatenated ``0..n`` for a pyramid, zero-padded to ``stride``
   bytes and packed most significant bit first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["encode_sbs_torch"]


@dataclass(frozen=True)
class _Layout:
    """Bit layout of one code (see SPEC section 1)."""

    num_classes: int
    levels: int
    pyramid: bool
    grid_levels: tuple[int, ...]  # the grids encoded, in order
    bit_offsets: tuple[int, ...]  # start bit of each grid's code
    nbits: int
    nbytes: int
    stride: int


def _layout(num_classes: int, levels: int, pyramid: bool) -> _Layout:
    from semcbir_fast.layout import sbs_layout

    lay = sbs_layout(num_classes, levels, pyramid=pyramid)  # validates, ValueError
    grids = tuple(range(lay.levels + 1)) if lay.pyramid else (lay.levels,)
    return _Layout(lay.num_classes, lay.levels, lay.pyramid, grids, tuple(lay.level_offsets),
                   lay.nbits, lay.nbytes, lay.stride)


def _as_tensor(x: Any, name: str) -> Any:
    import torch

    if isinstance(x, torch.Tensor):
        t = x
    elif isinstance(x, np.ndarray):
        if x.dtype == np.uint16:  # torch.from_numpy handles uint16 only in recent versions
            x = x.astype(np.int32)
        t = torch.from_numpy(np.ascontiguousarray(x))
    else:
        raise ValueError(  # noqa: TRY004 - ValueError for bad labels, as encode_sbs
            f"{name} must be a torch.Tensor or numpy.ndarray of integers, got {type(x).__name__}"
        )
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise ValueError(
            f"{name} must have an integer dtype (uint8, uint16, int16, int32, int64), got "
            f"{t.dtype}; convert class ids with .long()"
        )
    return t


def _block_index(h: int, w: int, g: int, device: Any) -> Any:
    """``(h, w)`` int64 map of the finest-grid block of each pixel (SPEC section 1)."""
    import torch

    def axis(size: int) -> Any:
        starts = (torch.arange(g, device=device, dtype=torch.int64) * size) // g
        pos = torch.arange(size, device=device, dtype=torch.int64)
        # last block whose start is <= pos; empty blocks share their start with the next one
        return torch.searchsorted(starts, pos, right=True) - 1

    return axis(h)[:, None] * g + axis(w)[None, :]


def _use_bincount(device: Any) -> bool:
    """bincount on the CPU (fastest there); a sync-free index_add_ elsewhere."""
    return device.type == "cpu"


def _counts(maps: Any, lay: _Layout, ignore_index: int | None) -> Any:
    """``(N, 4**levels, M)`` int64 class counts of a same-size batch ``(N, H, W)``."""
    import torch

    n, h, w = maps.shape
    m = lay.num_classes
    g = 2**lay.levels
    nb = g * g
    dev = maps.device
    if maps.dtype in (torch.uint8, torch.int16, torch.int32, torch.int64):
        lab = maps
    else:  # uint16/uint32/int8 ...: widen (exact) to a type every kernel handles
        lab = maps.to(torch.int64)
    # Compare only with constants inside the dtype's range: torch wraps out-of-range Python
    # ints (uint8 ``x != -1`` is ``x != 255``, ``x < 300`` is ``x < 44``).
    info = torch.iinfo(lab.dtype)
    valid = torch.ones_like(lab, dtype=torch.bool) if m - 1 >= info.max else lab < m
    if info.min < 0:
        valid &= lab >= 0
    if ignore_index is not None and 0 <= ignore_index < m and ignore_index <= info.max:
        valid &= lab != ignore_index
    nbins = n * nb * m
    key_dtype = torch.int32 if nbins < 2**31 - 1 else torch.int64
    blk = _block_index(h, w, g, dev).to(key_dtype)
    base = torch.arange(n, device=dev, dtype=key_dtype).view(n, 1, 1) * nb + blk
    key = base * m + lab.to(key_dtype)
    key = torch.where(valid, key, torch.full((), nbins, dtype=key_dtype, device=dev))
    key = key.reshape(-1)
    if _use_bincount(dev):
        cnt = torch.bincount(key, minlength=nbins + 1)
    else:  # CUDA bincount reads max(key) back to the host; a scatter into a known size does not
        cnt = torch.zeros(nbins + 1, dtype=torch.int64, device=dev)
        cnt.index_add_(0, key, torch.ones((), dtype=torch.int64, device=dev).expand(key.numel()))
    return cnt[:nbins].view(n, nb, m)


def _bits(cnt: Any) -> Any:
    """Presence + thermometer bits ``(N, 5 * nb * M)`` uint8 of counts ``(N, nb, M)``."""
    import torch

    n = cnt.shape[0]
    total = cnt.sum(dim=2, keepdim=True)
    present = cnt > 0
    level = torch.where(present, (4 * cnt + total - 1) // total.clamp(min=1), 0)
    therm = level.unsqueeze(-1) > torch.arange(4, device=cnt.device)
    return torch.cat([present.reshape(n, -1), therm.reshape(n, -1)], dim=1).to(torch.uint8)


#: count cells (int64) one pass may hold; bigger batches are encoded in slices of images
_MAX_CELLS = 1 << 26


def _encode_group(maps: Any, lay: _Layout, ignore_index: int | None) -> Any:
    """Codes ``(N, stride)`` uint8 (on the maps' device) of a same-size batch."""
    import torch

    per_image = (4**lay.levels) * lay.num_classes
    step = max(1, _MAX_CELLS // per_image)
    if maps.shape[0] > step:
        return torch.cat([_encode_slice(maps[s: s + step], lay, ignore_index)
                          for s in range(0, maps.shape[0], step)])
    return _encode_slice(maps, lay, ignore_index)


def _encode_slice(maps: Any, lay: _Layout, ignore_index: int | None) -> Any:
    import torch

    n = maps.shape[0]
    dev = maps.device
    cnt = _counts(maps, lay, ignore_index)  # finest grid
    g = 2**lay.levels
    per_level: dict[int, Any] = {lay.levels: cnt}
    if lay.pyramid:
        cur = cnt.view(n, g, g, lay.num_classes)
        for lev in range(lay.levels - 1, -1, -1):
            k = 2**lev
            cur = cur.view(n, k, 2, k, 2, lay.num_classes).sum(dim=(2, 4))
            per_level[lev] = cur.reshape(n, k * k, lay.num_classes)
    parts = [_bits(per_level[lev]) for lev in lay.grid_levels]
    pad = lay.stride * 8 - lay.nbits
    if pad:
        parts.append(torch.zeros((n, pad), dtype=torch.uint8, device=dev))
    bits = torch.cat(parts, dim=1).view(n, lay.stride, 8)
    shifts = torch.arange(7, -1, -1, dtype=torch.int32, device=dev)  # MSB first
    return (bits.to(torch.int32) << shifts).sum(dim=2, dtype=torch.int32).to(torch.uint8)


def encode_sbs_torch(
    labels: Any,
    *,
    num_classes: int,
    levels: int,
    ignore_index: int | None = None,
    pyramid: bool = False,
    return_tensor: bool = False,
) -> Any:
    """Encode label maps to Semantic Binary Signatures with PyTorch, on their device.

    Bit-identical to :func:`semcbir_fast.encode_sbs` and SPEC.md section 1.

    Parameters
    ----------
    labels : torch.Tensor, numpy.ndarray, or sequence of them
        One ``(H, W)`` map, a batch ``(N, H, W)``, or a list of ``(H, W)`` maps of any sizes,
        integer dtype (uint8, uint16, int16, int32, int64). Tensors are encoded on their own
        device (CUDA or CPU); all tensors of a list must share one device. NumPy arrays are
        encoded on the CPU. Values outside ``[0, num_classes)`` and ``ignore_index`` are void.
    num_classes : int
        ``M``, number of classes of the segmentation model (>= 1).
    levels : int
        ``n >= 0``: a ``2**n x 2**n`` grid of blocks.
    ignore_index : int, optional
        A class id to treat as void (for example 0 for MSRC's "void").
    pyramid : bool, default False
        Concatenate the codes of grids ``0..n`` (SPEC extension).
    return_tensor : bool, default False
        Return the codes as a uint8 tensor on the labels' device instead of a NumPy array
        (saves the one device-to-host copy when the codes stay on the GPU).

    Returns
    -------
    numpy.ndarray or torch.Tensor
        ``uint8``; shape ``(stride,)`` for one 2-D map, ``(N, stride)`` for a batch or a
        list (C-contiguous, zero padding after the canonical ``nbytes``).

    Raises
    ------
    ValueError
        Wrong dimensions, empty maps, non-integer dtype, tensors on different devices.
    TypeError
        ``labels`` is of no supported type, or a parameter is not an int.
    """
    import torch

    lay = _layout(num_classes, levels, pyramid)
    if ignore_index is not None:
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
            raise ValueError(f"ignore_index must be an int or None, got {ignore_index!r}")
        ignore_index = int(ignore_index)

    single = False
    if isinstance(labels, (torch.Tensor, np.ndarray)):
        t = _as_tensor(labels, "labels")
        if t.dim() == 2:
            single = True
        elif t.dim() != 3:
            raise ValueError(
                f"labels must be (H, W), (N, H, W) or a list of (H, W) maps, got shape "
                f"{tuple(t.shape)}"
            )
        groups: list[tuple[list[int], Any]] = []
        if single:
            groups.append(([0], t.unsqueeze(0)))
            count = 1
        else:
            count = t.shape[0]
            groups.append((list(range(count)), t))
    elif isinstance(labels, Sequence) and not isinstance(labels, (str, bytes)):
        maps = [_as_tensor(x, f"labels[{i}]") for i, x in enumerate(labels)]
        for i, x in enumerate(maps):
            if x.dim() != 2:
                raise ValueError(
                    f"labels[{i}] must be a 2-D (H, W) map, got shape {tuple(x.shape)}"
                )
        devs = {x.device for x in maps}
        if len(devs) > 1:
            raise ValueError(
                f"labels must all be on one device, got {sorted(str(d) for d in devs)}; "
                "move them with .to(device) first"
            )
        count = len(maps)
        by_shape: dict[tuple[int, int], list[int]] = {}
        for i, x in enumerate(maps):
            by_shape.setdefault((int(x.shape[0]), int(x.shape[1])), []).append(i)
        groups = []
        for idx in by_shape.values():
            if len(idx) == 1:
                batch = maps[idx[0]].unsqueeze(0)
            else:
                dtypes = {maps[i].dtype for i in idx}
                common = dtypes.pop() if len(dtypes) == 1 else torch.int64  # exact widening
                batch = torch.stack([maps[i].to(common) for i in idx])
            groups.append((idx, batch))
    else:
        raise ValueError(  # noqa: TRY004 - ValueError for bad labels, as encode_sbs
            "labels must be a 2-D map, a 3-D batch (N, H, W) or a list of 2-D maps (torch or "
            f"NumPy), got {type(labels).__name__}"
        )
    if not single and count == 0:
        raise ValueError("labels must not be empty: pass at least one (H, W) map")
    for _, batch in groups:
        if batch.shape[1] == 0 or batch.shape[2] == 0:
            raise ValueError(f"label maps must not be empty, got shape {tuple(batch.shape[1:])}")
        top = torch.iinfo(batch.dtype).max
        if lay.num_classes > top + 1:
            raise ValueError(
                f"num_classes={lay.num_classes} is too large for labels of dtype {batch.dtype} "
                f"(values <= {top}); use a wider dtype such as int32"
            )

    dev = groups[0][1].device
    if len(groups) == 1 and groups[0][0] == list(range(count)):
        out = _encode_group(groups[0][1], lay, ignore_index)
    else:
        # codes in group order, then one gather back to input order (the permutation goes
        # through pinned memory: no wait for the queued device work)
        order = [i for idx, _ in groups for i in idx]
        inverse = np.empty(count, dtype=np.int64)
        inverse[order] = np.arange(count)
        inv = torch.from_numpy(inverse)
        if dev.type == "cuda":
            inv = inv.pin_memory().to(dev, non_blocking=True)
        out = torch.cat([_encode_group(batch, lay, ignore_index) for _, batch in groups])
        out = out.index_select(0, inv)
    if single:
        out = out[0]
    if return_tensor:
        return out.contiguous()
    return np.ascontiguousarray(out.cpu().numpy())

