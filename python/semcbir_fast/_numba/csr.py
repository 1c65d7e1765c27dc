"""CSR inputs of the sparse kernels (mirrors cpp/src/csr.cpp and the binding's csr_view):
``csr_view`` converts and checks the shape, ``validate_csr`` checks the contents, both with the
C++ messages (ValueError)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["csr_view", "validate_csr"]


def csr_view(indptr: Any, indices: Any, data: Any, cols: int,
             name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """int64 indptr / indices and float32 data, C-contiguous, with the binding's shape checks."""
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    indices = np.ascontiguousarray(indices, dtype=np.int64)
    data = np.ascontiguousarray(data, dtype=np.float32)
    cols = int(cols)
    if indptr.ndim != 1 or indptr.shape[0] < 1:
        raise ValueError(f"{name}: indptr must be 1-D with rows + 1 >= 1 entries")
    if indices.ndim != 1 or data.ndim != 1 or indices.shape[0] != data.shape[0]:
        raise ValueError(f"{name}: indices and data must be 1-D of the same length")
    nnz = indices.shape[0]
    if indptr[-1] != nnz:
        raise ValueError(f"{name}: indptr[-1] must equal len(indices) = {nnz}")
    if cols < 0:
        raise ValueError(f"{name}: number of columns must be >= 0")
    return indptr, indices, data, cols


def validate_csr(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, cols: int,
                 name: str) -> None:
    """ValueError (the first error, in the C++ order) unless the matrix is canonical CSR."""
    if indptr[0] != 0:
        raise ValueError(f"{name}: indptr[0] must be 0, got {int(indptr[0])}")
    steps = np.diff(indptr)
    if steps.size and steps.min() < 0:
        raise ValueError(f"{name}: indptr must be non-decreasing (row {int(np.argmax(steps < 0))})")
    nnz = indices.shape[0]
    if not nnz:
        return
    rows = indptr.shape[0] - 1
    row_of = np.repeat(np.arange(rows, dtype=np.int64), steps)
    bad = (indices < 0) | (indices >= cols) | ~np.isfinite(data)
    bad[1:] |= (row_of[1:] == row_of[:-1]) & (indices[1:] <= indices[:-1])
    if not bad.any():
        return
    r = int(row_of[int(np.argmax(bad))])
    # The first error of that row in the C++ order (column, order, value).
    for u in range(int(indptr[r]), int(indptr[r + 1])):
        c = int(indices[u])
        if c < 0 or c >= cols:
            raise ValueError(f"{name}: column index {c} in row {r} is outside [0, {cols})")
        if u > indptr[r] and c <= indices[u - 1]:
            raise ValueError(f"{name}: column indices must be strictly increasing within each "
                             f"row (row {r}); sort them and sum duplicates first")
        if not np.isfinite(data[u]):
            raise ValueError(f"{name}: non-finite value in row {r}")
    raise AssertionError(f"{name}: row {r} failed the vectorised check only")  # pragma: no cover
