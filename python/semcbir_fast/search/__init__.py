"""Float-vector search and what is built on it: exact top-k (L2, inner product, L1), late
fusion of several signatures' distances, query expansion and k-reciprocal re-ranking.

=================================  =========================================================
:func:`float_topk`                 exact ``(distances, ids)``, ties by the smaller id
                                   (faiss / BLAS / numba backends)
:func:`float_distances`            the full distance matrix of the same metrics
:func:`topk_from_distances`        tie-exact top-k of any distance block
:func:`fuse_distances`             z / rank / min-max normalised weighted sum (late fusion)
:func:`curve_weights`              query-adaptive fusion weights (Zheng et al. 2015)
:func:`alpha_qe`, :func:`average_qe`  query expansion (Radenovic et al. 2018; Chum et al. 2007)
:class:`KReciprocal`               k-reciprocal re-ranking (Zhong et al. 2017)
=================================  =========================================================

NumPy only at import (faiss and numba are imported when a call needs them).
"""

from __future__ import annotations

from .expansion import alpha_qe, average_qe
from .float_topk import (
    BACKENDS,
    METRICS,
    as_vectors,
    available_backends,
    float_distances,
    float_topk,
    topk_from_distances,
)
from .fusion import (
    NORMALIZATIONS,
    curve_weights,
    fuse_distances,
    normalize_distances,
    penalised_keys,
)
from .rerank import KReciprocal

__all__ = [
    "BACKENDS",
    "METRICS",
    "NORMALIZATIONS",
    "KReciprocal",
    "alpha_qe",
    "as_vectors",
    "available_backends",
    "average_qe",
    "curve_weights",
    "float_distances",
    "float_topk",
    "fuse_distances",
    "normalize_distances",
    "penalised_keys",
    "topk_from_distances",
]
