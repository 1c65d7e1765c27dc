"""Semantic Binary Signatures (paper 000 section 3.1, SPEC.md sections 1-2) as a signature."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..layout import SBSLayout, sbs_layout
from .base import Inputs, Signature, option
from .registry import register_signature

__all__ = ["SBSParams", "SBSSignature"]

#: Most levels accepted (4**12 blocks).
MAX_LEVELS = 12


def _level(text: str) -> int:
    import argparse

    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a level 0..{MAX_LEVELS} (4**level blocks), "
                                         f"got {text!r}") from None
    if not 0 <= v <= MAX_LEVELS:
        raise argparse.ArgumentTypeError(f"expected a level 0..{MAX_LEVELS} (4**level blocks), "
                                         f"got {v}")
    return v


@dataclass(frozen=True)
class SBSParams:
    """SBS settings: ``4**levels`` blocks (a ``2**levels`` square grid), optionally the
    pyramid of levels ``0..levels`` concatenated (SPEC extension)."""

    levels: int = option(2, help="SBS grid 2^n x 2^n blocks (default 2; eval: 0 1 2 3 = 1, "
                         "4, 16, 64 blocks; with --append, the index's)",
                         sweep=True, eval_default=[0, 1, 2, 3], type=_level)
    pyramid: bool = option(False, help="concatenate the codes of levels 0..n",
                           action="store_true")

    def __post_init__(self) -> None:
        if isinstance(self.levels, bool) or not isinstance(self.levels, (int, np.integer)) \
                or not 0 <= int(self.levels) <= MAX_LEVELS:
            raise ValueError(f"levels must be an int in [0, {MAX_LEVELS}], got {self.levels!r}")


@register_signature
class SBSSignature(Signature):
    """Binary codes: per block, a presence bit and four proportion bits per class; ranked by
    Hamming distance (C++ SIMD top-k), held in an :class:`~semcbir_fast.index.SBSIndex`."""

    name = "sbs"
    title = "SBS"
    Params = SBSParams
    requires = ("labels",)
    distance = "Hamming distance"
    integer_distances = True
    axis = "Number of blocks"
    report_plot = "map_vs_blocks"

    @property
    def layout(self) -> SBSLayout:
        """Bit layout of the codes."""
        return sbs_layout(self.num_classes, int(self.params.levels), pyramid=self.params.pyramid)

    def encode(self, inputs: Inputs, *, threads: int = 0) -> np.ndarray:
        """uint8 codes ``(n, stride)`` of the label maps."""
        from ..sbs import encode_sbs

        codes = encode_sbs(list(inputs.label_maps), num_classes=self.num_classes,
                           levels=int(self.params.levels), ignore_index=self.ignore_index,
                           pyramid=self.params.pyramid, threads=threads)
        return codes.reshape(len(inputs.label_maps), self.layout.stride)

    def new_index(self, *, metadata: dict[str, Any] | None = None) -> Any:
        from ..index import SBSIndex

        md = dict(metadata or {})
        md.update(levels=int(self.params.levels), pyramid=bool(self.params.pyramid),
                  ignore_index=self.ignore_index)
        return SBSIndex(self.layout, metadata=md)

    def label(self) -> str:
        b = self.layout.blocks
        return f"{b} block{'s' if b != 1 else ''}"

    def column(self) -> str:
        return f"4^{int(self.params.levels)}={self.layout.blocks}"

    def describe(self) -> str:
        lay = self.layout
        return (f"sbs, {lay.num_classes} classes, {lay.blocks} blocks, {lay.nbits} bits / "
                f"{lay.stride} bytes per code")

    def result_info(self, encoded: Any) -> dict[str, Any]:
        lay = self.layout
        return {"blocks": lay.blocks, "nbits": lay.nbits, "nbytes": lay.nbytes}

    @classmethod
    def published(cls, dataset: str) -> dict[str, Any]:
        from ..eval.paper import TABLE3_SBS_MAP

        rows = TABLE3_SBS_MAP.get(dataset)
        if not rows:
            return {}
        return {"source": "paper 000 Table 3 (HRNet-W48)",
                "rows": {f"paper 000 Table 3, {k}": v for k, v in rows.items()}}

    def published_value(self, values: Any) -> float | None:
        lv = int(self.params.levels)
        if isinstance(values, list) and lv < len(values) and not self.params.pyramid:
            return values[lv]
        return None

    @classmethod
    def from_index(cls, layout: SBSLayout, metadata: dict[str, Any]) -> SBSSignature:
        """The signature of an SBS index (its layout and recorded void label)."""
        return cls(SBSParams(layout.levels, layout.pyramid), num_classes=layout.num_classes,
                   ignore_index=metadata.get("ignore_index"))
