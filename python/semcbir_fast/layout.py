"""Bit layout of Semantic Binary Signature codes (SPEC.md section 1)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ._convert import check_int

__all__ = ["MAX_CLASSES", "MAX_CODE_BYTES", "MAX_LEVELS", "SBSLayout", "check_code_size",
           "sbs_layout"]

MAX_LEVELS = 12
MAX_CLASSES = 65536
#: Largest code (``nbytes``) that :func:`~semcbir_fast.encode_sbs` makes, 4 MiB: it bounds
#: ``levels`` by the number of classes (151 classes: levels <= 7; 1 class: levels <= 11),
#: and with it the encoder's scratch memory (13 to 26 bytes per code byte and thread: at most
#: 107 MiB).
MAX_CODE_BYTES = 2**22


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

    Any size is described; :func:`~semcbir_fast.encode_sbs` encodes codes of at most
    :data:`MAX_CODE_BYTES` (see :func:`check_code_size`).

    Raises
    ------
    ValueError
        ``num_classes`` outside ``[1, 65536]`` or ``levels`` outside ``[0, 12]``.
    """
    m = check_int(num_classes, "num_classes", 1, MAX_CLASSES)
    return _layout(m, check_int(levels, "levels", 0, MAX_LEVELS), bool(pyramid))


def check_code_size(layout: SBSLayout) -> None:
    """ValueError (the message of the C++ encoder) when ``layout``'s codes are larger than
    :data:`MAX_CODE_BYTES`: ``5 * num_classes * 4**levels`` bits (summed over the levels
    with ``pyramid``) must fit in 4 MiB."""
    if layout.nbytes > MAX_CODE_BYTES:
        raise ValueError(
            f"levels={layout.levels} with num_classes={layout.num_classes}"
            f"{' (pyramid)' if layout.pyramid else ''} makes codes of {layout.nbytes} bytes, "
            f"more than the maximum of {MAX_CODE_BYTES} bytes (4 MiB); use fewer levels"
        )


@functools.lru_cache(maxsize=256)
def _layout(m: int, n: int, pyramid: bool) -> SBSLayout:
    encoded = range(n + 1) if pyramid else range(n, n + 1)
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
