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

__all__ = ["PCAWhitening", "fit_pca", "fit_pca_whitening"]


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
    #: False: plain PCA (project onto the components, no division by ``sqrt(lambda)``).
    whiten: bool = True

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
        proj = (self.components / np.sqrt(self.eigenvalues + self.eps) if self.whiten
                else self.components)
        y = (a.astype(np.float64) - self.mean) @ proj
        if normalize:
            y /= np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
        y = y.astype(np.float32)
        return y[0] if np.ndim(x) == 1 else y

    __call__ = transform

    def to_state(self) -> tuple[dict[str, Any], list[tuple[str, np.ndarray]]]:
        """``(JSON-ready settings, named float64 arrays)`` for an index file."""
        meta = {"eps": self.eps, "whiten": self.whiten, "dim": self.dim,
                "input_dim": int(self.mean.shape[0])}
        return meta, [("mean", self.mean), ("components", self.components),
                      ("eigenvalues", self.eigenvalues)]

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> PCAWhitening:
        """Inverse of :meth:`to_state` (shapes checked)."""
        d_in, dim = int(meta["input_dim"]), int(meta["dim"])
        mean = np.asarray(arrays["mean"], dtype=np.float64).reshape(d_in)
        comp = np.asarray(arrays["components"], dtype=np.float64).reshape(d_in, dim)
        lam = np.asarray(arrays["eigenvalues"], dtype=np.float64).reshape(dim)
        return cls(mean=mean.copy(), components=comp.copy(), eigenvalues=lam.copy(),
                   eps=float(meta["eps"]), whiten=bool(meta.get("whiten", True)))


def fit_pca_whitening(x: Any, *, dim: int | None = None, eps: float = 1e-9,
                      whiten: bool = True) -> PCAWhitening:
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
    whiten : bool
        False: a plain PCA projection (:func:`fit_pca`).

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
    if n < d_in:  # fewer samples than dimensions: the SVD of the data is cheaper
        _, sv, vt = np.linalg.svd(c, full_matrices=False)
        u, lam = vt.T, sv ** 2 / n
    else:
        lam, u = np.linalg.eigh(c.T @ c / n)
    order = np.argsort(lam, kind="stable")[::-1][:dim]
    lam = np.clip(lam[order], 0.0, None)
    return PCAWhitening(mean=mean, components=u[:, order], eigenvalues=lam, eps=float(eps),
                        whiten=bool(whiten))


def fit_pca(x: Any, *, dim: int | None = None) -> PCAWhitening:
    """A plain PCA projection to ``dim`` components (centred, not whitened), learned from
    ``(N, D)`` descriptors: :func:`fit_pca_whitening` with ``whiten=False``. Its transform
    L2-normalises the projected rows by default (paper 004 section 2.4: "PCA and L2")."""
    return fit_pca_whitening(x, dim=dim, whiten=False)
