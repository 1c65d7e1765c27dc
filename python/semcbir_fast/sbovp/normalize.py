"""Row normalisation of phrase matrices and the appended semantic histogram (extensions of
SBoVP; the measured effect is in docs/results.md)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from .._convert import to_numpy
from .phrases import NORMS as _NORMS
from .phrases import PhraseSignatures

__all__ = ["append_histograms", "normalize_signatures"]


def normalize_signatures(sig: PhraseSignatures, normalize: str | None) -> PhraseSignatures:
    """Rows divided by their L2 norm (``"l2"``) or their sum (``"l1"``); ``"hellinger"``
    takes the square root of every count first and then divides by the L2 norm (the
    classic remedy for bursty words: L2 between such rows is the Hellinger distance of the
    count distributions, up to a factor); ``None`` keeps counts.

    Norms are computed in float64; empty rows stay empty. Normalising an already normalised
    batch is an error (normalise raw counts).
    """
    if normalize not in _NORMS:
        raise ValueError(f"normalize must be one of {_NORMS}, got {normalize!r}")
    if normalize is None:
        return sig
    if sig.normalize is not None or sig.histogram_classes:
        raise ValueError(f"signatures are already {sig.normalize}-normalised; "
                         "normalise raw counts (normalize=None) instead")
    v = sig.data.astype(np.float64)
    if normalize == "hellinger":
        v = np.sqrt(np.abs(v))
    data = _scale_rows(sig.indptr, v, "l1" if normalize == "l1" else "l2")
    return replace(sig, data=data, normalize=normalize)


def _scale_rows(indptr: np.ndarray, v: np.ndarray, norm: str) -> np.ndarray:
    """float64 values ``v`` of a CSR matrix, each row divided by its L1 or L2 norm; float32."""
    n = indptr.size - 1
    rows = np.repeat(np.arange(n), np.diff(indptr))
    tot = np.bincount(rows, weights=v * v if norm == "l2" else np.abs(v), minlength=n)
    if norm == "l2":
        tot = np.sqrt(tot)
    scale = np.divide(1.0, tot, out=np.zeros_like(tot), where=tot > 0)
    return (v * scale[rows]).astype(np.float32)


def append_histograms(sig: PhraseSignatures, histograms: Any,
                      weight: float = 1.0) -> PhraseSignatures:
    """Append the semantic histogram to unit-norm phrase rows, as ``weight * sqrt(P)``.

    Each row becomes ``[phrases, weight * sqrt(P_0), ..., weight * sqrt(P_{M-1})]`` divided
    by its L2 norm (``sqrt(1 + weight^2)`` for an image with phrases and a valid label map),
    so the squared L2 distance of two images is ``2 - 2 (cos_phrases + w^2 BC(P, P')) /
    (1 + w^2)``, where ``BC`` is the Bhattacharyya coefficient of their class proportions.
    The phrases say *which local structures* occur in each class region; the histogram says
    *how much* of the image each class covers, which the phrase counts do not carry. An
    extension of ours (README: it lifts SBoVP above SBS on MSRC v1 and Corel-1K).

    Parameters
    ----------
    sig : PhraseSignatures
        Normalised with ``"l2"`` or ``"hellinger"`` (unit rows), without a histogram yet.
    histograms : array-like
        ``(N, M)`` class proportions (:func:`semcbir_fast.hybrid.semantic_histograms`).
    weight : float
        ``w > 0``, the histogram's weight against the phrases (default 1: equal).
    """
    if sig.normalize not in ("l2", "hellinger") or sig.histogram_classes:
        raise ValueError("append_histograms needs l2- or hellinger-normalised signatures "
                         f"without a histogram, got normalize={sig.normalize!r}, "
                         f"histogram_classes={sig.histogram_classes}")
    weight = float(weight)
    if not np.isfinite(weight) or weight <= 0:
        raise ValueError(f"weight must be a finite number > 0, got {weight}")
    h = np.asarray(to_numpy(histograms), dtype=np.float64)
    if h.ndim != 2 or h.shape[0] != len(sig) or h.shape[1] < 1:
        raise ValueError(f"histograms must be ({len(sig)}, M), got shape {h.shape}")
    if not np.all(np.isfinite(h)) or (h < 0).any():
        raise ValueError("histograms must be finite and >= 0 (class proportions)")
    n, m, base = len(sig), h.shape[1], sig.n_words * sig.n_words
    hr, hc = np.nonzero(h)
    cnt, hcnt = np.diff(sig.indptr), np.bincount(hr, minlength=n)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(cnt + hcnt, out=indptr[1:])
    rows = np.repeat(np.arange(n), cnt)
    pos = indptr[rows] + np.arange(sig.nnz) - sig.indptr[rows]
    hpos = indptr[hr] + cnt[hr] + np.arange(hr.size) - np.searchsorted(hr, hr)
    indices = np.empty(indptr[-1], dtype=np.int64)
    v = np.empty(indptr[-1], dtype=np.float64)
    indices[pos], v[pos] = sig.indices, sig.data
    indices[hpos], v[hpos] = base + hc, weight * np.sqrt(h[hr, hc])
    return replace(sig, indptr=indptr, indices=indices, data=_scale_rows(indptr, v, "l2"),
                   histogram_classes=m, histogram_weight=weight)
