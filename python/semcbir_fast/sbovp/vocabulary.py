"""Visual vocabularies: k-means centroids of local descriptors (SBoVP step 2, paper 000
section 3.2)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._convert import check_int as _index
from .._convert import check_threads, to_numpy
from .._serialize import read_npz, write_npz
from ..features import DESCRIPTOR_METHODS, Features

__all__ = ["Vocabulary", "descriptor_matrix", "descriptors_as_float"]

_VOCAB_FORMAT = "semcbir_fast.vocabulary/1"


def descriptor_matrix(descriptors: Any) -> tuple[np.ndarray, str | None]:
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


def descriptors_as_float(x: np.ndarray, binary: bool) -> np.ndarray:
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
        x, found = descriptor_matrix(descriptors)
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
        data = descriptors_as_float(x, binary)
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
            from ..features import _cv2

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
        x, method = descriptor_matrix(descriptors)
        self._check(x, method)
        check_threads(threads)
        if x.shape[0] == 0:
            return np.zeros(0, dtype=np.int32)
        data = descriptors_as_float(x, self.binary)
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

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``(meta, arrays)``: the serialisation shared by :meth:`save` and the index
        container (:mod:`semcbir_fast._serialize`)."""
        meta: dict[str, Any] = {"method": self.method, "descriptor_dim": int(self.descriptor_dim),
                                "binary": bool(self.binary)}
        for k in ("seed", "niter", "n_train"):
            meta[k] = int(self.info.get(k, -1))
        meta["backend"] = str(self.info.get("backend", ""))
        return meta, {"centroids": self.centroids}

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Vocabulary:
        """Inverse of :meth:`to_state`; ``ValueError`` for missing, mistyped or inconsistent
        fields (the input may come from a damaged or crafted file: every field is checked).
        (Index files written before 0.2 keep the fitting details under ``info``.)"""
        info_in = meta.get("info") or {}
        if not isinstance(info_in, dict):
            raise ValueError(f"vocabulary: bad field info {info_in!r}")  # noqa: TRY004
        meta = {**meta, **info_in}
        try:
            c = np.asarray(arrays["centroids"])
            dim, binary, method = meta["descriptor_dim"], meta["binary"], meta["method"] or None
        except KeyError as exc:
            raise ValueError(f"vocabulary: missing field {exc}") from None
        if c.dtype.kind != "f":
            raise ValueError(f"vocabulary: centroids must be floats, got {c.dtype}")
        c = np.ascontiguousarray(c, dtype=np.float32)
        dim = _index(dim, "vocabulary: descriptor_dim", 1, 1 << 20)
        if not isinstance(binary, (bool, np.bool_)):
            raise ValueError(  # noqa: TRY004 - file contents, not an argument
                f"vocabulary: binary must be true or false, got {binary!r}")
        binary = bool(binary)
        if method is not None and method not in DESCRIPTOR_METHODS:
            raise ValueError(f"vocabulary: bad method {method!r}")
        info: dict[str, Any] = {}
        for k in ("seed", "niter", "n_train", "backend"):
            if k in meta:
                v = meta[k]
                if k == "backend" and not isinstance(v, str) or k != "backend" and (
                        isinstance(v, bool) or not isinstance(v, (int, np.integer))):
                    raise ValueError(f"vocabulary: bad field {k} {v!r}")
                info[k] = str(v) if k == "backend" else int(v)
        if c.ndim != 2 or c.shape[0] < 1 or c.shape[1] != (8 * dim if binary else dim):
            raise ValueError(f"centroids of shape {c.shape} do not match "
                             f"descriptor_dim={dim}, binary={binary}")
        if not np.isfinite(c).all():
            raise ValueError("vocabulary: centroids that are not finite")
        return cls(c, method, dim, binary, info)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the vocabulary to an ``.npz`` file (centroids + metadata)."""
        write_npz(path, _VOCAB_FORMAT, *self.to_state())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Vocabulary:
        """Read a vocabulary written by :meth:`save` (``ValueError`` for a file that is not
        one, or is damaged: see :mod:`semcbir_fast._serialize`)."""
        meta, arrays = read_npz(path, _VOCAB_FORMAT, "vocabulary",
                                ("centroids", "method", "descriptor_dim", "binary"))
        try:
            return cls.from_state(meta, arrays)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
