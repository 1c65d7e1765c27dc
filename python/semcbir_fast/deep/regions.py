"""Significant regions of an image from its semantic segmentation, and their CNN
descriptors (paper 004: Xu et al., "Image retrieval research based on significant
regions", ChinaCom 2018, sections 2.1-2.3).

Paper 004 finds its regions with a dense-captioning network (CNN + RPN + LSTM trained on
Visual Genome) and keeps the ``K`` of highest confidence. Here the regions come from the
label map the library already has: every **connected region of one class** (8-connected,
void pixels excluded) is a candidate, and the ``K`` **largest** are kept (a label map carries
no per-region confidence; area is the proxy), ignoring regions under ``min_fraction`` of the
image. Each region is then described by the backbone in one of two ways:

- ``"masked"``: the final feature map of the whole image (one backbone pass for the global
  descriptor and every region) averaged under the region's mask, the mask reduced to the
  map's grid by area averaging (a cell counts by the fraction of it the region covers);
- ``"crop"``: the region's bounding box cut out of the image, resized to the backbone's
  input and average-pooled (one more backbone pass per region, as the paper's recognition
  network sees each region on its own).

Both give non-negative ``C``-dimensional descriptors (the EfficientNet-Lite head ends in
ReLU6). :func:`sum_pool` codes them as the paper does: ``F'_k = sum_i C_i,k`` over the
regions (eq. 1), ``F_k = F'_k / sum_k F'_k`` (eq. 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["REGION_MODES", "Region", "label_regions", "masked_region_descriptors",
           "region_crops", "sum_pool"]

REGION_MODES = ("masked", "crop")


@dataclass(frozen=True)
class Region:
    """One connected region of one class.

    Attributes
    ----------
    label : int
        Its class.
    area : int
        Pixels.
    bbox : (int, int, int, int)
        ``(y0, x0, y1, x1)``, end-exclusive, in label-map pixels.
    mask : numpy.ndarray
        bool ``(H, W)``.
    """

    label: int
    area: int
    bbox: tuple[int, int, int, int]
    mask: np.ndarray


def label_regions(label_map: Any, k: int = 5, *, num_classes: int | None = None,
                  ignore_index: int | None = None, min_fraction: float = 0.01,
                  connectivity: int = 8) -> list[Region]:
    """The ``k`` largest connected single-class regions of a label map (see the module
    docstring), largest first (ties: smaller class, then top-left first).

    Void pixels (negative, ``>= num_classes`` when given, or ``ignore_index``) belong to no
    region; a region smaller than ``min_fraction`` of the map is dropped.
    """
    import cv2

    lab = np.asarray(label_map)
    if lab.ndim != 2 or lab.dtype.kind not in "iu":
        raise ValueError(f"label_map must be a 2-D integer map, got {lab.dtype} {lab.shape}")
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    h, w = lab.shape
    min_area = max(1, int(np.ceil(min_fraction * h * w)))
    cands: list[tuple[int, int, int, int, Region]] = []
    for c in np.unique(lab).tolist():
        if c < 0 or (num_classes is not None and c >= num_classes) or c == ignore_index:
            continue
        binary = (lab == c).astype(np.uint8)
        n, comp, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=connectivity)
        for r in range(1, n):
            area = int(stats[r, cv2.CC_STAT_AREA])
            if area < min_area:
                continue
            x0, y0 = int(stats[r, cv2.CC_STAT_LEFT]), int(stats[r, cv2.CC_STAT_TOP])
            bw, bh = int(stats[r, cv2.CC_STAT_WIDTH]), int(stats[r, cv2.CC_STAT_HEIGHT])
            reg = Region(int(c), area, (y0, x0, y0 + bh, x0 + bw), comp == r)
            cands.append((-area, int(c), y0, x0, reg))
    cands.sort(key=lambda t: t[:4])
    return [t[4] for t in cands[:k]]


def _grid_weights(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Fraction of each cell of an ``hw`` grid laid over ``mask`` that the mask covers."""
    import cv2

    return cv2.resize(mask.astype(np.float32), (hw[1], hw[0]), interpolation=cv2.INTER_AREA)


def masked_region_descriptors(final_map: Any, regions: Sequence[Region], k: int
                              ) -> tuple[np.ndarray, np.ndarray]:
    """``(k, C)`` float32 descriptors (mask-weighted averages of ``final_map`` ``(C, h,
    w)``) and ``(k,)`` bool validity of the regions (missing ones are zero rows). A region
    too thin to cover any cell at the map's resolution takes the cell under its centre."""
    fm = np.asarray(final_map, dtype=np.float32)
    c, mh, mw = fm.shape
    out = np.zeros((k, c), dtype=np.float32)
    valid = np.zeros(k, dtype=bool)
    for i, reg in enumerate(regions[:k]):
        wgt = _grid_weights(reg.mask, (mh, mw))
        s = float(wgt.sum())
        if s <= 0:
            ys, xs = np.nonzero(reg.mask)
            hh, ww = reg.mask.shape
            wgt = np.zeros((mh, mw), np.float32)
            wgt[min(mh - 1, int(ys.mean() * mh / hh)), min(mw - 1, int(xs.mean() * mw / ww))] = 1
            s = 1.0
        out[i] = np.einsum("chw,hw->c", fm, wgt) / s
        valid[i] = True
    return out, valid


def region_crops(image: np.ndarray, regions: Sequence[Region]) -> list[np.ndarray]:
    """The bounding-box crops ``(h, w, 3)`` uint8 of ``regions`` in an RGB image of the
    label map's size (boxes are scaled when the sizes differ)."""
    img = np.asarray(image)
    out = []
    for reg in regions:
        mh, mw = reg.mask.shape
        sy, sx = img.shape[0] / mh, img.shape[1] / mw
        y0, x0, y1, x1 = reg.bbox
        ya, yb = int(np.floor(y0 * sy)), max(int(np.floor(y0 * sy)) + 1, int(np.ceil(y1 * sy)))
        xa, xb = int(np.floor(x0 * sx)), max(int(np.floor(x0 * sx)) + 1, int(np.ceil(x1 * sx)))
        out.append(np.ascontiguousarray(img[ya:yb, xa:xb]))
    return out


def sum_pool(descriptors: Any, valid: Any = None) -> np.ndarray:
    """Paper 004 eqs. 1-2: the sum over an image's regions, divided by its total:
    ``(n, K, C)`` (+ ``(n, K)`` validity) -> ``(n, C)`` float32 rows summing to 1 (zero rows
    for images without a region)."""
    d = np.asarray(descriptors, dtype=np.float64)
    if d.ndim != 3:
        raise ValueError(f"descriptors must be (n, K, C), got shape {d.shape}")
    if valid is not None:
        v = np.asarray(valid, dtype=bool)
        if v.shape != d.shape[:2]:
            raise ValueError(f"valid must be {d.shape[:2]}, got {v.shape}")
        d = d * v[..., None]
    f = d.sum(axis=1)  # eq. 1
    tot = f.sum(axis=1, keepdims=True)
    return np.where(tot > 0, f / np.where(tot > 0, tot, 1.0), 0.0).astype(np.float32)  # eq. 2
