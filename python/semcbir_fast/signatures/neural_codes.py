"""Paper 003's neural codes with significant convolutional activations as a signature
(``"neural-codes"``): ``h(x)``, ``eta~(x)`` or ``eta(x) = [h, eta~]``
(:mod:`semcbir_fast.deep.neural_codes`, eqs. 7-16), compared by L1 (the paper's distance)
or L2, on the raw activations as the paper does (no normalisation).

The paper divides the L1 distance by the number of dimensions "to make the measure
independent on the descriptor dimensionality"; that changes no ranking, so the index
returns the plain L1 sum (divide by :attr:`NeuralCodesSignature.dim` for the paper's value;
``docs/results_deep.md`` reports it that way).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import Inputs, option
from .cnn import (
    DenseSignature,
    _check_backbone,
    _check_flip,
    backbone_option,
    flip_option,
    global_descriptors,
)
from .registry import register_signature

__all__ = ["PARTS", "NeuralCodesParams", "NeuralCodesSignature"]

#: The three descriptors of paper 003.
PARTS = ("h", "eta_tilde", "eta")


@dataclass(frozen=True)
class NeuralCodesParams:
    """neural-codes settings: which descriptor, its threshold ``q`` and the distance."""

    backbone: str = backbone_option()
    flip: bool = flip_option()
    part: str = option("eta", choices=list(PARTS), sweep=True,
                       eval_default=list(PARTS),
                       help="neural-codes: h (pooled head, eq. 7), eta_tilde (significant "
                       "block activations, eq. 15) or eta (both, eq. 16; default); eval: all "
                       "three")
    q: float = option(0.5, flag="--nc-threshold", type=float, metavar="Q",
                      help="neural-codes: significance threshold of eq. 8 (0.5, the paper's)")
    distance: str = option("l1", flag="--nc-distance", choices=["l1", "l2"],
                           help="neural-codes: L1 (the paper's, default) or L2")

    def __post_init__(self) -> None:
        _check_backbone(self.backbone)
        _check_flip(self.flip)
        if self.part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, got {self.part!r}")
        if not (isinstance(self.q, (int, float)) and not isinstance(self.q, bool)
                and np.isfinite(self.q)):
            raise ValueError(f"q must be a finite number, got {self.q!r}")
        if self.distance not in ("l1", "l2"):
            raise ValueError(f"distance must be 'l1' or 'l2', got {self.distance!r}")


@register_signature
class NeuralCodesSignature(DenseSignature):
    """Paper 003's neural codes h / eta~ / eta of an EfficientNet-Lite backbone (raw
    activations), ranked by L1 (or L2) in a DenseIndex."""

    name = "neural-codes"
    title = "Neural codes"
    Params = NeuralCodesParams
    distance = "L1 distance"
    axis = "Descriptor"

    def __init__(self, params: Any = None, *, num_classes: int = 1,
                 ignore_index: int | None = None, **overrides: Any) -> None:
        super().__init__(params, num_classes=num_classes, ignore_index=ignore_index,
                         **overrides)

    @property
    def metric(self) -> str:
        return str(self.params.distance)

    def encode(self, inputs: Inputs, *, threads: int = 0) -> Any:
        from ..index import DenseBatch

        paths = self.image_paths(inputs)
        if not paths:
            return DenseBatch(np.zeros((0, 0), np.float32))
        out = global_descriptors(paths, self.backbone(), float(self.params.q),
                                 flip=self.params.flip)
        return DenseBatch(np.asarray(out[self.params.part], dtype=np.float32))

    def label(self) -> str:
        return {"h": "h(x)", "eta_tilde": "eta~(x)", "eta": "eta(x)"}[self.params.part]

    def describe(self) -> str:
        p = self.params
        f = ", maps averaged with the mirror's" if p.flip else ""
        return (f"neural-codes, {p.backbone}, {self.label()} (paper 003, q={p.q:g}{f}), raw "
                f"activations, {p.distance.upper()} distance")

    @classmethod
    def published(cls, dataset: str) -> dict[str, Any]:
        return {}
