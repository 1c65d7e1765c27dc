"""Semantic Bag of Visual Phrases (SBoVP) — paper 000 section 3.2, SPEC.md section 3.

Pipeline (each step is a public function, so that any step can be replaced):

1. :func:`semcbir_fast.features.extract_features` — keypoints and descriptors (KAZE default);
2. :class:`Vocabulary` — k-means visual words, fitted on *another* image set than the one
   searched (the paper fits on Pascal VOC), saved and loaded as an object of its own;
3. :func:`keypoint_classes` — the semantic class under each keypoint (label map coordinates
   scaled when its size differs from the image's);
4. :func:`build_phrase_signatures` (C++) — inside every class region each keypoint is linked
   to its ``n - 1`` nearest neighbours (exact search), and each phrase increments the
   upper-triangular ``L x L`` matrix at every pair of its words;
5. :func:`phrase_l2_topk` (C++) — exact L2 search between the sparse matrices.

:func:`sbovp_signatures` runs steps 3-4 (+ optional normalisation) for a batch.

Extensions (off by default; SPEC.md's signature is the plain ``L x L`` matrix): semantic
visual words (``sbovp_signatures(..., semantic_words=True)``: every word tagged with its
region's class, so the signature carries the semantics and not only the linking), and the
semantic-histogram filter of paper 001 in front of the ranking
(:func:`semcbir_fast.hybrid.histogram_filter`). Both rank much better than the plain form;
the measured numbers are in the README.

Sparse layout
-------------
A :class:`PhraseSignatures` is a CSR matrix with one row per image and ``L * L`` columns:
column ``i * L + j`` (``0 <= i <= j < L``, row-major index into the full matrix; only the upper
triangle occurs) holds ``H[i, j]``. Indices are int64 and strictly increasing within a row,
values float32 (exact phrase counts before normalisation).

Definitions fixed here (SPEC.md leaves them open)
-------------------------------------------------
- Neighbours: squared Euclidean distance on keypoint ``(x, y)`` computed in float64, ties
  broken by the smaller keypoint index (the order of the :class:`~semcbir_fast.features.Features`).
- A region with ``m`` keypoints, ``2 <= m < n``: every keypoint links to all ``m - 1`` others
  (phrases of ``m`` words). A region with a single keypoint makes no phrase, and neither do
  keypoints on void pixels. An image without phrases has an empty (all-zero) row.
- Every keypoint makes its own phrase, so two mutual nearest neighbours count their pair
  twice; a phrase of ``n`` words adds ``n (n - 1) / 2`` pairs (positions, not distinct words:
  equal words increment the diagonal).
- Distance: equation (3), ``sqrt(sum (H1 - H2)^2)`` over the upper triangle, in float64,
  returned as float32.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ._convert import check_int as _index
from ._convert import check_threads, to_numpy
from .features import DESCRIPTOR_METHODS, Features

__all__ = [
    "PhraseIndex",
    "PhraseSignatures",
    "Vocabulary",
    "append_histograms",
    "build_phrase_signatures",
    "keypoint_classes",
    "normalize_signatures",
    "phrase_l2_topk",
    "sbovp_signatures",
]

_NORMS = ("l2", "l1", "hellinger", None)
_VOCAB_FORMAT = "semcbir_fast.vocabulary/1"
_SIG_FORMAT = "semcbir_fast.phrase_signatures/1"


def _core() -> Any:
    """The module implementing the phrase kernels: the compiled core, or the numba fallback
    (``_numba_phrase``, identical results) with the numba backend or without the core."""
    from . import _backend

    core = _backend._core
    if _backend.backend() == "cpp" and core is not None and hasattr(core, "build_phrase_matrices"):
        return core
    try:
        from . import _numba_phrase
    except ImportError as exc:
        raise RuntimeError(
            "SBoVP needs the compiled core semcbir_fast._core (with the phrase module) or "
            f"numba for its fallback ({exc}); rebuild the core: `cmake --build build/dev` or "
            "`pip install .` with a C++17 compiler, or install numba") from exc
    return _numba_phrase


# ---------------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------------


def _descriptor_matrix(descriptors: Any) -> tuple[np.ndarray, str | None]:
    """Stack descriptors given as an array, Features, or a list of either; return the matrix
    and the method when known."""
    if isinstance(descriptors, Features):
        return descriptors.descriptors, descriptors.method
    descriptors = to_numpy(descriptors)
    if isinstance(descriptors, np.ndarray):
        if descriptors.ndim != 2:
            raise ValueError(f"descriptors must be 2-D (n, D), got shape {descriptors.shape}")
        return descriptors, None
    if isinstance(descriptors, Sequence) and not isinstance(descriptors, (str, bytes)):
        items = list(descriptors)
        if not items:
            raise ValueError("descriptors must not be an empty list")
        methods = {f.method for f in items if isinstance(f, Features)}
        if len(methods) > 1:
            raise ValueError(f"descriptors mix several methods: {sorted(methods)}")
        mats = [f.descriptors if isinstance(f, Features) else np.asarray(to_numpy(f))
                for f in items]
        dims = {m.shape[1] for m in mats if m.ndim == 2}
        dtypes = {m.dtype for m in mats}
        if any(m.ndim != 2 for m in mats) or len(dims) > 1 or len(dtypes) > 1:
            raise ValueError(
                "descriptors: every item must be a 2-D (n, D) array of the same D and dtype, "
                f"got dims {sorted(dims)} and dtypes {sorted(str(d) for d in dtypes)}")
        return np.concatenate(mats), (methods.pop() if methods else None)
    raise ValueError(
        "descriptors must be an (n, D) array, a Features or a list of them, "
        f"got {type(descriptors).__name__}")


def _as_float(x: np.ndarray, binary: bool) -> np.ndarray:
    """Binary descriptors -> their bits as float32 {0, 1} (squared L2 = Hamming distance)."""
    if binary:
        return np.unpackbits(np.ascontiguousarray(x, dtype=np.uint8), axis=1).astype(np.float32)
    return np.ascontiguousarray(x, dtype=np.float32)


def _faiss() -> Any | None:
    try:
        import faiss
    except ImportError:
        return None
    return faiss


@dataclass
class Vocabulary:
    """A visual vocabulary: ``L`` k-means centroids of local descriptors.

    Binary descriptors (ORB, AKAZE: packed uint8 bits) are unpacked to ``8 * bytes`` values
    in {0, 1} before clustering and assignment, so the k-means runs in L2 over bits, where
    the squared L2 distance of two descriptors is their Hamming distance; centroids are real
    valued (bit frequencies).

    Attributes
    ----------
    centroids : numpy.ndarray
        float32 ``(L, D')``, ``D' = D`` (float descriptors) or ``8 * D`` (binary).
    method : str or None
        Descriptor method the vocabulary was fitted on (None when fitted on bare arrays).
    descriptor_dim : int
        Width ``D`` of the descriptors it takes (values, or bytes when binary).
    binary : bool
        Whether it takes packed uint8 binary descriptors.
    info : dict
        How it was fitted (seed, iterations, training size, k-means backend).
    """

    centroids: np.ndarray
    method: str | None
    descriptor_dim: int
    binary: bool
    info: dict[str, Any]

    @property
    def n_words(self) -> int:
        """Number of visual words ``L``."""
        return int(self.centroids.shape[0])

    @classmethod
    def fit(
        cls,
        descriptors: Any,
        n_words: int,
        *,
        seed: int = 0,
        niter: int = 25,
        max_train: int | None = 250_000,
        backend: str = "auto",
        threads: int = 0,
        method: str | None = None,
    ) -> Vocabulary:
        """k-means vocabulary of ``n_words`` words.

        Parameters
        ----------
        descriptors
            ``(n, D)`` array, a :class:`~semcbir_fast.features.Features`, or a list of either
            (the training set: use images of *another* data set than the one searched).
        n_words : int
            ``L`` (>= 1, at most the number of training descriptors).
        seed : int
            Seed of the subsampling and of the k-means initialisation.
        niter : int
            k-means iterations.
        max_train : int or None
            At most this many descriptors (drawn uniformly with ``seed``) train the k-means.
        backend : {"auto", "faiss", "opencv"}
            k-means library: faiss (default when installed) or ``cv2.kmeans`` (k-means++ init).
        threads : int
            Threads of the k-means (0 = library default).
        method : str, optional
            Descriptor method, recorded for checks at assignment (taken from Features when
            given those).
        """
        x, found = _descriptor_matrix(descriptors)
        method = method if method is not None else found
        if method is not None and method not in DESCRIPTOR_METHODS:
            raise ValueError(f"method must be one of {DESCRIPTOR_METHODS} or None, got {method!r}")
        n_words = _index(n_words, "n_words", 1)
        seed = _index(seed, "seed", 0)
        niter = _index(niter, "niter", 1)
        t = check_threads(threads)
        binary = x.dtype == np.uint8
        if not binary and x.dtype.kind != "f":
            raise ValueError(
                f"descriptors must be float (KAZE/SIFT/SURF) or uint8 packed bits (ORB/AKAZE), "
                f"got dtype {x.dtype}")
        if x.shape[1] == 0:
            raise ValueError("descriptors must have at least one column")
        if x.shape[0] < n_words:
            raise ValueError(
                f"n_words={n_words} needs at least as many training descriptors, got "
                f"{x.shape[0]}; use fewer words or more training images")
        rng = np.random.default_rng(seed)
        if max_train is not None:
            max_train = _index(max_train, "max_train", n_words)
            if x.shape[0] > max_train:
                x = x[np.sort(rng.choice(x.shape[0], size=max_train, replace=False))]
        data = _as_float(x, binary)
        if not np.all(np.isfinite(data)):
            raise ValueError("descriptors must be finite (no NaN or infinity)")
        if backend not in ("auto", "faiss", "opencv"):
            raise ValueError(f"backend must be 'auto', 'faiss' or 'opencv', got {backend!r}")
        faiss = _faiss() if backend in ("auto", "faiss") else None
        if backend == "faiss" and faiss is None:
            raise ValueError("backend='faiss' needs faiss: pip install faiss-cpu (or use 'opencv')")
        if faiss is not None:
            used = "faiss"
            prev = faiss.omp_get_max_threads()
            if t:
                faiss.omp_set_num_threads(t)
            try:
                km = faiss.Kmeans(data.shape[1], n_words, niter=niter, seed=seed, verbose=False,
                                  max_points_per_centroid=data.shape[0] + 1,
                                  min_points_per_centroid=1)
                km.train(data)
                centroids = np.asarray(km.centroids, dtype=np.float32)
            finally:
                faiss.omp_set_num_threads(prev)
        else:
            from .features import _cv2

            cv2 = _cv2()
            used = "opencv"
            cv2.setRNGSeed(seed)
            crit = (cv2.TERM_CRITERIA_MAX_ITER + cv2.TERM_CRITERIA_EPS, niter, 1e-6)
            _, _, centroids = cv2.kmeans(data, n_words, None, crit, 1, cv2.KMEANS_PP_CENTERS)
            centroids = np.asarray(centroids, dtype=np.float32)
        info = {"seed": seed, "niter": niter, "n_train": int(data.shape[0]), "backend": used}
        return cls(np.ascontiguousarray(centroids), method, int(x.shape[1]), bool(binary), info)

    def _check(self, x: np.ndarray, method: str | None) -> None:
        if method is not None and self.method is not None and method != self.method:
            raise ValueError(
                f"this vocabulary was fitted on {self.method} descriptors, got {method} ones; "
                f"extract {self.method} features or fit a vocabulary on {method} descriptors")
        kind = "binary uint8" if self.binary else "float"
        got_binary = x.dtype == np.uint8
        if got_binary != self.binary or x.shape[1] != self.descriptor_dim:
            raise ValueError(
                f"this vocabulary takes {kind} descriptors of width {self.descriptor_dim} "
                f"({self.method or 'unknown method'}), got {x.dtype} descriptors of width "
                f"{x.shape[1]}; fit a vocabulary on descriptors of the same type")

    def assign(self, descriptors: Any, *, threads: int = 0) -> np.ndarray:
        """The nearest word (L2, equation 2 of paper 000) of each descriptor.

        Parameters
        ----------
        descriptors
            ``(n, D)`` array or :class:`~semcbir_fast.features.Features` (``n = 0`` allowed).
        threads : int
            Accepted for symmetry with :meth:`fit`; the assignment is one float32 matrix
            product per block, threaded by the BLAS library.

        Returns
        -------
        numpy.ndarray
            int32 ``(n,)`` word ids in ``[0, L)``.
        """
        x, method = _descriptor_matrix(descriptors)
        self._check(x, method)
        check_threads(threads)
        if x.shape[0] == 0:
            return np.zeros(0, dtype=np.int32)
        data = _as_float(x, self.binary)
        # argmin_j |x - c_j|^2 = argmin_j (|c_j|^2 - 2 x.c_j): one float32 GEMM per block
        # (BLAS; measured 2x faster than faiss.IndexFlatL2 for 500 x 1024 x 64).
        c = self.centroids
        cn = (c.astype(np.float64) ** 2).sum(axis=1).astype(np.float32)
        out = np.empty(data.shape[0], dtype=np.int32)
        step = max(1, (32 << 20) // (4 * c.shape[0]))
        for s in range(0, data.shape[0], step):
            d = data[s:s + step] @ c.T
            d *= -2.0
            d += cn
            out[s:s + step] = np.argmin(d, axis=1)
        return out

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the vocabulary to an ``.npz`` file (centroids + metadata)."""
        np.savez(Path(path), format=np.array(_VOCAB_FORMAT), centroids=self.centroids,
                 method=np.array(self.method or ""), descriptor_dim=np.int64(self.descriptor_dim),
                 binary=np.bool_(self.binary), seed=np.int64(self.info.get("seed", -1)),
                 niter=np.int64(self.info.get("niter", -1)),
                 n_train=np.int64(self.info.get("n_train", -1)),
                 backend=np.array(str(self.info.get("backend", ""))))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Vocabulary:
        """Read a vocabulary written by :meth:`save`."""
        try:
            z = np.load(Path(path), allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise ValueError(f"cannot read vocabulary {path}: {exc}") from None
        with z:
            need = {"format", "centroids", "method", "descriptor_dim", "binary"}
            if not need <= set(z.files) or str(z["format"]) != _VOCAB_FORMAT:
                raise ValueError(f"{path} is not a semcbir_fast vocabulary file ({_VOCAB_FORMAT})")
            c = np.ascontiguousarray(z["centroids"], dtype=np.float32)
            dim = int(z["descriptor_dim"])
            binary = bool(z["binary"])
            method = str(z["method"]) or None
            info = {k: (str(z[k]) if k == "backend" else int(z[k]))
                    for k in ("seed", "niter", "n_train", "backend") if k in z.files}
        if c.ndim != 2 or c.shape[0] < 1 or c.shape[1] != (8 * dim if binary else dim):
            raise ValueError(f"{path}: centroids of shape {c.shape} do not match "
                             f"descriptor_dim={dim}, binary={binary}")
        return cls(c, method, dim, binary, info)


# ---------------------------------------------------------------------------------------------
# Keypoint classes
# ---------------------------------------------------------------------------------------------


def keypoint_classes(
    xy: Any,
    image_size: tuple[int, int],
    label_map: Any,
    *,
    ignore_index: int | None = None,
    num_classes: int | None = None,
) -> np.ndarray:
    """The semantic class of the label-map pixel under each keypoint.

    Parameters
    ----------
    xy : array-like
        ``(n, 2)`` keypoint ``(x, y)`` in pixels of an image of size ``image_size``.
    image_size : (height, width)
        Size of the image the keypoints come from.
    label_map : array-like
        ``(H, W)`` integer class map. When its size differs from the image's, the pixel is
        ``(floor((y + 0.5) * H / height), floor((x + 0.5) * W / width))``, clipped to the map
        (the same formula gives the nearest pixel when the sizes agree).
    ignore_index, num_classes : int, optional
        Values that are void: negative ones, ``ignore_index``, and ``>= num_classes``.

    Returns
    -------
    numpy.ndarray
        int32 ``(n,)``: the class, or -1 for a void keypoint.
    """
    lab = to_numpy(label_map)
    lab = np.asarray(lab)
    if lab.ndim != 2 or lab.dtype.kind not in "iu" or lab.size == 0:
        raise ValueError(f"label_map must be a non-empty 2-D integer array, got "
                         f"shape {lab.shape} dtype {lab.dtype}")
    pts = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    h, w = (int(v) for v in image_size)
    if h <= 0 or w <= 0:
        raise ValueError(f"image_size must be (height, width) > 0, got {image_size}")
    H, W = lab.shape
    col = np.clip(np.floor((pts[:, 0] + 0.5) * (W / w)), 0, W - 1).astype(np.intp)
    row = np.clip(np.floor((pts[:, 1] + 0.5) * (H / h)), 0, H - 1).astype(np.intp)
    v = lab[row, col].astype(np.int64)
    void = (v < 0) | (v > np.iinfo(np.int32).max)
    if ignore_index is not None:
        void |= v == int(ignore_index)
    if num_classes is not None:
        void |= v >= int(num_classes)
    return np.where(void, -1, v).astype(np.int32)


# ---------------------------------------------------------------------------------------------
# Signatures
# ---------------------------------------------------------------------------------------------


def _csr_rows(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray,
             rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The CSR arrays of a subset of rows (in the order given)."""
    rows = np.asarray(rows, dtype=np.int64)
    starts, ends = indptr[rows], indptr[rows + 1]
    counts = ends - starts
    out = np.zeros(rows.size + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    take = np.repeat(starts - out[:-1], counts) + np.arange(out[-1], dtype=np.int64)
    return out, indices[take], data[take]



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

    def __post_init__(self) -> None:
        self.indptr = np.ascontiguousarray(self.indptr, dtype=np.int64).reshape(-1)
        self.indices = np.ascontiguousarray(self.indices, dtype=np.int64).reshape(-1)
        self.data = np.ascontiguousarray(self.data, dtype=np.float32).reshape(-1)
        if self.indptr.size < 1 or self.indptr[0] != 0 or self.indptr[-1] != self.indices.size \
                or self.indices.size != self.data.size:
            raise ValueError("PhraseSignatures: inconsistent CSR arrays (indptr, indices, data)")
        if self.normalize not in _NORMS:
            raise ValueError(f"normalize must be one of {_NORMS}, got {self.normalize!r}")

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
        indptr, indices, data = _csr_rows(self.indptr, self.indices, self.data, idx)
        return replace(self, indptr=indptr, indices=indices, data=data)

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

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write to an ``.npz`` file."""
        np.savez(Path(path), format=np.array(_SIG_FORMAT), indptr=self.indptr,
                 indices=self.indices, data=self.data, n_words=np.int64(self.n_words),
                 n=np.int64(self.n), normalize=np.array(self.normalize or ""),
                 num_classes=np.int64(self.num_classes),
                 histogram_classes=np.int64(self.histogram_classes),
                 histogram_weight=np.float64(self.histogram_weight))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PhraseSignatures:
        """Read a file written by :meth:`save`."""
        with np.load(Path(path), allow_pickle=False) as z:
            if "format" not in z.files or str(z["format"]) != _SIG_FORMAT:
                raise ValueError(f"{path} is not a semcbir_fast phrase-signature file")
            def opt(name: str, kind: Any) -> Any:
                return kind(z[name]) if name in z.files else kind(0)

            return cls(z["indptr"], z["indices"], z["data"], int(z["n_words"]), int(z["n"]),
                       str(z["normalize"]) or None, opt("num_classes", int),
                       opt("histogram_classes", int), opt("histogram_weight", float))


def normalize_signatures(sig: PhraseSignatures, normalize: str | None) -> PhraseSignatures:
    """Rows divided by their L2 norm (``"l2"``) or their sum (``"l1"``); ``"hellinger"``
    takes the square root of every count first and then divides by the L2 norm (the
    classic remedy for bursty words: L2 between such rows is the Hellinger distance of the
    count distributions, up to a factor); ``None`` keeps counts.

    Norms are computed in float64; empty rows stay empty. Normalising an already normalised
    batch is an error (normalise raw counts).
    """
    if normalize not in _NORMS:
        raise ValueError(f"normalize must be one of {_NORMS}, got {normalize!r}")
    if normalize is None:
        return sig
    if sig.normalize is not None or sig.histogram_classes:
        raise ValueError(f"signatures are already {sig.normalize}-normalised; "
                         "normalise raw counts (normalize=None) instead")
    v = sig.data.astype(np.float64)
    if normalize == "hellinger":
        v = np.sqrt(np.abs(v))
    data = _scale_rows(sig.indptr, v, "l1" if normalize == "l1" else "l2")
    return replace(sig, data=data, normalize=normalize)


def _scale_rows(indptr: np.ndarray, v: np.ndarray, norm: str) -> np.ndarray:
    """float64 values ``v`` of a CSR matrix, each row divided by its L1 or L2 norm; float32."""
    n = indptr.size - 1
    rows = np.repeat(np.arange(n), np.diff(indptr))
    tot = np.bincount(rows, weights=v * v if norm == "l2" else np.abs(v), minlength=n)
    if norm == "l2":
        tot = np.sqrt(tot)
    scale = np.divide(1.0, tot, out=np.zeros_like(tot), where=tot > 0)
    return (v * scale[rows]).astype(np.float32)


def append_histograms(sig: PhraseSignatures, histograms: Any,
                      weight: float = 1.0) -> PhraseSignatures:
    """Append the semantic histogram to unit-norm phrase rows, as ``weight * sqrt(P)``.

    Each row becomes ``[phrases, weight * sqrt(P_0), ..., weight * sqrt(P_{M-1})]`` divided
    by its L2 norm (``sqrt(1 + weight^2)`` for an image with phrases and a valid label map),
    so the squared L2 distance of two images is ``2 - 2 (cos_phrases + w^2 BC(P, P')) /
    (1 + w^2)``, where ``BC`` is the Bhattacharyya coefficient of their class proportions.
    The phrases say *which local structures* occur in each class region; the histogram says
    *how much* of the image each class covers, which the phrase counts do not carry. An
    extension of ours (README: it lifts SBoVP above SBS on MSRC v1 and Corel-1K).

    Parameters
    ----------
    sig : PhraseSignatures
        Normalised with ``"l2"`` or ``"hellinger"`` (unit rows), without a histogram yet.
    histograms : array-like
        ``(N, M)`` class proportions (:func:`semcbir_fast.hybrid.semantic_histograms`).
    weight : float
        ``w > 0``, the histogram's weight against the phrases (default 1: equal).
    """
    if sig.normalize not in ("l2", "hellinger") or sig.histogram_classes:
        raise ValueError("append_histograms needs l2- or hellinger-normalised signatures "
                         f"without a histogram, got normalize={sig.normalize!r}, "
                         f"histogram_classes={sig.histogram_classes}")
    weight = float(weight)
    if not np.isfinite(weight) or weight <= 0:
        raise ValueError(f"weight must be a finite number > 0, got {weight}")
    h = np.asarray(to_numpy(histograms), dtype=np.float64)
    if h.ndim != 2 or h.shape[0] != len(sig) or h.shape[1] < 1:
        raise ValueError(f"histograms must be ({len(sig)}, M), got shape {h.shape}")
    if not np.all(np.isfinite(h)) or (h < 0).any():
        raise ValueError("histograms must be finite and >= 0 (class proportions)")
    n, m, base = len(sig), h.shape[1], sig.n_words * sig.n_words
    hr, hc = np.nonzero(h)
    cnt, hcnt = np.diff(sig.indptr), np.bincount(hr, minlength=n)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(cnt + hcnt, out=indptr[1:])
    rows = np.repeat(np.arange(n), cnt)
    pos = indptr[rows] + np.arange(sig.nnz) - sig.indptr[rows]
    hpos = indptr[hr] + cnt[hr] + np.arange(hr.size) - np.searchsorted(hr, hr)
    indices = np.empty(indptr[-1], dtype=np.int64)
    v = np.empty(indptr[-1], dtype=np.float64)
    indices[pos], v[pos] = sig.indices, sig.data
    indices[hpos], v[hpos] = base + hc, weight * np.sqrt(h[hr, hc])
    return replace(sig, indptr=indptr, indices=indices, data=_scale_rows(indptr, v, "l2"),
                   histogram_classes=m, histogram_weight=weight)


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
        indptr, indices, data = _core().build_phrase_matrices(xs, ws, cs, n_words, n, t)
    except ValueError as exc:  # from std::invalid_argument (e.g. non-finite coordinates)
        raise ValueError(f"build_phrase_signatures: {exc}") from None
    return PhraseSignatures(indptr, indices, data, n_words, n, None)


def _label_list(label_maps: Any, count: int) -> list[np.ndarray]:
    if isinstance(label_maps, (list, tuple)):
        maps = [np.asarray(to_numpy(m)) for m in label_maps]
    else:
        arr = np.asarray(to_numpy(label_maps))
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3:
            raise ValueError(f"label_maps must be a list of (H, W) maps or an (N, H, W) array, "
                             f"got shape {arr.shape}")
        maps = list(arr)
    if len(maps) != count:
        raise ValueError(f"label_maps must have one map per image: {count} feature sets, "
                         f"{len(maps)} label maps")
    return maps


def _feature_list(features: Any) -> list[Features]:
    if isinstance(features, Features):
        return [features]
    feats = list(features)
    for i, f in enumerate(feats):
        if not isinstance(f, Features):
            raise ValueError(  # noqa: TRY004
                f"features[{i}] must be a semcbir_fast.features.Features, "
                f"got {type(f).__name__}")
    return feats


def sbovp_signatures(
    features: Any,
    label_maps: Any,
    vocab: Vocabulary,
    *,
    n: int = 2,
    normalize: str | None = "l2",
    ignore_index: int | None = None,
    num_classes: int | None = None,
    semantic_words: bool = False,
    histogram_weight: float = 0.0,
    histograms: Any = None,
    threads: int = 0,
) -> PhraseSignatures:
    """SBoVP signatures of a batch of images (SPEC.md section 3, steps 3-5).

    Parameters
    ----------
    features : Features or sequence of Features
        Keypoints and descriptors per image (:func:`~semcbir_fast.features.extract_features`).
    label_maps : sequence of (H, W) integer arrays, or (N, H, W)
        Semantic label map per image (any size: keypoints are scaled to it).
    vocab : Vocabulary
        Fitted on descriptors of the same method and width (checked).
    n : int
        Phrase length (2 default, 2..4).
    normalize : {"l2", "l1", "hellinger", None}
        Per-image normalisation of the phrase matrix (default ``"l2"``: makes images with
        many and few keypoints comparable). ``"hellinger"`` (square roots, then L2) ranks
        best in our measurements (README) and is what the CLI uses. None keeps raw counts.
    ignore_index, num_classes : int, optional
        Label values that are void (plus negative values): their keypoints join no region.
    semantic_words : bool
        Extension, off by default (SPEC.md's matrix is ``L x L``): tag every word with the
        class of its region, i.e. use the "semantic visual words" ``class * L + word``
        (``num_classes * L`` of them, ``num_classes`` required). Phrases never cross
        regions, so the matrix is block-diagonal, one ``L x L`` block per class, and two
        images only match on phrases of the same class. With plain words the class regions
        only decide which keypoints are linked, and the signature carries no class
        information at all; the tagged form ranks far better (README, MSRC v1 / Corel-1K).
    histogram_weight : float
        Extension, off by default (0): when > 0, append the semantic histogram of the label
        map with this weight (:func:`append_histograms`; needs ``num_classes`` and
        ``normalize`` "l2" or "hellinger"). The CLI uses 1.
    histograms : array-like, optional
        The label maps' semantic histograms when the caller has them already
        (:func:`semcbir_fast.hybrid.semantic_histograms` with the same ``num_classes`` and
        ``ignore_index``); computed here otherwise.
    threads : int
        0 = all cores; results never depend on it.

    Returns
    -------
    PhraseSignatures
    """
    if not isinstance(vocab, Vocabulary):
        raise ValueError(f"vocab must be a Vocabulary, got {type(vocab).__name__}")  # noqa: TRY004
    feats = _feature_list(features)
    maps = _label_list(label_maps, len(feats))
    if normalize not in _NORMS:
        raise ValueError(f"normalize must be one of {_NORMS}, got {normalize!r}")
    histogram_weight = float(histogram_weight)
    if not np.isfinite(histogram_weight) or histogram_weight < 0:
        raise ValueError(f"histogram_weight must be a finite number >= 0, got "
                         f"{histogram_weight}")
    if histogram_weight and (num_classes is None or normalize not in ("l2", "hellinger")):
        raise ValueError("histogram_weight > 0 needs num_classes and normalize='l2' or "
                         f"'hellinger' (got num_classes={num_classes}, normalize={normalize!r})")
    n_words, tag = vocab.n_words, 0
    if semantic_words:
        if num_classes is None:
            raise ValueError("semantic_words=True needs num_classes (the number of classes "
                             "of the segmentation model)")
        tag = _index(num_classes, "num_classes", 1)
        if tag * vocab.n_words > 2**31 - 1:
            raise ValueError(f"semantic_words: num_classes * n_words = {tag * vocab.n_words} "
                             "exceeds 2^31 - 1; use a smaller vocabulary")
        n_words = tag * vocab.n_words
    words, classes = [], []
    for f, m in zip(feats, maps):
        w = vocab.assign(f, threads=threads)
        c = keypoint_classes(f.xy, f.image_size, m, ignore_index=ignore_index,
                             num_classes=num_classes)
        if tag:
            w = np.where(c >= 0, c.astype(np.int64) * vocab.n_words + w, w).astype(np.int32)
        words.append(w)
        classes.append(c)
    sig = build_phrase_signatures([f.xy for f in feats], words, classes, n_words, n=n,
                                  threads=threads)
    sig.num_classes = tag
    sig = normalize_signatures(sig, normalize)
    if histogram_weight:
        if histograms is None:
            from .hybrid import semantic_histograms

            assert num_classes is not None
            histograms = semantic_histograms(maps, num_classes, ignore_index=ignore_index)
        sig = append_histograms(sig, histograms, histogram_weight)
    return sig


_Csr = tuple[np.ndarray, np.ndarray, np.ndarray, int, "PhraseSignatures | None"]


def _as_csr(x: Any, name: str) -> _Csr:
    if isinstance(x, PhraseSignatures):
        return x.indptr, x.indices, x.data, x.shape[1], x
    if hasattr(x, "tocsr") and hasattr(x, "shape"):  # scipy.sparse matrix or array
        m = x.tocsr()
        if not m.has_canonical_format:
            m = m.copy()
            m.sum_duplicates()
        return (np.ascontiguousarray(m.indptr, dtype=np.int64),
                np.ascontiguousarray(m.indices, dtype=np.int64),
                np.ascontiguousarray(m.data, dtype=np.float32), int(m.shape[1]), None)
    raise ValueError(f"{name} must be PhraseSignatures or a scipy.sparse matrix, "
                     f"got {type(x).__name__}")


def _check_k(k: Any) -> int:
    if isinstance(k, bool):
        raise ValueError(f"k must be an int >= 1, got {k!r}")  # noqa: TRY004
    return _index(k, "k", 1)


def _check_pair(qc: int, dc: int, qs: PhraseSignatures | None,
                ds: PhraseSignatures | None) -> None:
    if qc != dc:
        raise ValueError(f"queries and database must have the same number of columns, got "
                         f"{qc} and {dc} (signatures from vocabularies of different sizes?)")
    if qs is None or ds is None:
        return
    if qs.n_words != ds.n_words:
        raise ValueError(f"queries use {qs.n_words} words, database {ds.n_words}")
    if qs.normalize != ds.normalize:
        raise ValueError(
            f"queries are normalised with {qs.normalize!r} but database with "
            f"{ds.normalize!r}; build both with the same normalize")
    if qs.num_classes != ds.num_classes:
        raise ValueError(f"queries use num_classes={qs.num_classes} semantic words, database "
                         f"{ds.num_classes} (0 = plain words); build both the same way")
    if qs.n != ds.n:
        raise ValueError(f"queries use phrases of n={qs.n} words, database n={ds.n}; "
                         "build both with the same n")
    if (qs.histogram_classes, qs.histogram_weight) != (ds.histogram_classes,
                                                       ds.histogram_weight):
        raise ValueError(
            f"queries carry a histogram of {qs.histogram_classes} classes with weight "
            f"{qs.histogram_weight:g}, the database {ds.histogram_classes} with "
            f"{ds.histogram_weight:g}; build both with the same histogram_weight")


def phrase_l2_topk(
    queries: Any, database: Any, k: int, *, threads: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` database signatures nearest to each query in L2 (equation 3 of paper 000).

    A one-shot call transposes the (usually smaller) query batch and streams the database
    once per block of queries, or builds the database's inverted index when the queries need
    many blocks (``nq * min(k, N)`` large); both give identical results. To search one database
    many times, build a :class:`PhraseIndex` once.

    Parameters
    ----------
    queries, database : PhraseSignatures or scipy.sparse matrix
        Same number of columns (same vocabulary); ``database`` may have 0 rows.
    k : int
        Results per query (>= 1). With ``k > N`` the missing slots hold id ``-1`` and
        distance ``+inf``.
    threads : int
        0 = all cores; results never depend on it.

    Returns
    -------
    distances, ids
        float32 and int64 ``(nq, k)``: the Euclidean distance (square root of the squared
        L2 computed in float64 as ``|q|^2 + |d|^2 - 2 q.d``, clamped at 0), rows sorted
        ascending by the float64 squared distance, ties broken by the smaller id.
    """
    qi, qx, qd, qc, qs = _as_csr(queries, "queries")
    di, dx, dd, dc, ds = _as_csr(database, "database")
    k = _check_k(k)
    t = check_threads(threads)
    _check_pair(qc, dc, qs, ds)
    return _core().phrase_l2_topk(qi, qx, qd, di, dx, dd, qc, k, t)


class PhraseIndex:
    """A database of SBoVP signatures prepared once for exact L2 search.

    Holds the squared norms and an inverted index (posting list per non-zero column) built
    in C++; :meth:`search` gives exactly what :func:`phrase_l2_topk` gives against the same
    database, without rebuilding. The index is immutable (concurrent searches are safe) and
    does not keep the input arrays.

    Parameters
    ----------
    database : PhraseSignatures or scipy.sparse matrix
        May have 0 rows.
    threads : int
        Threads used to build (0 = all cores).
    """

    def __init__(self, database: Any, *, threads: int = 0) -> None:
        di, dx, dd, dc, ds = _as_csr(database, "database")
        t = check_threads(threads)
        self._meta = None if ds is None else ds[np.zeros(0, np.int64)]
        self._cols = dc
        self._index = _core().PhraseIndex(di, dx, dd, dc, t)

    def __len__(self) -> int:
        return int(self._index.rows)

    @property
    def nnz(self) -> int:
        """Non-zeros of the database."""
        return int(self._index.nnz)

    def search(self, queries: Any, k: int, *, threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` of each query: same contract as :func:`phrase_l2_topk`."""
        qi, qx, qd, qc, qs = _as_csr(queries, "queries")
        k = _check_k(k)
        t = check_threads(threads)
        _check_pair(qc, self._cols, qs, self._meta)
        return self._index.search(qi, qx, qd, k, t)
