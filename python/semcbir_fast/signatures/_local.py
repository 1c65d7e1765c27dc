"""What the local-feature signatures (SBoVP, hybrid) share: local features of one method,
sparse float rows ranked by exact L2 (:mod:`semcbir_fast.sparse_l2`), the semantic
histograms of paper 001 beside them for its filter, and a
:class:`~semcbir_fast.index.SparseSignatureIndex` to hold them."""

from __future__ import annotations

import argparse
import math
from typing import Any, ClassVar

import numpy as np

from ..features import DESCRIPTOR_METHODS
from ..semantic_histogram import DEFAULT_EPSILON, check_epsilon, semantic_histograms
from .base import Inputs, Signature, option

__all__ = ["LocalSignature", "epsilon_option", "method_option"]


def method_option() -> Any:
    """The ``--method`` field (shared by every local-feature signature)."""
    return option("kaze", help="keypoint detector / descriptor (kaze, paper 000's best)",
                  choices=list(DESCRIPTOR_METHODS))


def _epsilon_from_args(args: argparse.Namespace) -> float | str | None:
    """--filter / --no-filter / --epsilon -> a threshold, None (off) or "auto"."""
    if getattr(args, "filter", None) is False:
        return None
    eps = getattr(args, "epsilon", None)
    if eps is not None:
        return eps
    return DEFAULT_EPSILON if getattr(args, "filter", None) else "auto"


def epsilon_option(auto_help: str) -> Any:
    """The histogram-filter field ``epsilon`` (a number, None = off, ``"auto"``), set on the
    command line by ``--filter / --no-filter`` and ``--epsilon``."""
    return option("auto", from_args=_epsilon_from_args, flags=[
        ("--filter", {"action": argparse.BooleanOptionalAction, "default": None,
                      "help": f"semantic-histogram filter of paper 001 in front of the ranking "
                              f"(default: {auto_help})"}),
        ("--epsilon", {"type": float, "default": None,
                       "help": "filter threshold on the L1 histogram distance (0.9, paper "
                               "001); giving it turns the filter on"}),
    ])


def check_epsilon_field(epsilon: Any) -> None:
    """Validate a Params ``epsilon`` field (a number >= 0, None or "auto")."""
    if isinstance(epsilon, str):
        if epsilon != "auto":
            raise ValueError(f"epsilon must be a number, None or 'auto', got {epsilon!r}")
        return
    check_epsilon(epsilon)


def check_method(method: Any) -> None:
    if method not in DESCRIPTOR_METHODS:
        raise ValueError(f"method must be one of {DESCRIPTOR_METHODS}, got {method!r}")


class LocalSignature(Signature):
    """Base of the signatures built from local features and label maps, stored as CSR rows
    (``indptr``, ``indices``, ``data``) with the images' semantic histograms and ranked by
    exact L2 with paper 001's histogram filter in front (when :attr:`filter_epsilon` is
    set): results ordered by ``(penalised, distance, id)``."""

    requires = ("labels", "features")
    distance = "L2 distance (+ semantic-histogram filter)"
    #: Header key of the descriptor width (hybrid) written beside the params.
    _auto_epsilon: ClassVar[float | None] = DEFAULT_EPSILON

    @property
    def feature_method(self) -> str:
        return str(self.params.method)

    def check_available(self) -> None:
        from ..features import make_detector

        make_detector(self.feature_method)

    @property
    def filter_epsilon(self) -> float | None:
        """The filter threshold in force ("auto" resolved), or None."""
        eps = self.params.epsilon
        return self.auto_epsilon() if isinstance(eps, str) else check_epsilon(eps)

    def auto_epsilon(self) -> float | None:
        """What ``epsilon="auto"`` means for this setting (paper 001's 0.9 by default)."""
        return DEFAULT_EPSILON

    def histograms(self, label_maps: Any) -> np.ndarray:
        """Semantic histograms of label maps with this signature's classes and void label."""
        return semantic_histograms(label_maps, self.num_classes, ignore_index=self.ignore_index)

    def check_features(self, inputs: Inputs) -> list[Any]:
        feats = list(inputs.features or [])
        if len(feats) != len(inputs.label_maps):
            raise ValueError(f"{self.name} needs one Features per label map: "
                             f"{len(inputs.label_maps)} label maps, {len(feats)} feature sets")
        for i, f in enumerate(feats):
            if getattr(f, "method", None) != self.feature_method:
                raise ValueError(f"features[{i}] are {getattr(f, 'method', None)} features, "
                                 f"this signature uses {self.feature_method} ones; extract "
                                 f"{self.feature_method} features")
        return feats

    # -- what the sparse index asks
    def columns(self) -> int:
        """Columns of the rows, or -1 when fixed by the first batch."""
        return -1

    def batch_arrays(self, batch: Any, histograms: Any, name: str, columns: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        """``(indptr, indices, data, histograms, columns)`` of an encoded batch, checked
        against this signature (and the index's ``columns``, -1 = not fixed yet)."""
        raise NotImplementedError

    def batch_from_rows(self, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray,
                        histograms: np.ndarray, columns: int) -> Any:
        """The encoded batch of stored rows (inverse of :meth:`batch_arrays`)."""
        raise NotImplementedError

    def new_index(self, *, metadata: dict[str, Any] | None = None) -> Any:
        from ..index import SparseSignatureIndex

        return SparseSignatureIndex(self, metadata=metadata)

    def _filter_text(self) -> str:
        eps = self.filter_epsilon
        return "filter off" if eps is None else f"filter epsilon {eps:g}"

    def to_header(self) -> dict[str, Any]:
        """The local-index header layout (``params`` with the resolved epsilon)."""
        p = {"signature": self.name, "num_classes": self.num_classes,
             "method": self.feature_method, "epsilon": self.filter_epsilon,
             "ignore_index": self.ignore_index}
        return {"signature": self.name, "params": p}

    @staticmethod
    def _finite_weight(w: Any, name: str) -> float:
        v = float(w)
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {w}")
        return v
