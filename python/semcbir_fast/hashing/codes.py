"""Binary codes of real-valued hash outputs: thresholding and packing (SPEC.md section 1's
byte layout: bit ``i`` in byte ``i // 8``, most significant bit first, rows padded with zero
bytes to a multiple of 8)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["code_stride", "pack_bits", "threshold_bits", "unpack_bits"]


def code_stride(nbits: int) -> int:
    """Bytes per stored code of ``nbits`` bits: ``ceil(nbits / 8)`` rounded up to 8."""
    if isinstance(nbits, bool) or not isinstance(nbits, (int, np.integer)) or nbits < 1:
        raise ValueError(f"nbits must be an int >= 1, got {nbits!r}")
    return (int(nbits) + 63) // 64 * 8


def threshold_bits(r: Any, threshold: float = 0.5) -> np.ndarray:
    """Bits ``(n, L)`` uint8 0 / 1 of outputs ``r``: 1 where ``r >= threshold`` (paper 002's
    ``sgn(r - 0.5)`` with ``sgn(0) = +1``; -1 is stored as 0)."""
    if type(r).__module__.startswith("torch"):
        r = r.detach().float().cpu().numpy()
    a = np.asarray(r, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"hash outputs must be 2-D (n, bits), got shape {a.shape}")
    return (a >= threshold).astype(np.uint8)


def pack_bits(bits: Any, *, stride: int | None = None) -> np.ndarray:
    """Pack 0 / 1 bits ``(n, L)`` into uint8 codes ``(n, stride)`` (MSB first, zero padded;
    ``stride`` default :func:`code_stride` of ``L``), C-contiguous."""
    b = np.asarray(bits)
    if b.ndim != 2:
        raise ValueError(f"bits must be 2-D (n, nbits), got shape {b.shape}")
    if b.size and not np.isin(b, (0, 1)).all():
        raise ValueError("bits must hold only 0 and 1")
    n, L = b.shape
    s = code_stride(L) if stride is None else int(stride)
    nbytes = (L + 7) // 8
    if s < nbytes:
        raise ValueError(f"stride {s} is smaller than the {nbytes} bytes of {L} bits")
    out = np.zeros((n, s), dtype=np.uint8)
    if L:
        out[:, :nbytes] = np.packbits(b.astype(np.uint8), axis=1, bitorder="big")
    return out


def unpack_bits(codes: Any, nbits: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: uint8 bits ``(n, nbits)``."""
    c = np.asarray(codes, dtype=np.uint8)
    if c.ndim != 2:
        raise ValueError(f"codes must be 2-D (n, stride), got shape {c.shape}")
    return np.unpackbits(c, axis=1, bitorder="big")[:, :nbits]
