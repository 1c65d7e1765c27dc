"""PCA whitening of global descriptors (Jegou and Chum, "Negative evidences and
co-occurrences in image retrieval", ECCV 2012), learned on a set of descriptors.

``fit``: mean ``mu`` and the eigen-decomposition ``C = U diag(lambda) U^T`` of the
covariance of the training descriptors (float64); the ``dim`` leading components are kept.
``transform``: ``x -> ((x - mu) U_d) / sqrt(lambda_d + eps)``, then (by default) L2
normalisation, as in the CroW and R-MAC pipelines (L2 -> whiten -> L2).

Learn it on descriptors that are not the evaluation queries when the numbers are to be
reported (e.g. another data set); fitting on the database itself is transductive.
NumPy in, NumPy out (torch tensors are accepted and converted).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from semcbir_fast._convert import check_int, to_numpy

__all__ = ["PCAWhitening", "fit_pca_whitening"]


def _matrix(x: Any, name: str) -> np.ndarray:
    a = np.asarray(to_numpy(x))
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2:
        raise ValueError(f"{name} must be (N, D) descriptors, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float32)
    return a


@dataclass(frozen=True)
class PCAWhitening:
    """A learned PCA whitening (see the module docstring).

    Attributes
    ----------
    mean : numpy.ndarray
        ``(D,)`` float64 mean of the training descriptors.
    components : numpy.ndarray
        ``(D, d)`` float64 principal directions, by decreasing variance.
    eigenvalues : numpy.ndarray
        ``(d,)`` float64 variances along them.
    eps : float
        Added to the eigenvalues before the square root.
    """

    mean: np.ndarray
    components: np.ndarray
    eigenvalues: np.ndarray
    eps: float

    @property
    def dim(self) -> int:
        """Output dimension ``d``."""
        return int(self.components.shape[1])

    def transform(self, x: Any, *, normalize: bool = True) -> np.ndarray:
        """Whiten ``(N, D)`` (or ``(D,)``) descriptors to ``(N, d)`` float32 (L2-normalised
        rows unless ``normalize=False``)."""
        a = _matrix(x, "x")
        if a.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"x must have D={self.mean.shape[0]} columns like the training descriptors, "
                f"got shape {a.shape}"
            )
        proj = self.components / np.sqrt(self.eigenvalues + self.eps)
        y = (a.astype(np.float64) - self.mean) @ proj
        if normalize:
            y /= np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
        y = y.astype(np.float32)
        return y[0] if np.ndim(x) == 1 else y

    __call__ = transform


def fit_pca_whitening(x: Any, *, dim: int | None = None, eps: float = 1e-9) -> PCAWhitening:
    """Learn a :class:`PCAWhitening` from ``(N, D)`` training descriptors.

    Parameters
    ----------
    x : array-like
        ``(N, D)`` descriptors, N >= 2 (typically already L2-normalised).
    dim : int, optional
        Components kept; default ``min(D, N - 1)`` (the rank of the centred data: the
        other directions have no variance to whiten).
    eps : float
        Regulariser added to the eigenvalues, >= 0.

    Raises
    ------
    ValueError
        Fewer than 2 descriptors, ``dim`` outside ``1..min(D, N - 1)``, or ``eps < 0``.
    """
    a = _matrix(x, "x").astype(np.float64)
    n, d_in = a.shape
    if n < 2:
        raise ValueError(f"x must hold at least 2 descriptors to fit a whitening, got {n}")
    rank = min(d_in, n - 1)
    if dim is None:
        dim = rank
    dim = check_int(dim, "dim", 1, rank, hint=" (at most min(D, N - 1))")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")
    mean = a.mean(axis=0)
    c = a - mean
    cov = c.T @ c / n
    lam, u = np.linalg.eigh(cov)
    order = np.argsort(lam)[::-1][:dim]
    lam = np.clip(lam[order], 0.0, None)
    return PCAWhitening(mean=mean, components=u[:, order], eigenvalues=lam, eps=float(eps))
