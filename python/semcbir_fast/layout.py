"""Bit layout of Semantic Binary Signature codes (SPEC.md section 1)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ._convert import check_int

__all__ = ["MAX_LEVELS", "MAX_CLASSES", "SBSLayout", "sbs_layout"]

MAX_LEVELS = 12
MAX_CLASSES = 65536


@dataclass(frozen=True)
class SBSLayout:
    """Where each bit of an SBS code lives.

    Attributes
    ----------
    num_classes : int
        ``M``, classes of the segmentation model.
    levels : int
        ``n``: the finest grid has ``2**n x 2**n`` blocks.
    pyramid : bool
        Whether the bit strings of levels ``0..n`` are concatenated (bitwise, in that order).
    blocks : int
        Blocks over all encoded levels (``4**n``, or ``sum(4**l)`` with ``pyramid``).
    nbits : int
        Meaningful bits, ``5 * M * blocks``.
    nbytes : int
        ``ceil(nbits / 8)``: the canonical bytes of a code.
    stride : int
        Bytes per code row (``nbytes`` rounded up to a multiple of 8; the rest is zero).
    level_offsets : tuple[int, ...]
        Bit offset of each encoded level's string (``(0,)`` without ``pyramid``).
    level_blocks : tuple[int, ...]
        Blocks of each encoded level.
    """

    num_classes: int
    levels: int
    pyramid: bool
    blocks: int
    nbits: int
    nbytes: int
    stride: int
    level_offsets: tuple[int, ...]
    level_blocks: tuple[int, ...]

    @property
    def presence_offset(self) -> int:
        """Bit offset of the presence part (first level's string when ``pyramid``)."""
        return self.level_offsets[0]

    @property
    def proportion_offset(self) -> int:
        """Bit offset of the proportion part (first level's string when ``pyramid``)."""
        return self.level_offsets[0] + self.num_classes * self.level_blocks[0]

    def to_dict(self) -> dict[str, object]:
        """Plain description, e.g. to store next to codes (bit order: MSB first)."""
        return {
            "num_classes": self.num_classes,
            "levels": self.levels,
            "pyramid": self.pyramid,
            "nbits": self.nbits,
            "nbytes": self.nbytes,
            "stride": self.stride,
            "bitorder": "big",
        }


def sbs_layout(num_classes: int, levels: int, pyramid: bool = False) -> SBSLayout:
    """Layout of the SBS code for ``num_classes`` classes and ``4**levels`` blocks.

    Raises
    ------
    ValueError
        ``num_classes`` outside ``[1, 65536]`` or ``levels`` outside ``[0, 12]``.
    """
    m = check_int(num_classes, "num_classes", 1, MAX_CLASSES)
    return _layout(m, check_int(levels, "levels", 0, MAX_LEVELS), bool(pyramid))


@functools.lru_cache(maxsize=256)
def _layout(m: int, n: int, pyramid: bool) -> SBSLayout:
    encoded = range(0, n + 1) if pyramid else range(n, n + 1)
    level_blocks = tuple(4**lv for lv in encoded)
    offsets, pos = [], 0
    for nb in level_blocks:
        offsets.append(pos)
        pos += 5 * m * nb
    nbits = pos
    nbytes = (nbits + 7) // 8
    stride = (nbytes + 7) // 8 * 8
    return SBSLayout(m, n, bool(pyramid), sum(level_blocks), nbits, nbytes, stride,
                     tuple(offsets), level_blocks)
