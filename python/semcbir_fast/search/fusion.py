"""Late fusion of several rankings' distances (one row per query, one column per database
item): normalise each signature's distances per query, then add them with weights.

Normalisations (``normalization=``), per query row over the whole database:

- ``"z"`` (default): ``(d - mean) / std``, the usual score normalisation of late fusion
  ("CombSUM" of z-scores): the signatures' units (Hamming bits, L2 on unit vectors, sparse
  L2) stop mattering and the spread of each row sets its influence;
- ``"rank"``: the rank of each item in the row divided by ``N - 1`` (tied distances share
  the smallest rank): a Borda count, blind to how far apart the distances are;
- ``"minmax"``: ``(d - min) / (max - min)``.

A row whose distances are all equal normalises to zeros (it cannot order anything).

Query-adaptive weights (:func:`curve_weights`, Zheng et al., "Query-adaptive late fusion
for image search and person re-identification", CVPR 2015): a signature whose distances of
a query form an L-shaped curve (a few images close, the rest far) is discriminative for
that query, one whose curve declines evenly is not. Sorting the row's similarities, min-max
normalised to [0, 1], the area under the curve is their mean, ``(max - mean) / (max -
min)`` of the distances; the weight is its inverse, a query's weights scaled to sum to the
number of signatures. (The paper subtracts a reference curve learned on other data; this
library has none and uses the plain curve.) The area is invariant to any increasing affine
map of the distances, so it does not depend on the signature's units or normalisation.
Penalised results (paper 001's filter) should enter as larger distances (see
:func:`semcbir_fast.search.penalised_keys`), so that they keep their place after the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["NORMALIZATIONS", "curve_weights", "fuse_distances", "normalize_distances",
           "penalised_keys"]

NORMALIZATIONS = ("z", "rank", "minmax")


def _matrix(d: Any, name: str) -> np.ndarray:
    a = np.asarray(d, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (queries, database), got shape {a.shape}")
    if a.size and not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite (give penalised results as larger finite "
                         "distances: penalised_keys)")
    return a


def penalised_keys(distances: Any, penalised: Any = None) -> np.ndarray:
    """float64 distances with penalised entries moved after every unpenalised one of their
    row (``d + max finite d of the row + 1``): one ordering for ``(penalised, distance)``."""
    d = np.asarray(distances, dtype=np.float64)
    if penalised is None:
        return d
    p = np.asarray(penalised, dtype=bool)
    if not p.any():
        return d
    fin = np.where(np.isfinite(d), d, 0.0)
    off = np.abs(fin).max(axis=1, keepdims=True) * 2 + 1.0
    return np.where(p, d + off, d)


def normalize_distances(distances: Any, method: str = "z") -> np.ndarray:
    """Each row normalised by ``method`` (see the module docstring): float64, same shape."""
    if method not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got "
                         f"{method!r}")
    d = _matrix(distances, "distances")
    if d.shape[1] == 0:
        return d.copy()
    if method == "z":
        mu = d.mean(axis=1, keepdims=True)
        sd = d.std(axis=1, keepdims=True)
        return np.where(sd > 0, (d - mu) / np.where(sd > 0, sd, 1.0), 0.0)
    if method == "minmax":
        lo = d.min(axis=1, keepdims=True)
        span = d.max(axis=1, keepdims=True) - lo
        return np.where(span > 0, (d - lo) / np.where(span > 0, span, 1.0), 0.0)
    n = d.shape[1]
    order = np.argsort(d, axis=1, kind="stable")
    srt = np.take_along_axis(d, order, 1)
    pos = np.broadcast_to(np.arange(n), d.shape)
    # the rank of a run of equal distances is the position of its first member
    first = np.where(np.concatenate([np.ones((d.shape[0], 1), bool),
                                     srt[:, 1:] != srt[:, :-1]], axis=1), pos, 0)
    first = np.maximum.accumulate(first, axis=1)
    ranks = np.empty_like(d)
    np.put_along_axis(ranks, order, first.astype(np.float64), 1)
    return ranks / max(n - 1, 1)


def curve_weights(distances: Sequence[Any]) -> np.ndarray:
    """Query-adaptive weights of several signatures' distance rows (module docstring).

    Parameters
    ----------
    distances : sequence of array_like
        One ``(nq, N)`` finite distance matrix per signature (the same queries and
        database), lower is better.

    Returns
    -------
    numpy.ndarray
        float64 ``(nq, S)``: per query, ``1 / area`` of each signature's normalised curve,
        scaled so that the row sums to ``S``. A signature whose row is constant (it orders
        nothing) gets 0; a query none of whose signatures orders anything gets 1 each.
    """
    ds = [_matrix(d, f"distances[{i}]") for i, d in enumerate(distances)]
    if not ds:
        raise ValueError("distances must hold at least one (nq, N) matrix")
    if any(d.shape != ds[0].shape for d in ds):
        raise ValueError(f"distances must share one shape, got {[d.shape for d in ds]}")
    nq, n = ds[0].shape
    s = len(ds)
    inv = np.zeros((nq, s))
    for j, d in enumerate(ds):
        if n == 0:
            continue
        hi, lo = d.max(axis=1), d.min(axis=1)
        span = hi - lo
        area = (hi - d.mean(axis=1)) / np.where(span > 0, span, 1.0)
        # area >= 1/N when the span is > 0 (at least the minimum sits at the top)
        inv[:, j] = np.where(span > 0, 1.0 / np.maximum(area, 1.0 / n), 0.0)
    tot = inv.sum(axis=1, keepdims=True)
    return np.where(tot > 0, inv * (s / np.where(tot > 0, tot, 1.0)), 1.0)


def fuse_distances(distances: Sequence[Any], weights: Sequence[float] | None = None, *,
                   normalization: str = "z") -> np.ndarray:
    """``sum_s w_s * normalize(d_s)`` over the signatures ``s``: float64 ``(nq, N)``; lower
    is better. ``weights`` default to 1 each (plain CombSUM)."""
    ds = list(distances)
    if not ds:
        raise ValueError("distances must hold at least one (nq, N) matrix")
    if weights is None:
        weights = [1.0] * len(ds)
    w = [float(x) for x in weights]
    if len(w) != len(ds):
        raise ValueError(f"weights must give one value per signature ({len(ds)}), got {len(w)}")
    if not all(np.isfinite(x) and x >= 0 for x in w) or not any(w):
        raise ValueError(f"weights must be finite, >= 0 and not all 0, got {w}")
    out = None
    for i, (d, wi) in enumerate(zip(ds, w)):
        m = _matrix(d, f"distances[{i}]")
        if out is not None and m.shape != out.shape:
            raise ValueError(f"distances[{i}] has shape {m.shape}, distances[0] {out.shape}")
        if out is None:
            out = np.zeros(m.shape)
        if wi:
            out += wi * normalize_distances(m, normalization)
    assert out is not None
    return out
