"""Type stubs of the private compiled core (see python/bindings.cpp).

This is also the backend contract: the numba package ``semcbir_fast._numba`` exports the same
names with the same parameter names (checked by tests/test_hamming.py), so the public functions
call ``_backend.core().<name>(...)`` whichever backend is active.

Integer arguments are int64 (the public functions check them first, with the library's
messages): ``threads`` >= 0 (0 = all cores) and capped at 1024; ``k`` in ``[1, 2**24]`` with
``nq * k <= 2**28``, checked before the outputs are allocated (ValueError); ``levels`` in
``[0, 12]`` with codes of at most 4 MiB (ValueError). Scratch memory that cannot be had is
MemoryError.
"""

import numpy as np
import numpy.typing as npt

def encode_sbs(
    maps: list[npt.NDArray[np.integer]],
    num_classes: int,
    levels: int,
    ignore_index: int | None,
    pyramid: bool,
    stride: int,
    threads: int,
) -> npt.NDArray[np.uint8]: ...
def hamming_topk(
    queries: npt.NDArray[np.uint8], database: npt.NDArray[np.uint8], k: int, threads: int
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]: ...
def hamming_distances(
    a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8], threads: int
) -> npt.NDArray[np.int32]: ...
def active_isa() -> str: ...
def available_isas() -> list[str]: ...
def set_isa(name: str) -> None: ...
def hardware_threads() -> int: ...

# ---- phrase building and sparse L2 (SBoVP) ----
def build_phrase_matrices(
    xy: list[npt.NDArray[np.float32]],
    words: list[npt.NDArray[np.int32]],
    classes: list[npt.NDArray[np.int32]],
    vocab_size: int,
    phrase_len: int,
    threads: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]: ...
def sparse_l2_topk(
    q_indptr: npt.NDArray[np.int64],
    q_indices: npt.NDArray[np.int64],
    q_data: npt.NDArray[np.float32],
    d_indptr: npt.NDArray[np.int64],
    d_indices: npt.NDArray[np.int64],
    d_data: npt.NDArray[np.float32],
    cols: int,
    k: int,
    threads: int,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]: ...

class SparseL2Index:
    def __init__(
        self,
        indptr: npt.NDArray[np.int64],
        indices: npt.NDArray[np.int64],
        data: npt.NDArray[np.float32],
        cols: int,
        threads: int,
    ) -> None: ...
    @property
    def rows(self) -> int: ...
    @property
    def cols(self) -> int: ...
    @property
    def nnz(self) -> int: ...
    def search(
        self,
        q_indptr: npt.NDArray[np.int64],
        q_indices: npt.NDArray[np.int64],
        q_data: npt.NDArray[np.float32],
        k: int,
        threads: int,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]: ...

# ---- sparse SBS search (docs/sparse_search.md) ----
# Sparse codes (CSR): ``offsets`` int64 ``(n + 1,)``, ``entries`` uint16 (layouts of at most
# 16,384 cells) or uint32, ``(cell << 2) | (level - 1)`` with cells ascending per row,
# ``popcounts`` int32 ``(n,)``. Malformed input is ValueError naming the first problem.
def sparse_sbs_encode(
    codes: npt.NDArray[np.uint8], num_classes: int, levels: int, pyramid: bool, threads: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.unsignedinteger], npt.NDArray[np.int32]]: ...
def sparse_sbs_decode(
    offsets: npt.NDArray[np.int64],
    entries: npt.NDArray[np.unsignedinteger],
    popcounts: npt.NDArray[np.int32],
    num_classes: int,
    levels: int,
    pyramid: bool,
    threads: int,
) -> npt.NDArray[np.uint8]: ...
def sparse_sbs_check(
    offsets: npt.NDArray[np.int64],
    entries: npt.NDArray[np.unsignedinteger],
    popcounts: npt.NDArray[np.int32],
    num_classes: int,
    levels: int,
    pyramid: bool,
) -> None: ...

class SparseSBSIndex:
    def __init__(
        self,
        offsets: npt.NDArray[np.int64],
        entries: npt.NDArray[np.unsignedinteger],
        popcounts: npt.NDArray[np.int32],
        num_classes: int,
        levels: int,
        pyramid: bool,
        threads: int,
        hot_fraction: float,
    ) -> None: ...
    @property
    def rows(self) -> int: ...
    @property
    def nnz(self) -> int: ...
    @property
    def inverted_bytes(self) -> int: ...
    @property
    def hot_cells(self) -> int: ...
    def search(
        self, queries: npt.NDArray[np.uint8], k: int, threads: int, method: int
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]: ...
