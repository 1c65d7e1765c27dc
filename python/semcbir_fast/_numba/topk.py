"""The sort-and-pad writer of one result row, shared by Hamming and sparse L2 (mirrors
``write_sorted_row`` in cpp/include/semcbir/topk.hpp)."""

from __future__ import annotations

import numba as nb
import numpy as np

__all__ = ["write_sorted_row"]


@nb.njit(cache=True, nogil=True)
def write_sorted_row(d, ids, k, missing, out_d, out_i):
    """Write the candidates ``(d[t], ids[t])`` sorted by (distance, id) into ``out_d[:k]`` /
    ``out_i[:k]``; the slots after the candidates get ``(missing, -1)``.

    Candidates of equal distance must come in ascending id order (the sort is stable), so
    ties go to the smaller id as in the C++ core.
    """
    order = np.argsort(d, kind="mergesort")
    have = min(k, d.shape[0])
    for t in range(have):
        out_d[t] = d[order[t]]
        out_i[t] = ids[order[t]]
    for t in range(have, k):
        out_d[t] = missing
        out_i[t] = -1
