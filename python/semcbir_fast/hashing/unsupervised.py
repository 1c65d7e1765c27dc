"""Unsupervised hashing of float descriptors: PCA-sign and ITQ (Gong et al., "Iterative
quantization: a procrustean approach to learning binary codes", TPAMI 2013; paper 002's
reference [12]). They need no labels: fitted on a training set of any float signature
(e.g. the backbone's global descriptors), they map a descriptor to ``bits`` bits.

- PCA-sign: centre with the training mean, project on the ``bits`` leading principal
  directions, bit = (projection >= 0).
- ITQ: the same projection ``V``, then the orthogonal rotation ``R`` minimising the
  quantisation loss ``||B - V R||_F^2`` over ``B`` in {-1, 1}: alternately ``B = sgn(V R)``
  and ``R`` = the orthogonal Procrustes solution (``U W^T`` of the SVD ``U S W^T`` of
  ``V^T B``), from a random orthogonal ``R`` (seeded), ``iterations`` times (50 in the
  paper).

Codes are packed like every binary code of the library (:func:`~.codes.pack_bits`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .codes import pack_bits

__all__ = ["ITQ", "PCASign"]


def _as_matrix(x: Any, name: str) -> np.ndarray:
    if type(x).__module__.startswith("torch"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, dim), got shape {a.shape}")
    if a.size and not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite (NaN or inf found)")
    return a


@dataclass
class PCASign:
    """PCA-sign hashing to ``bits`` bits (see the module docstring).

    >>> h = PCASign(bits=16).fit(train_vectors)           # doctest: +SKIP
    >>> codes = h.encode(vectors)                         # uint8 (n, 8)
    """

    bits: int = 48
    mean: np.ndarray | None = field(default=None, repr=False)
    projection: np.ndarray | None = field(default=None, repr=False)

    def _check_fit_input(self, x: Any) -> np.ndarray:
        a = _as_matrix(x, "training vectors")
        b = self.bits
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise ValueError(f"bits must be an int >= 1, got {b!r}")
        if a.shape[0] < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 training vectors, got "
                             f"{a.shape[0]}")
        if b > min(a.shape[1], a.shape[0] - 1):
            raise ValueError(f"bits={b} needs at least {b} dimensions and {b + 1} training "
                             f"vectors, got {a.shape[1]} dimensions and {a.shape[0]} vectors")
        return a

    def _pca(self, a: np.ndarray) -> None:
        self.mean = a.mean(axis=0)
        c = a - self.mean
        # right singular vectors = principal directions, by decreasing variance
        _, _, vt = np.linalg.svd(c, full_matrices=False)
        p = vt[: self.bits].T
        # a deterministic sign per direction (the largest-magnitude entry positive)
        sign = np.sign(p[np.abs(p).argmax(axis=0), np.arange(p.shape[1])])
        self.projection = p * np.where(sign == 0, 1.0, sign)

    def fit(self, x: Any) -> PCASign:
        """Learn the mean and the principal directions; returns ``self``."""
        self._pca(self._check_fit_input(x))
        return self

    @property
    def fitted(self) -> bool:
        return self.projection is not None

    def project(self, x: Any) -> np.ndarray:
        """Real-valued codes ``(n, bits)`` before the sign."""
        if self.projection is None or self.mean is None:
            raise ValueError(f"{type(self).__name__} is not fitted (call fit first)")
        a = _as_matrix(x, "vectors")
        if a.shape[1] != self.mean.shape[0]:
            raise ValueError(f"vectors have dim {a.shape[1]}, the hasher was fitted on "
                             f"{self.mean.shape[0]}")
        return (a - self.mean) @ self.projection

    def encode(self, x: Any) -> np.ndarray:
        """uint8 codes ``(n, stride)``: bit = (projection >= 0), MSB first."""
        return pack_bits((self.project(x) >= 0).astype(np.uint8))


@dataclass
class ITQ(PCASign):
    """Iterative quantisation to ``bits`` bits (see the module docstring); ``seed`` fixes
    the random initial rotation."""

    iterations: int = 50
    seed: int = 0
    rotation: np.ndarray | None = field(default=None, repr=False)
    losses: list[float] = field(default_factory=list, repr=False)

    def fit(self, x: Any) -> ITQ:
        a = self._check_fit_input(x)
        self._pca(a)
        assert self.projection is not None and self.mean is not None
        v = (a - self.mean) @ self.projection
        rng = np.random.default_rng(self.seed)
        r, _ = np.linalg.qr(rng.standard_normal((self.bits, self.bits)))
        self.losses = []
        for _ in range(int(self.iterations)):
            z = v @ r
            b = np.where(z >= 0, 1.0, -1.0)
            self.losses.append(float(((b - z) ** 2).sum()))
            u, _, wt = np.linalg.svd(v.T @ b)
            r = u @ wt
        self.rotation = r
        return self

    @property
    def fitted(self) -> bool:
        return self.rotation is not None

    def project(self, x: Any) -> np.ndarray:
        if self.rotation is None:
            raise ValueError("ITQ is not fitted (call fit first)")
        return super().project(x) @ self.rotation
