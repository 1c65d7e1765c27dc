"""Learned and unsupervised binary hashing (paper 002) for the Hamming engine.

- :func:`train_hashnet` / :func:`load_hash_model` / :class:`HashModel`: paper 002's
  segmentation-aware deep hashing network (:mod:`semcbir_fast.models.hashnet`) and its
  no-segmentation baseline (Lin et al. 2015), trained on cached backbone maps;
- :class:`ITQ`, :class:`PCASign`: unsupervised hashing of any float descriptor;
- :func:`pack_bits`, :func:`threshold_bits`, :func:`code_stride`: the code layout;
- :func:`map_at_k`, :func:`hashing_experiment`: paper 002's metric and its evaluation on
  disjoint train / test splits (:mod:`semcbir_fast.hashing.experiment`).

torch is imported only by the training, model and experiment functions.
"""

from __future__ import annotations

from typing import Any

from .codes import code_stride, pack_bits, threshold_bits, unpack_bits
from .unsupervised import ITQ, PCASign

__all__ = ["ITQ", "HashModel", "PCASign", "TrainConfig", "code_stride", "hashing_experiment",
           "load_hash_model", "map_at_k", "pack_bits", "threshold_bits", "train_hashnet",
           "unpack_bits"]

_LAZY = {"HashModel": "train", "TrainConfig": "train", "load_hash_model": "train",
         "train_hashnet": "train", "hashing_experiment": "experiment",
         "map_at_k": "experiment"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
