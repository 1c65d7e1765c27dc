"""The sort-and-pad writer of one result row, shared by Hamming, sparse SBS and sparse L2
(mirrors ``write_sorted_row`` in cpp/include/semcbir/topk.hpp), and the histogram top-k of
integer distances (Hamming, sparse SBS)."""

from __future__ import annotations

import numba as nb
import numpy as np

__all__ = ["histogram_topk_row", "write_sorted_row"]


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


@nb.njit(cache=True, nogil=True)
def histogram_topk_row(dist, hist, k, missing, out_d, out_i):
    """The ``k`` smallest of the integer distances ``dist`` (one per row) into ``out_d`` /
    ``out_i``, ties by the smaller row; ``hist[d]`` counts the rows at distance ``d`` (every
    distance is below ``hist.shape[0]``)."""
    n = dist.shape[0]
    maxd = hist.shape[0] - 1
    kk = min(k, n)
    # Smallest distance D with at least kk rows at distance <= D.
    cum = 0
    cut = 0
    while cut < maxd:
        cum += hist[cut]
        if cum >= kk:
            break
        cut += 1
    # Everything below D, then rows at distance D in ascending order: ties by smaller row.
    sel = np.empty(kk, np.int64)
    cnt = 0
    for j in range(n):
        if dist[j] < cut:
            sel[cnt] = j
            cnt += 1
    for j in range(n):
        if cnt >= kk:
            break
        if dist[j] == cut:
            sel[cnt] = j
            cnt += 1
    write_sorted_row(dist[sel], sel, k, missing, out_d, out_i)
