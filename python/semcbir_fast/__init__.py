"""semcbir_fast: content-based image retrieval from semantic segmentation.

Semantic Binary Signatures (SBS) are encoded from label maps by a C++17 core (a numba
fallback runs the same kernels when the extension is absent) and searched by exact
Hamming distance with run-time-dispatched SIMD kernels.

>>> from semcbir_fast import encode_sbs, hamming_topk
"""

from __future__ import annotations

from ._backend import active_isa, available_isas, backend, set_backend, set_isa
from .features import Features, extract_features
from .hamming import hamming_distances, hamming_topk
from .hybrid import HybridSignatures, histogram_filter, hybrid_signatures, hybrid_topk
from .index import IndexFormatError, SBSIndex
from .layout import SBSLayout, sbs_layout
from .local_index import LocalIndex, load_index
from .sbovp import PhraseIndex, PhraseSignatures, Vocabulary, phrase_l2_topk, sbovp_signatures
from .sbs import decode_sbs, encode_sbs

__version__ = "0.1.0"

__all__ = [
    "Features",
    "HybridSignatures",
    "IndexFormatError",
    "LocalIndex",
    "PhraseIndex",
    "PhraseSignatures",
    "SBSIndex",
    "SBSLayout",
    "Vocabulary",
    "extract_features",
    "histogram_filter",
    "hybrid_signatures",
    "hybrid_topk",
    "load_index",
    "phrase_l2_topk",
    "sbovp_signatures",
    "active_isa",
    "available_isas",
    "backend",
    "decode_sbs",
    "encode_sbs",
    "hamming_distances",
    "hamming_topk",
    "sbs_layout",
    "set_backend",
    "set_isa",
]
