"""The L1 distance block kernel (numba): L1 has no BLAS form, so it is a tiled loop.

The database is cut into tiles of :data:`TILE` rows that stay in cache while every query
is compared with them; tiles run in parallel. The inner loop accumulates ``|q_t - x_t|``
in float32 with ``fastmath`` (so that it vectorises); the order of the additions is the
same for every pair of vectors of a call, and small-integer data sum exactly.
"""

from __future__ import annotations

import numba as nb
import numpy as np

__all__ = ["TILE", "l1_distances"]

#: Database rows per tile (64 x 1280 float32 = 320 KiB: an L2-sized tile).
TILE = 64


@nb.njit(cache=True, nogil=True, parallel=True, fastmath=True)
def _l1(q: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - jitted
    nq, d = q.shape
    n = x.shape[0]
    ntiles = (n + TILE - 1) // TILE
    for tile in nb.prange(ntiles):
        j0 = tile * TILE
        j1 = min(n, j0 + TILE)
        for i in range(nq):
            for j in range(j0, j1):
                s = np.float32(0.0)
                for t in range(d):
                    s += abs(q[i, t] - x[j, t])
                out[i, j] = s


def l1_distances(q: np.ndarray, x: np.ndarray, threads: int = 0) -> np.ndarray:
    """float32 ``(len(q), len(x))`` L1 distances of C-contiguous float32 matrices."""
    out = np.empty((q.shape[0], x.shape[0]), dtype=np.float32)
    if out.size == 0:
        return out
    before = nb.get_num_threads()
    want = nb.config.NUMBA_NUM_THREADS if threads == 0 else min(threads,
                                                                nb.config.NUMBA_NUM_THREADS)
    if want != before:
        nb.set_num_threads(want)  # numba's thread count is per calling thread
    try:
        _l1(q, x, out)
    finally:
        if want != before:
            nb.set_num_threads(before)
    return out
