"""SBoVP phrase matrices: the CSR container :class:`PhraseSignatures` and the C++ step that
links keypoints into phrases and counts word pairs (SBoVP step 4, SPEC.md section 3.4).

Sparse layout: one row per image and ``L * L`` columns (``+ M`` with the appended semantic
histogram): column ``i * L + j`` (``0 <= i <= j < L``) holds ``H[i, j]``; indices int64,
strictly increasing within a row; values float32 (exact counts before normalisation).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .. import _backend
from .._convert import check_int as _index
from .._convert import check_threads, to_numpy
from .._serialize import read_npz, write_npz
from ..sparse_l2 import csr_rows

__all__ = ["NORMS", "PhraseSignatures", "build_phrase_signatures"]

#: Row normalisations of phrase matrices.
NORMS = ("l2", "l1", "hellinger", None)
_SIG_FORMAT = "semcbir_fast.phrase_signatures/1"
_NORMS = NORMS


@dataclass
class PhraseSignatures:
    """SBoVP signatures of a batch of images: a CSR matrix, one row per image.

    Attributes
    ----------
    indptr : numpy.ndarray
        int64 ``(N + 1,)``.
    indices : numpy.ndarray
        int64 ``(nnz,)``: ``i * L + j`` with ``i <= j``, strictly increasing per row.
    data : numpy.ndarray
        float32 ``(nnz,)``: ``H[i, j]`` (counts, or normalised values).
    n_words : int
        Number of words indexing the matrix (the matrix has ``n_words ** 2`` columns): the
        vocabulary size ``L``, or ``num_classes * L`` with semantic words.
    n : int
        Phrase length used to build it.
    normalize : {"l2", "l1", "hellinger", None}
        Normalisation applied to every non-empty row.
    num_classes : int
        0 for plain visual words (SPEC.md); ``M`` when the words are semantic visual words
        ``class * L + word`` (see :func:`sbovp_signatures`).
    histogram_classes : int
        0, or ``M`` when the semantic histogram is appended (:func:`append_histograms`):
        columns ``n_words ** 2 + c`` then hold ``w * sqrt(P_c)`` (before the final row
        normalisation).
    histogram_weight : float
        ``w`` of the appended histogram (0 without one).
    histograms : numpy.ndarray or None
        Optional float32 ``(N, M)`` semantic histograms of the images (what the histogram
        filter and an index need beside the signatures); kept through row selection.
    """

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    n_words: int
    n: int = 2
    normalize: str | None = None
    num_classes: int = 0
    histogram_classes: int = 0
    histogram_weight: float = 0.0
    histograms: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.indptr = np.ascontiguousarray(self.indptr, dtype=np.int64).reshape(-1)
        self.indices = np.ascontiguousarray(self.indices, dtype=np.int64).reshape(-1)
        self.data = np.ascontiguousarray(self.data, dtype=np.float32).reshape(-1)
        if self.indptr.size < 1 or self.indptr[0] != 0 or self.indptr[-1] != self.indices.size \
                or self.indices.size != self.data.size:
            raise ValueError("PhraseSignatures: inconsistent CSR arrays (indptr, indices, data)")
        if self.normalize not in _NORMS:
            raise ValueError(f"normalize must be one of {_NORMS}, got {self.normalize!r}")
        if self.histograms is not None:
            self.histograms = np.ascontiguousarray(self.histograms, dtype=np.float32)
            if self.histograms.ndim != 2 or self.histograms.shape[0] != len(self):
                raise ValueError(f"PhraseSignatures: histograms must be ({len(self)}, M), "
                                 f"got shape {self.histograms.shape}")

    def __len__(self) -> int:
        return int(self.indptr.size - 1)

    @property
    def shape(self) -> tuple[int, int]:
        """``(N, L * L + histogram_classes)``."""
        return (len(self), self.n_words * self.n_words + self.histogram_classes)

    @property
    def nnz(self) -> int:
        return int(self.indices.size)

    def __getitem__(self, rows: Any) -> PhraseSignatures:
        """The signatures of ``rows`` (an int, a slice or an index array), as a new batch."""
        idx = np.atleast_1d(np.arange(len(self))[rows])
        indptr, indices, data = csr_rows(self.indptr, self.indices, self.data, idx)
        hist = None if self.histograms is None else self.histograms[idx]
        return replace(self, indptr=indptr, indices=indices, data=data, histograms=hist)

    def to_scipy(self) -> Any:
        """A ``scipy.sparse.csr_matrix`` of shape :attr:`shape` (needs SciPy)."""
        import scipy.sparse as sp

        return sp.csr_matrix((self.data, self.indices, self.indptr), shape=self.shape)

    def to_dense(self, row: int) -> np.ndarray:
        """The upper-triangular ``(L, L)`` float32 matrix ``H`` of one image (without the
        appended histogram columns)."""
        r = _index(row, "row", -len(self), len(self) - 1) % len(self)
        if self.n_words > 8192:
            raise ValueError(f"to_dense: a {self.n_words} x {self.n_words} matrix is too large; "
                             "use to_scipy() or the CSR arrays")
        out = np.zeros(self.n_words * self.n_words, dtype=np.float32)
        s, e = self.indptr[r], self.indptr[r + 1]
        keep = self.indices[s:e] < out.size
        out[self.indices[s:e][keep]] = self.data[s:e][keep]
        return out.reshape(self.n_words, self.n_words)

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``(meta, arrays)``: the serialisation shared by :meth:`save` and the index
        container (:mod:`semcbir_fast._serialize`)."""
        meta = {"n_words": int(self.n_words), "n": int(self.n), "normalize": self.normalize,
                "num_classes": int(self.num_classes),
                "histogram_classes": int(self.histogram_classes),
                "histogram_weight": float(self.histogram_weight)}
        return meta, {"indptr": self.indptr, "indices": self.indices, "data": self.data}

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> PhraseSignatures:
        """Inverse of :meth:`to_state` (``ValueError`` for missing, mistyped or inconsistent
        contents: the input may come from a damaged or crafted file, so the CSR structure
        and the values are checked too)."""
        try:
            ip, ix, dt = arrays["indptr"], arrays["indices"], arrays["data"]
            n_words = _index(meta["n_words"], "phrase signatures: n_words", 1, 2**31 - 1)
            n = _index(meta["n"], "phrase signatures: n", 2, 4)
            m = _index(meta.get("num_classes", 0), "phrase signatures: num_classes", 0, 65536)
            hc = _index(meta.get("histogram_classes", 0), "phrase signatures: "
                        "histogram_classes", 0, 65536)
            hw = meta.get("histogram_weight", 0.0)
            if isinstance(hw, bool) or not isinstance(hw, (int, float)) \
                    or not math.isfinite(float(hw)) or hw < 0:
                raise ValueError(f"phrase signatures: bad histogram_weight {hw!r}")
            normalize = meta.get("normalize") or None
        except KeyError as exc:
            raise ValueError(f"phrase signatures: missing field {exc}") from None
        except OverflowError:
            raise ValueError(f"phrase signatures: bad histogram_weight {hw!r}") from None
        for name, a, kinds in (("indptr", ip, "iu"), ("indices", ix, "iu"), ("data", dt, "fiu")):
            if a.ndim != 1 or a.dtype.kind not in kinds:
                raise ValueError(f"phrase signatures: {name} must be a 1-D array of numbers, "
                                 f"got {a.dtype} {a.shape}")
        if m and n_words % m:
            raise ValueError(f"phrase signatures: {n_words} semantic words are not a multiple "
                             f"of {m} classes")
        out = cls(ip, ix, dt, n_words, n, normalize, m, hc, float(hw))
        ip, ix = out.indptr, out.indices
        cols = out.shape[1]
        if np.any(ip[1:] < ip[:-1]):
            raise ValueError("phrase signatures: indptr is not non-decreasing")
        if ix.size and (ix.min() < 0 or ix.max() >= cols):
            raise ValueError(f"phrase signatures: column indices outside [0, {cols})")
        down = np.flatnonzero(ix[1:] <= ix[:-1]) + 1
        if down.size and not np.isin(down, ip).all():
            raise ValueError("phrase signatures: column indices are not increasing within "
                             "a row")
        if not np.isfinite(out.data).all():
            raise ValueError("phrase signatures: values that are not finite")
        return out

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write to an ``.npz`` file."""
        write_npz(path, _SIG_FORMAT, *self.to_state())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PhraseSignatures:
        """Read a file written by :meth:`save` (``ValueError`` for a file that is not one, or
        is damaged: see :mod:`semcbir_fast._serialize`)."""
        meta, arrays = read_npz(path, _SIG_FORMAT, "phrase-signature",
                                ("indptr", "indices", "data", "n_words", "n"))
        try:
            return cls.from_state(meta, arrays)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

    def check_compatible(self, other: PhraseSignatures) -> None:
        """``ValueError`` unless ``self`` (queries) and ``other`` (database) were built the
        same way (words, normalisation, semantic classes, phrase length, histogram)."""
        qs, ds = self, other
        if qs.n_words != ds.n_words:
            raise ValueError(f"queries use {qs.n_words} words, database {ds.n_words}")
        if qs.normalize != ds.normalize:
            raise ValueError(
                f"queries are normalised with {qs.normalize!r} but database with "
                f"{ds.normalize!r}; build both with the same normalize")
        if qs.num_classes != ds.num_classes:
            raise ValueError(f"queries use num_classes={qs.num_classes} semantic words, "
                             f"database {ds.num_classes} (0 = plain words); build both the "
                             "same way")
        if qs.n != ds.n:
            raise ValueError(f"queries use phrases of n={qs.n} words, database n={ds.n}; "
                             "build both with the same n")
        if (qs.histogram_classes, qs.histogram_weight) != (ds.histogram_classes,
                                                           ds.histogram_weight):
            raise ValueError(
                f"queries carry a histogram of {qs.histogram_classes} classes with weight "
                f"{qs.histogram_weight:g}, the database {ds.histogram_classes} with "
                f"{ds.histogram_weight:g}; build both with the same histogram_weight")


def build_phrase_signatures(
    xy: Sequence[Any],
    words: Sequence[Any],
    classes: Sequence[Any],
    n_words: int,
    *,
    n: int = 2,
    threads: int = 0,
) -> PhraseSignatures:
    """Raw phrase-count matrices from keypoints already labelled (the C++ step).

    Parameters
    ----------
    xy : sequence of array-like
        Per image, ``(n_i, 2)`` keypoint coordinates.
    words : sequence of array-like
        Per image, ``(n_i,)`` word ids in ``[0, n_words)``.
    classes : sequence of array-like
        Per image, ``(n_i,)`` class ids; negative = void (the keypoint is in no region).
    n_words : int
        Vocabulary size ``L``.
    n : int
        Phrase length, 2..4 (SPEC.md section 3.4).
    threads : int
        0 = all cores; the result never depends on it.

    Returns
    -------
    PhraseSignatures
        Unnormalised counts.
    """
    n_words = _index(n_words, "n_words", 1, 2**31 - 1)
    n = _index(n, "n", 2, 4)
    t = check_threads(threads)
    if not (len(xy) == len(words) == len(classes)):
        raise ValueError(f"xy, words and classes need one entry per image, got "
                         f"{len(xy)}, {len(words)} and {len(classes)}")
    xs, ws, cs = [], [], []
    for i, (a, b, c) in enumerate(zip(xy, words, classes)):
        a = np.ascontiguousarray(to_numpy(a), dtype=np.float32)
        if a.size == 0:
            a = a.reshape(0, 2)
        if a.ndim != 2 or a.shape[1] != 2:
            raise ValueError(f"xy[{i}] must be (n, 2), got shape {a.shape}")
        b = np.asarray(to_numpy(b))
        c = np.asarray(to_numpy(c))
        for name, arr in (("words", b), ("classes", c)):
            if arr.size and arr.dtype.kind not in "iu":
                raise ValueError(f"{name}[{i}] must be integers, got dtype {arr.dtype}")
            if arr.reshape(-1).shape[0] != a.shape[0]:
                raise ValueError(f"{name}[{i}] must have one entry per keypoint "
                                 f"({a.shape[0]}), got shape {arr.shape}")
        b = b.reshape(-1)
        if b.size and (b.min() < 0 or b.max() >= n_words):
            raise ValueError(f"words[{i}] must be in [0, {n_words}), got values in "
                             f"[{b.min()}, {b.max()}]; use words from a vocabulary of that size")
        c = c.reshape(-1).astype(np.int64)
        c = np.where((c < 0) | (c > np.iinfo(np.int32).max), -1, c)
        xs.append(a)
        ws.append(np.ascontiguousarray(b, dtype=np.int32))
        cs.append(np.ascontiguousarray(c, dtype=np.int32))
    try:
        indptr, indices, data = _backend.core().build_phrase_matrices(xs, ws, cs, n_words, n, t)
    except ValueError as exc:  # from std::invalid_argument (e.g. non-finite coordinates)
        raise ValueError(f"build_phrase_signatures: {exc}") from None
    return PhraseSignatures(indptr, indices, data, n_words, n, None)
