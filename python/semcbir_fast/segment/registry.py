"""Registry of named segmentation models: a name -> a factory of a TorchScript path.

:func:`load_segmenter` accepts a registered name wherever it accepts a path. The factory
runs at load time, so that a built-in entry (``"ade20k-mnv2"``) converts its model only
when someone asks for it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["available_segmenters", "register_segmenter"]


def _ade20k_mnv2() -> Path:
    from semcbir_fast.models.ade20k import ensure_ade20k_torchscript

    return Path(ensure_ade20k_torchscript())


_REGISTRY: dict[str, Callable[[], Path]] = {"ade20k-mnv2": _ade20k_mnv2}


def register_segmenter(name: str, factory: Callable[[], str | os.PathLike[str]], *,
                       overwrite: bool = False) -> None:
    """Register a model name for :func:`load_segmenter`.

    Parameters
    ----------
    name : str
        The name users pass as ``model``.
    factory : callable
        Called without arguments at load time; returns the path of a TorchScript file whose
        sidecar (``.json``) lies beside it (it may convert or fetch a local file first).
    overwrite : bool, default False
        Replace an existing entry instead of raising ``ValueError``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory must be callable, got {type(factory).__name__}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"segmenter {name!r} is already registered; pass overwrite=True")
    _REGISTRY[name] = lambda: Path(factory())


def available_segmenters() -> list[str]:
    """Names accepted by :func:`load_segmenter` besides file paths."""
    return sorted(_REGISTRY)


def _resolve_model(model: str | os.PathLike[str]) -> Path:
    """A registered name (its factory runs) or an existing file -> the TorchScript path."""
    if isinstance(model, str) and model in _REGISTRY:
        return _REGISTRY[model]()
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a registered name or a path, got {type(model).__name__}")
    path = Path(model).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"model {os.fspath(model)!r} is neither a registered segmenter "
            f"({', '.join(available_segmenters())}) nor an existing TorchScript file"
        )
    return path
