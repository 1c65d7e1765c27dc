"""The 64-bit population count of the numba kernels (mirrors cpp/src/popcount.hpp)."""

from __future__ import annotations

import numba as nb
import numpy as np

__all__ = ["popcount64"]


@nb.njit(cache=True, nogil=True, inline="always")
def popcount64(x):
    """Set bits of the uint64 ``x`` (SWAR; LLVM turns it into POPCNT where the CPU has it)."""
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((x * np.uint64(0x0101010101010101)) >> np.uint64(56))
