"""Semantic Bag of Visual Phrases (SBoVP) — paper 000 section 3.2, SPEC.md section 3.

Pipeline (each step is a public function, so that any step can be replaced):

1. :func:`semcbir_fast.features.extract_features` — keypoints and descriptors (KAZE default);
2. :class:`Vocabulary` (``vocabulary.py``) — k-means visual words, fitted on *another* image
   set than the one searched (the paper fits on Pascal VOC), saved and loaded on its own;
3. :func:`keypoint_classes` (``keypoints.py``) — the semantic class under each keypoint
   (label map coordinates scaled when its size differs from the image's);
4. :func:`build_phrase_signatures` (``phrases.py``, C++) — inside every class region each
   keypoint is linked to its ``n - 1`` nearest neighbours (exact search), and each phrase
   increments the upper-triangular ``L x L`` matrix at every pair of its words;
5. :func:`semcbir_fast.sparse_l2.sparse_l2_topk` (C++) — exact L2 search between the sparse
   matrices.

:func:`sbovp_signatures` (``signatures.py``) runs steps 3-4 (+ normalisation,
``normalize.py``) for a batch; :class:`semcbir_fast.signatures.SBoVPSignature` wraps it
with its parameters and presets.

Extensions (SPEC.md's signature is the plain ``L x L`` matrix): semantic visual words
(every word tagged with its region's class), Hellinger normalisation, the semantic histogram
appended to the signature, and paper 001's histogram filter in front of the ranking. The
measured effect is in docs/results.md; the reasons in docs/decisions.md.

Definitions fixed here (SPEC.md leaves them open)
-------------------------------------------------
- Neighbours: squared Euclidean distance on keypoint ``(x, y)`` computed in float64, ties
  broken by the smaller keypoint index (the order of the :class:`~semcbir_fast.features.Features`).
- A region with ``m`` keypoints, ``2 <= m < n``: every keypoint links to all ``m - 1`` others
  (phrases of ``m`` words). A region with a single keypoint makes no phrase, and neither do
  keypoints on void pixels. An image without phrases has an empty (all-zero) row.
- Every keypoint makes its own phrase, so two mutual nearest neighbours count their pair
  twice; a phrase of ``n`` words adds ``n (n - 1) / 2`` pairs (positions, not distinct words:
  equal words increment the diagonal).
- Distance: equation (3), ``sqrt(sum (H1 - H2)^2)`` over the upper triangle, in float64,
  returned as float32.
"""

from __future__ import annotations

from ..sparse_l2 import PhraseIndex, SparseL2Index, phrase_l2_topk, sparse_l2_topk
from .keypoints import keypoint_classes
from .normalize import append_histograms, normalize_signatures
from .phrases import NORMS, PhraseSignatures, build_phrase_signatures
from .signatures import sbovp_signatures
from .vocabulary import Vocabulary

__all__ = [
    "NORMS",
    "PhraseIndex",
    "PhraseSignatures",
    "SparseL2Index",
    "Vocabulary",
    "append_histograms",
    "build_phrase_signatures",
    "keypoint_classes",
    "normalize_signatures",
    "phrase_l2_topk",
    "sbovp_signatures",
    "sparse_l2_topk",
]
