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
from .index import IndexFormatError, LocalIndex, SBSIndex, SparseSignatureIndex, load_index
from .layout import SBSLayout, sbs_layout
from .sbovp import PhraseSignatures, Vocabulary, sbovp_signatures
from .sbs import decode_sbs, encode_sbs
from .signatures import (
    Inputs,
    Signature,
    create_signature,
    get_signature,
    list_signatures,
    register_signature,
)
from .sparse_l2 import PhraseIndex, SparseL2Index, phrase_l2_topk, sparse_l2_topk
from .sparse_sbs import SparseSBSCodes, SparseSBSSearcher, sparse_hamming_topk, to_sparse_sbs

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # the pipeline imports the segmentation front end lazily; keep `import semcbir_fast` light
    if name in ("build_index", "Retriever"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'semcbir_fast' has no attribute {name!r}")

__all__ = [
    "Features",
    "HybridSignatures",
    "IndexFormatError",
    "Inputs",
    "LocalIndex",
    "PhraseIndex",
    "PhraseSignatures",
    "Retriever",
    "SBSIndex",
    "SBSLayout",
    "Signature",
    "SparseL2Index",
    "SparseSBSCodes",
    "SparseSBSSearcher",
    "SparseSignatureIndex",
    "Vocabulary",
    "active_isa",
    "available_isas",
    "backend",
    "build_index",
    "create_signature",
    "decode_sbs",
    "encode_sbs",
    "extract_features",
    "get_signature",
    "hamming_distances",
    "hamming_topk",
    "histogram_filter",
    "hybrid_signatures",
    "hybrid_topk",
    "list_signatures",
    "load_index",
    "phrase_l2_topk",
    "register_signature",
    "sbovp_signatures",
    "sbs_layout",
    "set_backend",
    "set_isa",
    "sparse_hamming_topk",
    "sparse_l2_topk",
    "to_sparse_sbs",
]
