"""SBoVP (paper 000 section 3.2, SPEC.md section 3) as a signature: presets, vocabulary
state, encoding, index header."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._convert import check_int
from ..sbovp import NORMS, PhraseSignatures, Vocabulary, sbovp_signatures
from ._local import (
    LocalSignature,
    check_epsilon_field,
    check_method,
    epsilon_option,
    method_option,
)
from .base import Inputs, option
from .registry import register_signature

__all__ = ["SBoVPParams", "SBoVPSignature"]


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _phrase_n(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = -1
    if not 2 <= v <= 4:
        raise argparse.ArgumentTypeError(f"expected 2, 3 or 4 words per phrase, got {text!r}")
    return v


def _normalize_from_args(args: argparse.Namespace) -> str | None:
    v = getattr(args, "normalize", "hellinger")
    return None if v == "none" else v


@dataclass(frozen=True)
class SBoVPParams:
    """SBoVP settings. ``DEFAULT`` (the CLI's and the evaluation's) differs from SPEC.md's
    plain ``L x L`` form, which ranks poorly: semantic words (every visual word tagged with
    its region's class), Hellinger normalisation and the semantic histogram appended with
    weight 1; the histogram filter is then off ("auto"). ``SPEC`` is SPEC.md's form
    (docs/decisions.md, docs/results.md)."""

    method: str = method_option()
    n_words: int = option(16, flag="--words", sweep=True, type=_positive, metavar="L",
                          help="sbovp: vocabulary size (16)")
    n: int = option(2, sweep=True, type=_phrase_n, metavar="N",
                    help="sbovp: words per phrase, 2..4 (2)")
    semantic_words: bool = option(True, action=argparse.BooleanOptionalAction,
                                  help="sbovp: tag visual words with their region's class "
                                  "(default on; off = SPEC.md's plain L x L matrix)")
    normalize: str | None = option(
        "hellinger", choices=["hellinger", "l2", "l1", "none"], from_args=_normalize_from_args,
        help="sbovp: per-image normalisation of the phrase matrix (hellinger: square roots, "
        "then l2)")
    histogram_weight: float = option(
        1.0, type=float, metavar="W",
        help="sbovp: append the semantic histogram (sqrt of the class proportions) with this "
        "weight to each signature (1; 0 = SPEC.md's phrases only)")
    epsilon: float | str | None = epsilon_option(
        "on for hybrid and for sbovp with --histogram-weight 0, off for sbovp with the "
        "histogram, where it only lowers MAP")
    seed: int = option(0, flag="--vocab-seed", type=int,
                       help="sbovp: k-means seed of the vocabulary (0)")

    def __post_init__(self) -> None:
        check_method(self.method)
        if self.normalize not in NORMS:
            raise ValueError(f"normalize must be one of {NORMS}, got {self.normalize!r}")
        check_int(self.n_words, "n_words", 1)
        check_int(self.n, "n", 2, 4)
        check_int(self.seed, "seed", 0)
        w = LocalSignature._finite_weight(self.histogram_weight, "histogram_weight")
        object.__setattr__(self, "histogram_weight", w)  # a float, as the encoder makes it
        if w and self.normalize not in ("l2", "hellinger"):
            raise ValueError(f"histogram_weight must be a finite number >= 0 (> 0 needs "
                             f"normalize 'l2' or 'hellinger'), got {self.histogram_weight}")
        check_epsilon_field(self.epsilon)


SBoVPParams.DEFAULT = SBoVPParams()  # type: ignore[attr-defined]
SBoVPParams.SPEC = SBoVPParams(semantic_words=False, normalize="l2",  # type: ignore[attr-defined]
                               histogram_weight=0.0, epsilon=None)


@register_signature
class SBoVPSignature(LocalSignature):
    """Semantic Bag of Visual Phrases: sparse phrase matrices of visual words inside class
    regions, with a fitted :class:`~semcbir_fast.sbovp.Vocabulary`."""

    name = "sbovp"
    title = "SBoVP"
    Params = SBoVPParams
    state_flags = ("vocab", "vocab_root")
    state_name = "vocabulary"

    def __init__(self, params: Any = None, *, num_classes: int, ignore_index: int | None = None,
                 vocabulary: Vocabulary | None = None, **overrides: Any) -> None:
        super().__init__(params, num_classes=num_classes, ignore_index=ignore_index,
                         **overrides)
        self.vocabulary: Vocabulary | None = None
        if vocabulary is not None:
            self.set_vocabulary(vocabulary)

    @classmethod
    def presets(cls) -> dict[str, Any]:
        return {"default": SBoVPParams.DEFAULT, "spec": SBoVPParams.SPEC}  # type: ignore

    # ------------------------------------------------------------------ state
    def set_vocabulary(self, vocabulary: Vocabulary) -> None:
        if not isinstance(vocabulary, Vocabulary):
            raise ValueError("signature 'sbovp' needs vocabulary=Vocabulary (fit one with "  # noqa: TRY004
                             "Vocabulary.fit or load one with Vocabulary.load)")
        if vocabulary.method is not None and vocabulary.method != self.feature_method:
            raise ValueError(f"the vocabulary was fitted on {vocabulary.method} descriptors, "
                             f"not {self.feature_method} (method={self.feature_method!r}); "
                             f"pass --method {vocabulary.method}")
        self.vocabulary = vocabulary
        if vocabulary.n_words != self.params.n_words:
            self.params = dataclasses.replace(self.params, n_words=vocabulary.n_words)

    @property
    def fitted(self) -> bool:
        return self.vocabulary is not None

    @property
    def fit_requires(self) -> tuple[str, ...]:
        return ("features",)  # the vocabulary is fitted on the local features alone

    def fit(self, inputs: Inputs, *, threads: int = 0,
            cache: dict[Any, Any] | None = None) -> SBoVPSignature:
        """Fit the vocabulary (k-means, ``n_words`` words, ``seed``) on ``inputs.features``."""
        feats = list(inputs.features or [])
        key = ("sbovp-vocabulary", self.feature_method, self.params.n_words, self.params.seed,
               id(inputs.features))
        if cache is not None and key in cache:
            self.set_vocabulary(cache[key])
            return self
        total = sum(len(f) for f in feats)
        if total < self.params.n_words:
            raise ValueError(
                f"--words {self.params.n_words} needs at least as many training descriptors, "
                f"the vocabulary set has {total}; use fewer words or more images")
        vocab = Vocabulary.fit(feats, self.params.n_words, seed=self.params.seed,
                               threads=threads)
        if cache is not None:
            cache[key] = vocab
        self.set_vocabulary(vocab)
        return self

    def require_fitted(self) -> None:
        self._vocab()

    def load_state(self, path: str) -> None:
        self.set_vocabulary(Vocabulary.load(path))

    def _vocab(self) -> Vocabulary:
        if self.vocabulary is None:
            raise ValueError("signature 'sbovp' needs vocabulary=Vocabulary (fit one with "
                             "Vocabulary.fit or load one with Vocabulary.load)")
        return self.vocabulary

    # ------------------------------------------------------------------ encoding
    @property
    def _words(self) -> int:
        return self._vocab().n_words * (self.num_classes if self.params.semantic_words else 1)

    def columns(self) -> int:
        w = self._words
        return w * w + (self.num_classes if self.params.histogram_weight else 0)

    def auto_epsilon(self) -> float | None:
        return None if self.params.histogram_weight > 0 else super().auto_epsilon()

    def encode(self, inputs: Inputs, *, threads: int = 0) -> PhraseSignatures:
        """Phrase signatures of a batch, carrying the images' semantic histograms."""
        feats = self.check_features(inputs)
        hist = self.histograms(list(inputs.label_maps))
        p = self.params
        sig = sbovp_signatures(feats, list(inputs.label_maps), self._vocab(), n=p.n,
                               normalize=p.normalize, ignore_index=self.ignore_index,
                               num_classes=self.num_classes, semantic_words=p.semantic_words,
                               histogram_weight=p.histogram_weight, histograms=hist,
                               threads=threads)
        return dataclasses.replace(sig, histograms=hist)

    def batch_arrays(self, batch: Any, histograms: Any, name: str, columns: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        if not isinstance(batch, PhraseSignatures):
            raise ValueError(  # noqa: TRY004
                f"{name} must be PhraseSignatures for an sbovp index, got "
                f"{type(batch).__name__}")
        p, m = self.params, self.num_classes
        want = (self._words, p.n, p.normalize, m if p.semantic_words else 0,
                p.histogram_weight)
        got = (batch.n_words, batch.n, batch.normalize, batch.num_classes,
               batch.histogram_weight)
        if got != want:
            raise ValueError(
                f"{name} were built with (words, n, normalize, semantic classes, histogram "
                f"weight) = {got}, the index uses {want}; encode them with the index's "
                "signature")
        if histograms is None:
            histograms = batch.histograms
        if histograms is None:
            raise ValueError(f"{name}: an sbovp index needs the semantic histograms "
                             "(semcbir_fast.semantic_histogram.semantic_histograms of the "
                             "label maps)")
        h = np.ascontiguousarray(histograms, dtype=np.float32)
        if h.shape != (len(batch), m):
            raise ValueError(f"{name}: histograms must be ({len(batch)}, {m}), got {h.shape}")
        return batch.indptr, batch.indices, batch.data, h, self.columns()

    def batch_from_rows(self, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray,
                        histograms: np.ndarray, columns: int) -> PhraseSignatures:
        p, m = self.params, self.num_classes
        return PhraseSignatures(indptr, indices, data, self._words, p.n, p.normalize,
                                m if p.semantic_words else 0,
                                m if p.histogram_weight else 0, p.histogram_weight,
                                histograms)

    # ------------------------------------------------------------------ description
    def label(self) -> str:
        return f"{self.feature_method} L={self.params.n_words} n={self.params.n}"

    def describe(self, columns: int = -1) -> str:
        p = self.params
        words = "semantic" if p.semantic_words else "plain"
        hist = (f"histogram weight {p.histogram_weight:g}" if p.histogram_weight
                else "no histogram")
        return (f"sbovp, {p.method}, L={p.n_words} {words} words, n={p.n}, "
                f"normalize {p.normalize}, {hist}, {self.num_classes} classes, "
                f"{self._filter_text()}")

    def params_dict(self) -> dict[str, Any]:
        d = super().params_dict()
        d["epsilon"] = self.filter_epsilon
        return d

    def result_info(self, encoded: Any) -> dict[str, Any]:
        return {"nnz_per_image": encoded.nnz / max(len(encoded), 1)}

    @classmethod
    def published(cls, dataset: str) -> dict[str, Any]:
        from ..eval.paper import TABLE5_SBOVP_MAP

        rows = TABLE5_SBOVP_MAP.get(dataset)
        return {"source": "paper 000 Table 5 (HRNet-W48)", "rows": dict(rows)} if rows else {}

    # ------------------------------------------------------------------ header
    def to_header(self) -> dict[str, Any]:
        h = super().to_header()
        p = self.params
        h["params"].update(n=p.n, normalize=p.normalize, semantic_words=p.semantic_words,
                           n_words=self._vocab().n_words, histogram_weight=p.histogram_weight,
                           seed=p.seed)
        v = self._vocab()
        meta, _ = v.to_state()
        h["vocabulary"] = {"n_words": v.n_words, "width": int(v.centroids.shape[1]), **meta}
        return h

    def state_sections(self) -> list[tuple[str, np.ndarray]]:
        return [("centroids", self._vocab().centroids.astype("<f4"))]

    @classmethod
    def from_header(cls, header: dict[str, Any],
                    arrays: dict[str, np.ndarray] | None = None) -> SBoVPSignature:
        p = header["params"]
        vh = header["vocabulary"]
        cen = (arrays or {})["centroids"]
        vocab = Vocabulary.from_state(vh, {"centroids": np.asarray(cen).reshape(
            vh["n_words"], vh["width"])})
        params = SBoVPParams(method=p["method"], n_words=vocab.n_words, n=p.get("n", 2),
                             semantic_words=p.get("semantic_words", False),
                             normalize=p.get("normalize"),
                             histogram_weight=p.get("histogram_weight", 0.0),
                             epsilon=p["epsilon"], seed=p.get("seed", 0))
        return cls(params, num_classes=p["num_classes"], ignore_index=p.get("ignore_index"),
                   vocabulary=vocab)
