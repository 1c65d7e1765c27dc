"""Semantic Binary Signature: encode label maps into packed codes, decode them for inspection."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _backend
from ._convert import as_codes, as_label_maps, check_alloc, check_int, check_threads
from .layout import SBSLayout, check_code_size, sbs_layout

__all__ = ["decode_sbs", "encode_sbs"]


def encode_sbs(
    labels: Any,
    *,
    num_classes: int,
    levels: int,
    ignore_index: int | None = None,
    pyramid: bool = False,
    threads: int = 0,
) -> np.ndarray:
    """Encode semantic label maps into Semantic Binary Signatures (SPEC.md section 1).

    Parameters
    ----------
    labels
        One ``(H, W)`` map, a batch ``(N, H, W)``, or a list of ``(H, W)`` maps of different
        sizes; integer dtype (uint8, int8, uint16, int16, uint32, int32, uint64, int64);
        NumPy arrays or torch tensors (CPU or CUDA: copied to the host once).
        Values in ``[0, num_classes)`` are classes; negative values, values
        ``>= num_classes`` and ``ignore_index`` are void pixels (counted nowhere).
    num_classes
        ``M``, number of classes of the segmentation model (1..65536, and representable in
        the labels' dtype).
    levels
        ``n``: the map is split into ``2**n x 2**n`` blocks (0..12, and codes of at most
        :data:`~semcbir_fast.layout.MAX_CODE_BYTES` = 4 MiB: ``5 * num_classes * 4**n`` bits,
        e.g. levels <= 7 for 151 classes). A grid finer than the map is allowed: blocks with
        no pixel encode to zeros.
    ignore_index
        An extra label value treated as void (e.g. 255, or 0 for data sets whose class 0
        is "void").
    pyramid
        Concatenate the codes of levels ``0..n`` (an extension, off by default).
    threads
        Threads for a batch (0 = all cores), at most one per map and
        :data:`~semcbir_fast._convert.MAX_THREADS` (1024); fewer when their scratch memory
        (13 to 26 bytes per code byte each) would pass 1 GiB, or when the system cannot start
        more. Results never depend on it.

    Returns
    -------
    numpy.ndarray
        uint8, ``(stride,)`` for one map, ``(N, stride)`` for several; see
        :func:`sbs_layout` for the bit layout. Bytes past ``nbytes`` are zero.

    Raises
    ------
    ValueError
        Bad labels or arguments (each names the argument, what it expected and what came).
    MemoryError
        When the codes (``N * stride`` bytes) would not fit in this machine's memory.
    """
    layout = sbs_layout(num_classes, levels, pyramid)  # validates num_classes and levels
    check_code_size(layout)
    m = layout.num_classes
    if ignore_index is not None:
        ignore_index = check_int(ignore_index, "ignore_index", -(2**63), 2**63 - 1,
                                 hint=" (or None)")
    t = check_threads(threads)
    maps, single = as_label_maps(labels, m)
    check_alloc(len(maps) * layout.stride,
                f"encode_sbs: {len(maps)} codes of {layout.stride} bytes (levels={layout.levels})")
    codes = _backend.core().encode_sbs(maps, m, layout.levels, ignore_index, layout.pyramid,
                                       layout.stride, t)
    return codes[0] if single else codes


def decode_sbs(codes: Any, layout: SBSLayout) -> tuple[np.ndarray, np.ndarray]:
    """Unpack codes into presence bits and proportion levels.

    Parameters
    ----------
    codes
        uint8 codes, ``(stride,)`` or ``(N, stride)`` (at least ``layout.nbytes`` wide).
    layout
        The :class:`SBSLayout` the codes were made with.

    Returns
    -------
    presence, level
        uint8 arrays ``(N, blocks, M)`` (``(blocks, M)`` for one code): presence in {0, 1},
        level in 0..4 (the ``l`` of SPEC.md section 1). With ``pyramid`` the blocks of levels
        ``0..n`` follow each other.
    """
    if not isinstance(layout, SBSLayout):
        raise ValueError(  # noqa: TRY004 - bad input is a ValueError here, as everywhere
            f"layout must be an SBSLayout (see sbs_layout), got {type(layout).__name__}")
    single = np.ndim(codes) == 1
    arr = as_codes(codes, "codes")
    if arr.shape[1] < layout.nbytes:
        raise ValueError(
            f"codes are {arr.shape[1]} bytes wide, but the layout needs nbytes={layout.nbytes} "
            f"(num_classes={layout.num_classes}, levels={layout.levels}, pyramid={layout.pyramid})"
        )
    bits = np.unpackbits(arr[:, : layout.nbytes], axis=1, count=layout.nbits)
    m = layout.num_classes
    presence_parts, level_parts = [], []
    for off, nb in zip(layout.level_offsets, layout.level_blocks):
        pres = bits[:, off : off + m * nb].reshape(-1, nb, m)
        therm = bits[:, off + m * nb : off + 5 * m * nb].reshape(-1, nb, m, 4)
        presence_parts.append(pres)
        level_parts.append(therm.sum(axis=3, dtype=np.uint8))
    presence = np.concatenate(presence_parts, axis=1)
    level = np.concatenate(level_parts, axis=1)
    return (presence[0], level[0]) if single else (presence, level)
