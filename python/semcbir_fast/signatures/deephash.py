"""Learned binary hash codes (paper 002) as a signature (``"deephash"``).

The codes of a network trained by ``semcbir train-hash`` /
:func:`semcbir_fast.hashing.train_hashnet` (the segmentation-aware network of paper 002
or its no-segmentation baseline): the image -> frozen backbone maps (cached) -> network ->
``sgn(r - 0.5)`` bits, packed MSB first; optionally followed by the SBS code of the image's
label map (``sbs_levels >= 0``: SPEC.md section 1's bits, then Hamming over both). Held in a
:class:`~semcbir_fast.index.BinaryIndex` and ranked by the SIMD Hamming top-k.

The model is named by ``--hash-model CKPT`` (``--model`` is the segmentation model of
every command). An index records the checkpoint's path and SHA-256; a query is encoded
only with the same file (a checkpoint is read with ``torch.load(weights_only=True)``, which
runs no code).
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .base import Inputs, Signature, option
from .registry import register_signature

__all__ = ["DeepHashParams", "DeepHashSignature"]

_models: dict[tuple[str, int, int], Any] = {}
_lock = threading.Lock()


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load(path: str) -> tuple[Any, str]:
    """The :class:`~semcbir_fast.hashing.HashModel` of a checkpoint and its SHA-256 (one
    per file version in the process)."""
    from ..hashing.train import load_hash_model

    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    with _lock:
        if key not in _models:
            _models[key] = (load_hash_model(path), _sha256(path))
        return _models[key]


def _sbs_level(text: str) -> int:
    import argparse

    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected -1 (off) or an SBS level 0..4, got "
                                         f"{text!r}") from None
    if not -1 <= v <= 4:
        raise argparse.ArgumentTypeError(f"expected -1 (off) or an SBS level 0..4, got {v}")
    return v


@dataclass(frozen=True)
class DeepHashParams:
    """deephash settings: the trained model and the optional SBS bits."""

    hash_model: str = option("", metavar="CKPT",
                             help="deephash: checkpoint written by semcbir train-hash")
    sbs_levels: int = option(-1, flag="--hash-sbs-levels", type=_sbs_level, metavar="N",
                             help="deephash: append the SBS code of level N (4**N blocks) of "
                             "the label map to the learned bits (-1 = off, the default)")

    def __post_init__(self) -> None:
        if not isinstance(self.hash_model, str):
            raise ValueError(f"hash_model must be a checkpoint path, got "  # noqa: TRY004
                             f"{self.hash_model!r}")
        if isinstance(self.sbs_levels, bool) or not isinstance(self.sbs_levels, int) \
                or not -1 <= self.sbs_levels <= 4:
            raise ValueError(f"sbs_levels must be -1 (off) or 0..4, got {self.sbs_levels!r}")


@register_signature
class DeepHashSignature(Signature):
    """Learned hash codes of paper 002 (optionally + SBS bits), Hamming, BinaryIndex."""

    name = "deephash"
    title = "Deep hashing"
    Params = DeepHashParams
    requires: ClassVar[tuple[str, ...]] = ("images",)
    distance = "Hamming distance"
    integer_distances = True
    axis = "Model"

    def __init__(self, params: Any = None, *, num_classes: int = 1,
                 ignore_index: int | None = None, **overrides: Any) -> None:
        super().__init__(params, num_classes=num_classes, ignore_index=ignore_index,
                         **overrides)
        # label maps only for the SBS part
        self.requires = ("images", "labels") if self.params.sbs_levels >= 0 else ("images",)
        self._sha: str | None = None
        self._bits: int | None = None

    # ------------------------------------------------------------------ model
    def check_available(self) -> None:
        try:
            import cv2  # noqa: F401
            import torch  # noqa: F401
        except ImportError as exc:
            raise ImportError(f"torch and OpenCV (pip install 'semcbir_fast[cnn]'): {exc}"
                              ) from None
        self.model()

    def model(self) -> Any:
        """The trained :class:`~semcbir_fast.hashing.HashModel` (``ValueError`` when no
        checkpoint is named, or it is not the one the index was built with)."""
        path = self.params.hash_model
        if not path:
            raise ValueError("signature deephash needs a trained model: --hash-model CKPT "
                             "(semcbir train-hash writes one)")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such hash model checkpoint: {path}")
        model, sha = _load(path)
        if self._sha is not None and sha != self._sha:
            raise ValueError(f"{path} is not the model this index was built with (SHA-256 "
                             f"{sha[:12]}... != {self._sha[:12]}...); pass --hash-model with "
                             "that checkpoint")
        self._sha = sha
        self._bits = model.bits
        return model

    @property
    def hash_bits(self) -> int:
        """Bits of the learned part."""
        if self._bits is None:
            self.model()
        assert self._bits is not None
        return self._bits

    @property
    def sbs_bits(self) -> int:
        lv = self.params.sbs_levels
        return 0 if lv < 0 else 5 * self.num_classes * 4 ** lv

    @property
    def nbits(self) -> int:
        """Meaningful bits per code (learned bits, then the SBS bits)."""
        return self.hash_bits + self.sbs_bits

    # ------------------------------------------------------------------ encoding
    def encode(self, inputs: Inputs, *, threads: int = 0) -> np.ndarray:
        """uint8 codes ``(n, stride)``: the learned bits, then (``sbs_levels >= 0``) the SBS
        bits of the label maps, MSB first, zero padded to a multiple of 8 bytes."""
        from ..hashing.codes import code_stride, pack_bits, threshold_bits, unpack_bits

        if inputs.paths is None:
            raise ValueError("signature deephash encodes image files: give Inputs(paths=[...])"
                             " (semcbir_fast.pipeline.load_inputs fills them)")
        paths = [str(p) for p in inputs.paths]
        model = self.model()
        if not paths:
            return np.zeros((0, code_stride(self.nbits)), np.uint8)
        bits = threshold_bits(model.outputs(paths))
        if self.params.sbs_levels >= 0:
            from ..sbs import encode_sbs

            if len(inputs.label_maps) != len(paths):
                raise ValueError(f"deephash --hash-sbs-levels needs a label map per image: "
                                 f"{len(paths)} images, {len(inputs.label_maps)} maps")
            sbs = encode_sbs(list(inputs.label_maps), num_classes=self.num_classes,
                             levels=self.params.sbs_levels, ignore_index=self.ignore_index,
                             threads=threads).reshape(len(paths), -1)
            bits = np.concatenate([bits, unpack_bits(sbs, self.sbs_bits)], axis=1)
        return pack_bits(bits, stride=code_stride(self.nbits))

    def new_index(self, *, metadata: dict[str, Any] | None = None) -> Any:
        from ..index import BinaryIndex

        return BinaryIndex(self.nbits, signature=self, metadata=metadata)

    # ------------------------------------------------------------------ description
    def label(self) -> str:
        lv = self.params.sbs_levels
        return f"{self._bits or '?'} bits" + (f" + SBS 4^{lv}" if lv >= 0 else "")

    def describe(self) -> str:
        c = self.model().config
        kind = "PSP segmentation branch + hash head" if c.use_segmentation else \
            "hash head without segmentation (baseline)"
        sbs = (f" + SBS level {self.params.sbs_levels} ({self.sbs_bits} bits)"
               if self.params.sbs_levels >= 0 else "")
        return (f"deephash, {kind}, {c.backbone}, {c.bits} bits{sbs}, Hamming "
                f"({os.path.basename(self.params.hash_model)})")

    def result_info(self, encoded: Any) -> dict[str, Any]:
        return {"nbits": self.nbits}

    # ------------------------------------------------------------------ header
    def to_header(self) -> dict[str, Any]:
        h = super().to_header()
        h["params"]["hash_model"] = os.path.abspath(self.params.hash_model) \
            if self.params.hash_model else ""
        self.model()
        h["model_sha256"] = self._sha
        h["hash_bits"] = self._bits
        return h

    @classmethod
    def from_header(cls, header: dict[str, Any],
                    arrays: dict[str, np.ndarray] | None = None) -> DeepHashSignature:
        sig = super().from_header(header, arrays)
        sha, hb = header.get("model_sha256"), header.get("hash_bits")
        if not isinstance(sha, str) or not isinstance(hb, int) or isinstance(hb, bool) \
                or hb < 8:
            raise ValueError("deephash header without model_sha256 / hash_bits")
        sig._sha, sig._bits = sha, hb  # checked against the file when it is first used
        return sig
