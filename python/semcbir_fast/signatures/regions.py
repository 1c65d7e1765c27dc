"""Paper 004's significant-region descriptors as a signature (``"regions"``).

Per image (paper 004 sections 2.1-2.4, with the regions taken from our segmentation, see
:mod:`semcbir_fast.deep.regions`):

1. the ``K`` largest connected single-class regions of the label map;
2. a backbone descriptor of each region (``"masked"``: the image's final feature map
   averaged under the region's mask; ``"crop"``: the bounding box through the backbone);
3. sum pooling over the regions, divided by the sum (eqs. 1-2): the *local* feature;
4. fusion with the *global* feature (GAP of the whole image) by "PCA and L2" (section
   2.4): both parts L2-normalised (so that they weigh alike), concatenated, projected on
   the ``pca_dim`` leading principal components learned on the indexed images (learned
   state; no labels are used) and L2-normalised; ranked by L2.

Optional re-ranking (section 2.5, ``rerank_top = N > 0``): the first ``N`` results are
re-ordered by the best cosine similarity between the query's global feature and the
candidate's region descriptors, ``1 - max_r cos(q, p_r)`` being their distance; the results
after them keep their first-pass order with distance ``2 +`` their first-pass distance (so
that every row stays ascending). The paper uses it for instance retrieval (Oxford, Paris)
and the fusion for category retrieval; it is off by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import Inputs, option
from .cnn import (
    POOLINGS,
    DenseSignature,
    _check_backbone,
    _check_flip,
    backbone_option,
    flip_option,
    global_descriptors,
    l2n,
)
from .registry import register_signature

__all__ = ["RegionsParams", "RegionsSignature", "region_descriptors"]


def _nonneg_int(v: Any, name: str) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
        raise ValueError(f"{name} must be an int >= 0, got {v!r}")


@dataclass(frozen=True)
class RegionsParams:
    """regions settings (paper 004): number and description of the regions, PCA fusion
    with the global feature, optional re-ranking."""

    backbone: str = backbone_option()
    flip: bool = flip_option()
    regions: int = option(5, type=int, metavar="K",
                          help="regions: the K largest connected class regions per image (5)")
    region_mode: str = option("masked", choices=["masked", "crop"], sweep=True,
                              help="regions: describe a region by the image's feature map "
                              "under its mask (masked, one backbone pass) or by its box "
                              "through the backbone (crop, one pass per region)")
    min_region: float = option(0.01, type=float, metavar="F",
                               help="regions: drop regions under this fraction of the image "
                               "(0.01)")
    global_pooling: str = option("gap", choices=list(POOLINGS),
                                 help="regions: pooling of the global feature (gap)")
    pca_dim: int = option(256, type=int, metavar="D",
                          help="regions: PCA dimensions of the fused global + local feature "
                          "(256, at most the number of indexed images - 1; 0 = no PCA, "
                          "concatenation + L2 only)")
    rerank_top: int = option(0, type=int, metavar="N",
                             help="regions: re-rank the first N results by region similarity "
                             "(paper 004 section 2.5; 0 = off, the default)")

    def __post_init__(self) -> None:
        _check_backbone(self.backbone)
        _check_flip(self.flip)
        _nonneg_int(self.regions, "regions")
        if self.regions < 1:
            raise ValueError(f"regions must be >= 1, got {self.regions}")
        if self.region_mode not in ("masked", "crop"):
            raise ValueError(f"region_mode must be 'masked' or 'crop', got {self.region_mode!r}")
        if not (isinstance(self.min_region, (int, float)) and 0 <= self.min_region < 1):
            raise ValueError(f"min_region must be in [0, 1), got {self.min_region!r}")
        if self.global_pooling not in POOLINGS:
            raise ValueError(f"global_pooling must be one of {POOLINGS}, got "
                             f"{self.global_pooling!r}")
        _nonneg_int(self.pca_dim, "pca_dim")
        _nonneg_int(self.rerank_top, "rerank_top")


def region_descriptors(paths: list[str], label_maps: list[np.ndarray], *, backbone: str,
                       k: int, mode: str, min_fraction: float, num_classes: int,
                       ignore_index: int | None, flip: bool = False
                       ) -> tuple[np.ndarray, np.ndarray]:
    """``(n, k, C)`` float32 region descriptors and ``(n, k)`` validity of image files with
    their label maps (cached like the global descriptors, keyed by the label maps too;
    ``flip``: of the maps averaged with the mirror's, a crop with its mirror's)."""
    from ..deep.extract import extract_cached, get_backbone, labels_digest
    from ..deep.regions import label_regions, masked_region_descriptors, region_crops

    extra = {"k": int(k), "min": float(min_fraction), "classes": int(num_classes),
             "ignore": ignore_index, "labels": labels_digest(label_maps)}
    found: list[Any] = []

    def regions_of(i: int) -> Any:
        """The regions of image ``i``, found on the first cache miss only."""
        if not found:
            found.extend(label_regions(m, k, num_classes=num_classes,
                                       ignore_index=ignore_index, min_fraction=min_fraction)
                         for m in label_maps)
        return found[i]
    if mode == "masked":
        bb = get_backbone(backbone)
        if bb.preprocess.resize != "stretch":
            raise ValueError("regions: region_mode 'masked' needs a backbone whose input is "
                             "the whole image stretched (resize='stretch')")
        pos = [0]

        def reducer(fb: Any) -> dict[str, Any]:
            import torch

            fm = fb.final.float().cpu().numpy()
            s = pos[0]
            pos[0] += fm.shape[0]
            d = np.zeros((fm.shape[0], k, fm.shape[1]), np.float32)
            v = np.zeros((fm.shape[0], k), bool)
            for j in range(fm.shape[0]):
                d[j], v[j] = masked_region_descriptors(fm[j], regions_of(s + j), k)
            return {"regions": torch.from_numpy(d), "valid": torch.from_numpy(v)}

        out = extract_cached(paths, "regions-masked", reducer, backbone=backbone,
                             extra_key=extra, flip=flip)
        return out["regions"].astype(np.float32), out["valid"].astype(bool)
    # crop: every region's box through the backbone on its own
    from ..imageio import read_image

    def compute(bb: Any) -> dict[str, np.ndarray]:
        crops = [c for i in range(len(paths))
                 for c in region_crops(read_image(paths[i]), regions_of(i))]
        counts = np.array([len(regions_of(i)) for i in range(len(paths))], dtype=np.int64)
        if not crops:
            return {"gap": np.zeros((0, 0), np.float32), "counts": counts}
        return {"gap": bb.extract(crops, reducer="gap", batch_size=16, progress=False,
                                  workers=0, flip=flip)["gap"], "counts": counts}

    out = extract_cached(paths, "regions-crop", None, backbone=backbone,
                         extra_key={**extra, "v": 2}, compute=compute, flip=flip)
    rows, counts = out["gap"], out["counts"].tolist()
    c = rows.shape[1] if rows.size else 0
    d = np.zeros((len(paths), k, c), np.float32)
    v = np.zeros((len(paths), k), bool)
    pos = 0
    for i, n in enumerate(counts):
        d[i, :n] = rows[pos:pos + n]
        v[i, :n] = True
        pos += n
    return d, v


@register_signature
class RegionsSignature(DenseSignature):
    """Paper 004: significant-region CNN features (K largest class regions of the label
    map, sum-pooled) fused with the global CNN feature by PCA + L2; optional re-ranking of
    the top N by region similarity."""

    name = "regions"
    title = "Regions"
    Params = RegionsParams
    requires = ("images", "labels")
    distance = "L2 distance"
    axis = "Regions"
    state_name = "pca"

    def __init__(self, params: Any = None, *, num_classes: int,
                 ignore_index: int | None = None, pca: Any = None, **overrides: Any) -> None:
        super().__init__(params, num_classes=num_classes, ignore_index=ignore_index,
                         **overrides)
        self.pca = pca

    @property
    def fitted(self) -> bool:
        return self.params.pca_dim == 0 or self.pca is not None

    # ------------------------------------------------------------------ features
    def parts(self, inputs: Inputs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(global (n, C) L2-normalised, regions (n, K, C), valid (n, K))``."""
        p = self.params
        paths = self.image_paths(inputs)
        maps = list(inputs.label_maps)
        if len(maps) != len(paths):
            raise ValueError(f"regions needs one label map per image: {len(paths)} images, "
                             f"{len(maps)} label maps")
        if not paths:
            return (np.zeros((0, 0), np.float32), np.zeros((0, p.regions, 0), np.float32),
                    np.zeros((0, p.regions), bool))
        g = l2n(global_descriptors(paths, self.backbone(), flip=p.flip)[p.global_pooling])
        r, v = region_descriptors(paths, maps, backbone=self.backbone(), k=p.regions,
                                  mode=p.region_mode, min_fraction=p.min_region,
                                  num_classes=self.num_classes, ignore_index=self.ignore_index,
                                  flip=p.flip)
        return g, r, v

    @staticmethod
    def combined(g: np.ndarray, r: np.ndarray, v: np.ndarray) -> np.ndarray:
        """``[L2(global), L2(sum-pooled regions)]`` before the PCA ``(n, 2C)``."""
        from ..deep.regions import sum_pool

        local = sum_pool(r, v)  # eqs. 1-2
        return np.concatenate([g, l2n(local)], axis=1)

    def fit(self, inputs: Inputs, *, threads: int = 0,
            cache: dict[Any, Any] | None = None) -> RegionsSignature:
        """Learn the PCA of the fused feature on ``inputs`` (the indexed images by default)."""
        if self.params.pca_dim == 0:
            return self
        from ..deep import fit_pca

        x = self.combined(*self.parts(inputs))
        if x.shape[0] < 2:
            raise ValueError(f"regions needs at least 2 images to fit its PCA, got {x.shape[0]}")
        self.pca = fit_pca(x, dim=min(self.params.pca_dim, x.shape[1], x.shape[0] - 1))
        return self

    def encode(self, inputs: Inputs, *, threads: int = 0) -> Any:
        from ..index import DenseBatch

        self.require_fitted()
        g, r, v = self.parts(inputs)
        x = self.combined(g, r, v)
        vec = self.pca.transform(x) if self.pca is not None and x.shape[0] else l2n(x)
        extras: dict[str, Any] = {}
        if self.params.rerank_top:
            rn = r / np.maximum(np.linalg.norm(r, axis=2, keepdims=True), 1e-12)
            extras = {"global": g, "regions": rn.astype(np.float32), "valid": v}
        return DenseBatch(vec, extras)

    # ------------------------------------------------------------------ ranking
    def search_index(self, index: Any, queries: Any, k: int, *, threads: int = 0
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n_top = min(self.params.rerank_top, len(index))
        if not n_top:
            return super().search_index(index, queries, k, threads=threads)
        from ..search import topk_from_distances

        kk = max(k, n_top)
        d, ids = index.vector_topk(queries.vectors, kk, threads=threads, metric=self.metric)
        db = index.batch
        head = ids[:, :n_top]
        qg = queries.extras["global"]
        regs, valid = np.asarray(db.extras["regions"]), np.asarray(db.extras["valid"])
        best = np.empty(head.shape, dtype=np.float64)
        # the candidates' region vectors of a block of queries: (block, N, K, C) floats
        step = max(1, (1 << 24) // max(1, n_top * regs.shape[1] * regs.shape[2]))
        for s in range(0, head.shape[0], step):
            h = head[s:s + step]
            cos = np.einsum("qc,qnkc->qnk", qg[s:s + step], regs[h])
            best[s:s + step] = np.where(valid[h], cos, -np.inf).max(axis=2)
        best = np.where(np.isfinite(best), best, -1.0)  # no region: least similar
        hd = (1.0 - best).astype(np.float32)
        # the head re-ordered by (1 - cos, id): sort its columns by id first, then a stable
        # top-k keeps equal values in id order
        by_id = np.argsort(head, axis=1, kind="stable")
        vals, cols = topk_from_distances(np.take_along_axis(hd, by_id, 1), n_top)
        new_head = np.take_along_axis(np.take_along_axis(head, by_id, 1), cols, 1)
        out_d = np.concatenate([vals, 2.0 + d[:, n_top:]], axis=1)[:, :k]
        out_i = np.concatenate([new_head, ids[:, n_top:]], axis=1)[:, :k]
        return (out_d.astype(np.float32), out_i.astype(np.int64),
                np.zeros(out_d.shape, dtype=bool))

    # ------------------------------------------------------------------ description
    def label(self) -> str:
        p = self.params
        s = f"K={p.regions} {p.region_mode}"
        return s + (f" rerank {p.rerank_top}" if p.rerank_top else "")

    def describe(self) -> str:
        p = self.params
        pca = (f"PCA {self.pca.dim}-d" if self.pca is not None
               else "no PCA" if p.pca_dim == 0 else "PCA (not fitted)")
        rr = f", re-rank top {p.rerank_top} by region similarity" if p.rerank_top else ""
        bb = f"{p.backbone}, flipped" if p.flip else p.backbone
        return (f"regions (paper 004), {bb}, K={p.regions} largest class regions "
                f"(>= {p.min_region:g} of the image), {p.region_mode}, sum-pooled + global "
                f"{p.global_pooling.upper()}, {pca} + L2{rr}, L2 distance")

    @classmethod
    def published(cls, dataset: str) -> dict[str, Any]:
        from ..eval.paper import PAPER004_TABLE1_P10

        rows = PAPER004_TABLE1_P10.get(dataset)
        if not rows:
            return {}
        return {"source": "paper 004 Table 1 (P@10 of 5 % random queries)",
                "rows": {f"paper 004, {k}": v for k, v in rows.items()}}

    # ------------------------------------------------------------------ header
    def to_header(self) -> dict[str, Any]:
        h = super().to_header()
        if self.pca is not None:
            h["pca"] = self.pca.to_state()[0]
        return h

    def state_sections(self) -> list[tuple[str, np.ndarray]]:
        if self.pca is None:
            return []
        return [(f"pca.{k}", v) for k, v in self.pca.to_state()[1]]

    @classmethod
    def from_header(cls, header: dict[str, Any],
                    arrays: dict[str, np.ndarray] | None = None) -> RegionsSignature:
        sig = super().from_header(header, arrays)
        if header.get("pca") is not None:
            from ..deep import PCAWhitening

            a = {k.split(".", 1)[1]: v for k, v in (arrays or {}).items()
                 if k.startswith("pca.")}
            sig.pca = PCAWhitening.from_state(header["pca"], a)
        return sig
