"""Paper 001's hybrid signature (SPEC.md section 4) as a signature."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..hybrid import HybridSignatures, hybrid_signatures
from ._local import (
    LocalSignature,
    check_epsilon_field,
    check_method,
    epsilon_option,
    method_option,
)
from .base import Inputs
from .registry import register_signature

__all__ = ["HybridParams", "HybridSignature"]


@dataclass(frozen=True)
class HybridParams:
    """Hybrid settings: the descriptor method and paper 001's filter (0.9 by default)."""

    method: str = method_option()
    epsilon: float | str | None = epsilon_option(
        "on for hybrid and for sbovp with --histogram-weight 0, off for sbovp with the "
        "histogram, where it only lowers MAP")

    def __post_init__(self) -> None:
        check_method(self.method)
        check_epsilon_field(self.epsilon)


HybridParams.DEFAULT = HybridParams()  # type: ignore[attr-defined]


@register_signature
class HybridSignature(LocalSignature):
    """Per-class mean descriptors (an ``M x D`` matrix per image) + semantic histogram; L2
    between the matrices behind paper 001's histogram filter."""

    name = "hybrid"
    title = "Hybrid signature"
    Params = HybridParams

    def encode(self, inputs: Inputs, *, threads: int = 0) -> HybridSignatures:
        feats = self.check_features(inputs)
        return hybrid_signatures(feats, list(inputs.label_maps), self.num_classes,
                                 ignore_index=self.ignore_index)

    def batch_arrays(self, batch: Any, histograms: Any, name: str, columns: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        if not isinstance(batch, HybridSignatures):
            raise ValueError(  # noqa: TRY004
                f"{name} must be HybridSignatures for a hybrid index, got "
                f"{type(batch).__name__}")
        if batch.num_classes != self.num_classes:
            raise ValueError(f"{name} have {batch.num_classes} classes, the index "
                             f"{self.num_classes}")
        if batch.method is not None and batch.method != self.feature_method:
            raise ValueError(f"{name} use {batch.method} descriptors, the index "
                             f"{self.feature_method}")
        cols = batch.matrices.shape[1] * batch.matrices.shape[2]
        if columns >= 0 and cols != columns:
            raise ValueError(
                f"{name} have descriptors of width {batch.matrices.shape[2]}, the "
                f"index {columns // self.num_classes}")
        ip, ix, dt = batch._csr()
        return ip, ix, dt, batch.histograms, cols

    def batch_from_rows(self, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray,
                        histograms: np.ndarray, columns: int) -> HybridSignatures:
        n = indptr.size - 1
        dim = max(columns, 0) // self.num_classes
        mats = np.zeros((n, self.num_classes * dim), dtype=np.float32)
        mats[np.repeat(np.arange(n), np.diff(indptr)), indices] = data
        return HybridSignatures(mats.reshape(n, self.num_classes, dim), histograms,
                                self.feature_method)

    def label(self) -> str:
        eps = self.filter_epsilon
        return f"{self.feature_method} filter {'off' if eps is None else f'eps {eps:g}'}"

    def describe(self, columns: int = -1) -> str:
        # the descriptor length is known once a batch was encoded (columns >= 0)
        dim = f" x {columns // self.num_classes} values" if columns >= 0 else ""
        return (f"hybrid, {self.feature_method}, {self.num_classes} classes{dim}, "
                f"{self._filter_text()}")

    def params_dict(self) -> dict[str, Any]:
        return {"method": self.feature_method, "epsilon": self.filter_epsilon}

    @classmethod
    def published(cls, dataset: str) -> dict[str, Any]:
        from ..eval.paper import HYBRID_MAP

        rows = HYBRID_MAP.get(dataset)
        return {"source": "paper 001 Tables 3-4 (HRNet-W48)", "rows": dict(rows)} if rows else {}

    @classmethod
    def from_header(cls, header: dict[str, Any],
                    arrays: dict[str, np.ndarray] | None = None) -> HybridSignature:
        p = header["params"]
        return cls(HybridParams(method=p["method"], epsilon=p["epsilon"]),
                   num_classes=p["num_classes"], ignore_index=p.get("ignore_index"))
