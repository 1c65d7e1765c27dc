"""Exact Hamming top-k of SBS codes on a torch device (``SBSIndex(..., device="cuda")``).

:class:`DeviceCodes` uploads the codes once, dense (``(N, stride / 8)`` int64 words) or sparse
(:class:`~semcbir_fast.sparse_sbs.SparseSBSCodes`: entries, their rows and the popcounts), and
answers k-NN queries with exactly the results of :func:`~semcbir_fast.hamming_topk`, ties
included: every candidate is ranked by the unique int64 key ``distance << 32 | row``, so
``torch.topk`` on the keys orders by distance, then by the smaller row, whatever the device.

- dense: XOR of the query words with a block of rows, SWAR popcount (torch has no popcount
  op), sum over the words, then the keys' top-k merged block by block;
- sparse: a per-query weight table indexed by the entry value (``(cell << 2) | (level - 1)``,
  ``w = presence(q) + popcount(nibble(q) & thermometer(level))``) gathered for every entry and
  summed per row (``index_add_``): ``d = |q| + |row| - 2 |q AND row|``.

The same code runs on CPU tensors (``device="cpu"``), which is how the tests check its logic
on a machine without CUDA; ``bench/gpu_run.sh bench-sparse-gpu`` measures it on a GPU. torch is
imported lazily.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..sparse_sbs import SparseSBSCodes

__all__ = ["DeviceCodes", "popcount64"]

_M1 = 0x5555555555555555
_M2 = 0x3333333333333333
_M4 = 0x0F0F0F0F0F0F0F0F
_H01 = 0x0101010101010101
_MAX_TEMP = 1 << 26  # int64 elements of one temporary (512 MB)
_INT32_MAX = np.iinfo(np.int32).max


def popcount64(x: Any) -> Any:
    """Set bits of each int64 of the tensor ``x`` (two's complement), as int64."""
    x = x - ((x >> 1) & _M1)  # >> is arithmetic; the masks drop the copied sign bits
    x = (x & _M2) + ((x >> 2) & _M2)
    x = (x + (x >> 4)) & _M4
    return (x * _H01) >> 56  # wraps; the top byte is the count (<= 64)


def _query_weights(q: np.ndarray, layout: Any) -> tuple[np.ndarray, np.ndarray]:
    """(popcounts int64 (nq,), weights int32 (nq, 4 * cells)) of dense queries (any bits)."""
    bits = np.unpackbits(q, axis=1)
    pres, nib = [], []
    for off, nb in zip(layout.level_offsets, layout.level_blocks):
        c = layout.num_classes * nb
        pres.append(bits[:, off:off + c])
        nib.append(bits[:, off + c:off + 5 * c].reshape(q.shape[0], c, 4))
    p = np.concatenate(pres, axis=1)
    w = p[:, :, None].astype(np.int32) + np.cumsum(np.concatenate(nib, axis=1), axis=2,
                                                   dtype=np.int32)
    return bits.sum(axis=1, dtype=np.int64), w.reshape(q.shape[0], -1)


class DeviceCodes:
    """Codes resident on ``device`` and their exact top-k search.

    Parameters
    ----------
    codes : numpy.ndarray or SparseSBSCodes
        Dense uint8 ``(N, stride)`` codes (stride a multiple of 8) or sparse codes.
    device : str
        A torch device (``"cuda"``, ``"cuda:1"``, ``"cpu"``).
    """

    def __init__(self, codes: Any, device: str = "cuda") -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device={device!r}: torch sees no CUDA device "
                               f"(torch {torch.__version__}); use device='cpu'")
        self.sparse = isinstance(codes, SparseSBSCodes)
        if self.sparse:
            sp: SparseSBSCodes = codes
            self.layout = sp.layout
            self.n = len(sp)
            lengths = np.diff(sp.offsets)
            self.entries = torch.from_numpy(sp.entries.astype(np.int64)).to(self.device)
            self.rows = torch.repeat_interleave(
                torch.arange(self.n, device=self.device),
                torch.from_numpy(lengths).to(self.device))
            self.pop = torch.from_numpy(sp.popcounts.astype(np.int64)).to(self.device)
            self.stride = sp.layout.stride
        else:
            arr = np.ascontiguousarray(codes, dtype=np.uint8)
            if arr.ndim != 2 or arr.shape[1] % 8:
                raise ValueError(f"codes must be (N, stride) uint8 with stride a multiple of 8, "
                                 f"got shape {arr.shape}")
            self.n, self.stride = arr.shape
            self.words = torch.from_numpy(arr.view(np.int64)).to(self.device)

    def nbytes(self) -> int:
        """Device bytes held."""
        if self.sparse:
            return int(self.entries.numel() * 8 + self.rows.numel() * 8 + self.pop.numel() * 8)
        return int(self.words.numel() * 8)

    def _topk_keys(self, dist: Any, first_row: int, kk: int, best: Any) -> Any:
        """Merge the keys of ``dist`` (nq, rows) into ``best`` (nq, <= kk) keys."""
        torch = self.torch
        rows = torch.arange(first_row, first_row + dist.shape[1], device=self.device)
        keys = (dist.to(torch.int64) << 32) | rows[None, :]
        if best is not None:
            keys = torch.cat([best, keys], dim=1)
        m = min(kk, keys.shape[1])
        return torch.topk(keys, m, dim=1, largest=False, sorted=True).values

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(distances int32, ids int64)`` ``(nq, k)``, equal to ``hamming_topk``'s."""
        q = np.ascontiguousarray(queries, dtype=np.uint8)
        if q.ndim != 2 or q.shape[1] != self.stride:
            raise ValueError(f"queries must be (nq, {self.stride}) uint8, got {q.shape}")
        nq = q.shape[0]
        out_d = np.full((nq, k), _INT32_MAX, dtype=np.int32)
        out_i = np.full((nq, k), -1, dtype=np.int64)
        kk = min(k, self.n)
        if nq == 0 or kk == 0:
            return out_d, out_i
        best = self._search_sparse(q, kk) if self.sparse else self._search_dense(q, kk)
        keys = best.cpu().numpy()
        out_d[:, :kk] = (keys >> 32).astype(np.int32)
        out_i[:, :kk] = keys & 0xFFFFFFFF
        return out_d, out_i

    def _search_dense(self, q: np.ndarray, kk: int) -> Any:
        torch = self.torch
        qw = torch.from_numpy(q.view(np.int64)).to(self.device)
        words = self.words.shape[1]
        nq = qw.shape[0]
        rows = max(1, _MAX_TEMP // max(1, nq * words))
        best = None
        for r0 in range(0, self.n, rows):
            block = self.words[r0:r0 + rows]
            dist = popcount64(qw[:, None, :] ^ block[None, :, :]).sum(dim=2)
            best = self._topk_keys(dist, r0, kk, best)
        return best

    def _search_sparse(self, q: np.ndarray, kk: int) -> Any:
        torch = self.torch
        pq, w = _query_weights(q, self.layout)
        weights = torch.from_numpy(w).to(self.device)
        pqt = torch.from_numpy(pq).to(self.device)
        nq = q.shape[0]
        acc = torch.zeros((nq, self.n), dtype=torch.int64, device=self.device)
        step = max(1, _MAX_TEMP // nq)
        for p0 in range(0, int(self.entries.numel()), step):
            e = self.entries[p0:p0 + step]
            acc.index_add_(1, self.rows[p0:p0 + step], weights[:, e].to(torch.int64))
        dist = pqt[:, None] + self.pop[None, :] - 2 * acc
        best = None
        rows = max(1, _MAX_TEMP // nq)
        for r0 in range(0, self.n, rows):
            best = self._topk_keys(dist[:, r0:r0 + rows], r0, kk, best)
        return best
