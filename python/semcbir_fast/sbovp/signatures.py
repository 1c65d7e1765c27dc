"""SBoVP signatures of a batch of images (SPEC.md section 3, steps 3-5)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._convert import check_int as _index
from .._inputs import feature_list as _feature_list
from .._inputs import label_list as _label_list
from ..semantic_histogram import semantic_histograms
from .keypoints import keypoint_classes
from .normalize import append_histograms, normalize_signatures
from .phrases import NORMS as _NORMS
from .phrases import PhraseSignatures, build_phrase_signatures
from .vocabulary import Vocabulary

__all__ = ["sbovp_signatures"]


def sbovp_signatures(
    features: Any,
    label_maps: Any,
    vocab: Vocabulary,
    *,
    n: int = 2,
    normalize: str | None = "l2",
    ignore_index: int | None = None,
    num_classes: int | None = None,
    semantic_words: bool = False,
    histogram_weight: float = 0.0,
    histograms: Any = None,
    threads: int = 0,
) -> PhraseSignatures:
    """SBoVP signatures of a batch of images (SPEC.md section 3, steps 3-5).

    Parameters
    ----------
    features : Features or sequence of Features
        Keypoints and descriptors per image (:func:`~semcbir_fast.features.extract_features`).
    label_maps : sequence of (H, W) integer arrays, or (N, H, W)
        Semantic label map per image (any size: keypoints are scaled to it).
    vocab : Vocabulary
        Fitted on descriptors of the same method and width (checked).
    n : int
        Phrase length (2 default, 2..4).
    normalize : {"l2", "l1", "hellinger", None}
        Per-image normalisation of the phrase matrix (default ``"l2"``: makes images with
        many and few keypoints comparable). ``"hellinger"`` (square roots, then L2) ranks
        best in our measurements (README) and is what the CLI uses. None keeps raw counts.
    ignore_index, num_classes : int, optional
        Label values that are void (plus negative values): their keypoints join no region.
    semantic_words : bool
        Extension, off by default (SPEC.md's matrix is ``L x L``): tag every word with the
        class of its region, i.e. use the "semantic visual words" ``class * L + word``
        (``num_classes * L`` of them, ``num_classes`` required). Phrases never cross
        regions, so the matrix is block-diagonal, one ``L x L`` block per class, and two
        images only match on phrases of the same class. With plain words the class regions
        only decide which keypoints are linked, and the signature carries no class
        information at all; the tagged form ranks far better (README, MSRC v1 / Corel-1K).
    histogram_weight : float
        Extension, off by default (0): when > 0, append the semantic histogram of the label
        map with this weight (:func:`append_histograms`; needs ``num_classes`` and
        ``normalize`` "l2" or "hellinger"). The CLI uses 1.
    histograms : array-like, optional
        The label maps' semantic histograms when the caller has them already
        (:func:`semcbir_fast.hybrid.semantic_histograms` with the same ``num_classes`` and
        ``ignore_index``); computed here otherwise.
    threads : int
        0 = all cores; results never depend on it.

    Returns
    -------
    PhraseSignatures
    """
    if not isinstance(vocab, Vocabulary):
        raise ValueError(f"vocab must be a Vocabulary, got {type(vocab).__name__}")  # noqa: TRY004
    feats = _feature_list(features)
    maps = _label_list(label_maps, len(feats))
    if normalize not in _NORMS:
        raise ValueError(f"normalize must be one of {_NORMS}, got {normalize!r}")
    histogram_weight = float(histogram_weight)
    if not np.isfinite(histogram_weight) or histogram_weight < 0:
        raise ValueError(f"histogram_weight must be a finite number >= 0, got "
                         f"{histogram_weight}")
    if histogram_weight and (num_classes is None or normalize not in ("l2", "hellinger")):
        raise ValueError("histogram_weight > 0 needs num_classes and normalize='l2' or "
                         f"'hellinger' (got num_classes={num_classes}, normalize={normalize!r})")
    n_words, tag = vocab.n_words, 0
    if semantic_words:
        if num_classes is None:
            raise ValueError("semantic_words=True needs num_classes (the number of classes "
                             "of the segmentation model)")
        tag = _index(num_classes, "num_classes", 1)
        if tag * vocab.n_words > 2**31 - 1:
            raise ValueError(f"semantic_words: num_classes * n_words = {tag * vocab.n_words} "
                             "exceeds 2^31 - 1; use a smaller vocabulary")
        n_words = tag * vocab.n_words
    words, classes = [], []
    for f, m in zip(feats, maps):
        w = vocab.assign(f, threads=threads)
        c = keypoint_classes(f.xy, f.image_size, m, ignore_index=ignore_index,
                             num_classes=num_classes)
        if tag:
            w = np.where(c >= 0, c.astype(np.int64) * vocab.n_words + w, w).astype(np.int32)
        words.append(w)
        classes.append(c)
    sig = build_phrase_signatures([f.xy for f in feats], words, classes, n_words, n=n,
                                  threads=threads)
    sig.num_classes = tag
    sig = normalize_signatures(sig, normalize)
    if histogram_weight:
        if histograms is None:
            assert num_classes is not None
            histograms = semantic_histograms(maps, num_classes, ignore_index=ignore_index)
        sig = append_histograms(sig, histograms, histogram_weight)
    return sig


_Csr = tuple[np.ndarray, np.ndarray, np.ndarray, int, "PhraseSignatures | None"]
