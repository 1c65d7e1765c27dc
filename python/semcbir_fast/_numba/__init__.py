"""numba implementation of the kernels: the fallback when the C++ extension is absent.

Same names, arguments, results and error messages as the compiled core ``semcbir_fast._core``
(see ``_core.pyi``): bit-identical codes, identical rankings, float32 distances equal bit for
bit. One module per file of ``cpp/src``:

==============  ===========================================================================
``isa``         ``active_isa`` / ``available_isas`` / ``set_isa`` (one level: ``"numba"``)
``parallel``    ``hardware_threads`` and the thread limit of the parallel kernels
``popcount``    the 64-bit population count
``topk``        the sort-and-pad writer of one result row
``sbs``         ``encode_sbs``
``hamming``     ``hamming_distances``, ``hamming_topk``
``csr``         CSR checks of the sparse inputs
``phrase``      ``build_phrase_matrices``
``sparse_l2``   ``sparse_l2_topk``, ``SparseL2Index``
``sparse_sbs``  ``sparse_sbs_encode`` / ``_decode`` / ``_check``, ``SparseSBSIndex``
==============  ===========================================================================

Importing this package needs numba (``pip install 'semcbir_fast[numba]'``); ``_backend``
imports it only when the numba backend is chosen or the compiled core is missing.
"""

from __future__ import annotations

from .hamming import hamming_distances, hamming_topk
from .isa import active_isa, available_isas, set_isa
from .parallel import hardware_threads
from .phrase import build_phrase_matrices
from .sbs import encode_sbs
from .sparse_l2 import SparseL2Index, sparse_l2_topk
from .sparse_sbs import SparseSBSIndex, sparse_sbs_check, sparse_sbs_decode, sparse_sbs_encode

__all__ = [
    "SparseL2Index",
    "SparseSBSIndex",
    "active_isa",
    "available_isas",
    "build_phrase_matrices",
    "encode_sbs",
    "hamming_distances",
    "hamming_topk",
    "hardware_threads",
    "set_isa",
    "sparse_l2_topk",
    "sparse_sbs_check",
    "sparse_sbs_decode",
    "sparse_sbs_encode",
]
