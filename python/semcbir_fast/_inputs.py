"""Batch inputs as the signature functions take them: label maps and local features."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._convert import to_numpy
from .features import Features

__all__ = ["feature_list", "label_list"]


def label_list(label_maps: Any, count: int) -> list[np.ndarray]:
    if isinstance(label_maps, (list, tuple)):
        maps = [np.asarray(to_numpy(m)) for m in label_maps]
    else:
        arr = np.asarray(to_numpy(label_maps))
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3:
            raise ValueError(f"label_maps must be a list of (H, W) maps or an (N, H, W) array, "
                             f"got shape {arr.shape}")
        maps = list(arr)
    if len(maps) != count:
        raise ValueError(f"label_maps must have one map per image: {count} feature sets, "
                         f"{len(maps)} label maps")
    return maps


def feature_list(features: Any) -> list[Features]:
    if isinstance(features, Features):
        return [features]
    feats = list(features)
    for i, f in enumerate(feats):
        if not isinstance(f, Features):
            raise ValueError(  # noqa: TRY004
                f"features[{i}] must be a semcbir_fast.features.Features, "
                f"got {type(f).__name__}")
    return feats
