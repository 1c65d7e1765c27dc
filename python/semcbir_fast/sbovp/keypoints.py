"""The semantic class under each keypoint (SBoVP step 3; also the hybrid signature's)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._convert import to_numpy

__all__ = ["keypoint_classes"]


def keypoint_classes(
    xy: Any,
    image_size: tuple[int, int],
    label_map: Any,
    *,
    ignore_index: int | None = None,
    num_classes: int | None = None,
) -> np.ndarray:
    """The semantic class of the label-map pixel under each keypoint.

    Parameters
    ----------
    xy : array-like
        ``(n, 2)`` keypoint ``(x, y)`` in pixels of an image of size ``image_size``.
    image_size : (height, width)
        Size of the image the keypoints come from.
    label_map : array-like
        ``(H, W)`` integer class map. When its size differs from the image's, the pixel is
        ``(floor((y + 0.5) * H / height), floor((x + 0.5) * W / width))``, clipped to the map
        (the same formula gives the nearest pixel when the sizes agree).
    ignore_index, num_classes : int, optional
        Values that are void: negative ones, ``ignore_index``, and ``>= num_classes``.

    Returns
    -------
    numpy.ndarray
        int32 ``(n,)``: the class, or -1 for a void keypoint.
    """
    lab = to_numpy(label_map)
    lab = np.asarray(lab)
    if lab.ndim != 2 or lab.dtype.kind not in "iu" or lab.size == 0:
        raise ValueError(f"label_map must be a non-empty 2-D integer array, got "
                         f"shape {lab.shape} dtype {lab.dtype}")
    pts = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    h, w = (int(v) for v in image_size)
    if h <= 0 or w <= 0:
        raise ValueError(f"image_size must be (height, width) > 0, got {image_size}")
    H, W = lab.shape
    col = np.clip(np.floor((pts[:, 0] + 0.5) * (W / w)), 0, W - 1).astype(np.intp)
    row = np.clip(np.floor((pts[:, 1] + 0.5) * (H / h)), 0, H - 1).astype(np.intp)
    v = lab[row, col].astype(np.int64)
    void = (v < 0) | (v > np.iinfo(np.int32).max)
    if ignore_index is not None:
        void |= v == int(ignore_index)
    if num_classes is not None:
        void |= v >= int(num_classes)
    return np.where(void, -1, v).astype(np.int32)

