"""What hash training reads: backbone maps of the images (computed once, cached) and the
segmentation masks, cropped and resized like the images.

Images: the paper's preprocessing, a centred square crop with the shorter side, resized to
``image_size`` (224) pixels (area interpolation), normalised as the EfficientNet-Lite
weights expect. The frozen backbone runs once per image; its stage-3 and stage-5 maps
(float16) and the global average of its head map (float32, the global descriptor) are kept
(:func:`backbone_maps`; disk cache of :func:`semcbir_fast.deep.extract.extract_cached`,
keyed by the files' paths, sizes and times).

Masks (:func:`prepare_masks`): one integer map per image, of the image's aspect ratio
(any resolution: ground truth or a segmenter's label maps), cropped to the same centred
square and resized (nearest) to ``seg_size``; classes are mapped to ``0 .. K-1`` by a
:class:`SegClasses` table (the classes present in the training masks, or all of them) and
everything else is void (``IGNORE``, not counted by the loss).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["IGNORE", "SegClasses", "backbone_maps", "image_preprocess", "prepare_masks"]

#: Target value of void pixels (PyTorch's cross-entropy default ``ignore_index``).
IGNORE = -100
_ASPECT_TOL = 0.03


def image_preprocess(backbone: str = "efficientnet-lite0", image_size: int = 224) -> Any:
    """The :class:`~semcbir_fast.models.backbone.Preprocess` of the paper: centred square
    crop of the shorter side (``crop_padding=0``), resized to ``image_size``."""
    from ..models.backbone import Preprocess
    from ..models.efficientnet_lite import EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD

    return Preprocess(size=int(image_size), resize="center_crop", crop_padding=0,
                      interpolation="area", mean=EFFICIENTNET_LITE_MEAN,
                      std=EFFICIENTNET_LITE_STD)


def backbone_maps(paths: Sequence[str | os.PathLike[str]], *,
                  backbone: str = "efficientnet-lite0", image_size: int = 224,
                  batch_size: int = 16, device: Any = None, progress: bool = False,
                  use_cache: bool | None = None) -> dict[str, np.ndarray]:
    """Frozen-backbone outputs of image files: ``stage3`` float16 ``(n, C3, h, w)``,
    ``stage5`` float16 ``(n, C5, h/2, w/2)``, ``glob`` float32 ``(n, 1280)`` (GAP of the
    head map) and ``hw`` int64 ``(n, 2)`` (each image's original height and width).

    Raises ``ImageReadError`` naming an unreadable image."""
    import torch

    from ..deep.extract import extract_cached
    from ..imageio import read_image
    from ..models.backbone import Backbone

    files = [os.path.abspath(os.fspath(p)) for p in paths]
    pre = image_preprocess(backbone, image_size)

    def compute(_: Any) -> dict[str, np.ndarray]:
        from tqdm.auto import tqdm

        bb = Backbone(backbone, preprocess=pre, device=device)
        out: dict[str, list[np.ndarray]] = {"stage3": [], "stage5": [], "glob": [], "hw": []}
        bar = tqdm(total=len(files), unit="img", desc=f"{backbone} maps", disable=not progress)
        try:
            for s in range(0, len(files), batch_size):
                imgs = [read_image(p) for p in files[s:s + batch_size]]
                out["hw"].append(np.array([im.shape[:2] for im in imgs], np.int64))
                fb = bb.forward_batch([pre.apply(im) for im in imgs])
                out["stage3"].append(fb.maps[2].float().cpu().numpy().astype(np.float16))
                out["stage5"].append(fb.maps[4].float().cpu().numpy().astype(np.float16))
                out["glob"].append(fb.final.float().mean((2, 3)).cpu().numpy())
                bar.update(len(imgs))
        finally:
            bar.close()
        return {k: np.concatenate(v) for k, v in out.items()}

    if not files:
        raise ValueError("no images given")
    with torch.inference_mode():
        return extract_cached(files, "hashnet-maps", None, backbone=backbone,
                              extra_key={"preprocess": repr(pre), "format": 1},
                              use_cache=use_cache, compute=compute)


@dataclass(frozen=True)
class SegClasses:
    """How mask values become training classes: ``values[k]`` is the mask value of class
    ``k``; ``names`` their names (may be empty)."""

    values: tuple[int, ...]
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.values) < 2:
            raise ValueError(f"segmentation needs at least 2 mask classes, the masks have "
                             f"{len(self.values)} ({list(self.values)}); check the masks or "
                             "train without the segmentation branch (baseline)")

    @property
    def num_classes(self) -> int:
        return len(self.values)

    @classmethod
    def from_masks(cls, masks: Sequence[np.ndarray], *, mode: str = "compact",
                   num_values: int | None = None, ignore_index: int | None = None,
                   names: Sequence[str] | None = None) -> SegClasses:
        """``mode="compact"``: the values present in ``masks`` (except ``ignore_index`` and
        values ``>= num_values``); ``"keep"``: every value ``0 .. num_values - 1`` except
        ``ignore_index``."""
        if mode not in ("compact", "keep"):
            raise ValueError(f"seg_classes must be 'compact' or 'keep', got {mode!r}")
        if mode == "keep":
            if num_values is None:
                raise ValueError("seg_classes='keep' needs the number of mask classes")
            vals = [v for v in range(int(num_values)) if v != ignore_index]
        else:
            present: set[int] = set()
            for m in masks:
                present.update(int(v) for v in np.unique(np.asarray(m)))
            vals = sorted(v for v in present if v >= 0 and v != ignore_index
                          and (num_values is None or v < num_values))
        nm = tuple(str(names[v]) if names is not None and v < len(names) else str(v)
                   for v in vals)
        return cls(tuple(vals), nm)

    def lookup(self, max_value: int) -> np.ndarray:
        """int64 table ``value -> class`` for values ``0 .. max_value`` (``IGNORE`` for the
        others)."""
        t = np.full(max(max_value, max(self.values)) + 1, IGNORE, dtype=np.int64)
        t[list(self.values)] = np.arange(len(self.values))
        return t


def prepare_masks(masks: Sequence[np.ndarray], image_hw: np.ndarray, classes: SegClasses,
                  size: int) -> np.ndarray:
    """int64 targets ``(n, size, size)``: each mask cropped to the centred square of its
    image, resized (nearest) and mapped by ``classes`` (void = :data:`IGNORE`).

    Raises ``ValueError`` for a mask count or a mask shape that does not match the images
    (not 2-D, not an integer type, or another aspect ratio than its image)."""
    import cv2

    hw = np.asarray(image_hw).reshape(-1, 2)
    if len(masks) != hw.shape[0]:
        raise ValueError(f"masks must have one map per image: {hw.shape[0]} images, "
                         f"{len(masks)} masks")
    out = np.empty((len(masks), size, size), dtype=np.int64)
    for i, m in enumerate(masks):
        a = np.asarray(m)
        if a.ndim != 2 or a.dtype.kind not in "iu":
            raise ValueError(f"mask {i} must be a 2-D integer label map, got {a.dtype} "
                             f"{a.shape}")
        ih, iw = int(hw[i, 0]), int(hw[i, 1])
        mh, mw = a.shape
        if abs(mh / mw - ih / iw) > _ASPECT_TOL * (ih / iw):
            raise ValueError(f"mask {i} has shape {a.shape} but its image is {ih} x {iw}: "
                             "masks must cover their whole image (same aspect ratio)")
        side = min(mh, mw)
        y0, x0 = (mh - side) // 2, (mw - side) // 2
        crop = np.ascontiguousarray(a[y0:y0 + side, x0:x0 + side]).astype(np.int32)
        if side != size:
            crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_NEAREST)
        crop = crop.astype(np.int64)
        table = classes.lookup(int(crop.max()) if crop.size else 0)
        t = np.full(crop.shape, IGNORE, dtype=np.int64)
        ok = crop >= 0
        t[ok] = table[crop[ok]]
        out[i] = t
    return out
