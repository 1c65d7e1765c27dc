"""Which implementation runs the kernels: the compiled C++ core or the numba fallback.

Both backends are modules with the same contract (the names and arguments of ``_core.pyi``):
``encode_sbs``, ``hamming_topk``, ``hamming_distances``, ``build_phrase_matrices``,
``sparse_l2_topk``, ``SparseL2Index``, ``sparse_sbs_encode``, ``sparse_sbs_decode``,
``sparse_sbs_check``, ``SparseSBSIndex``, ``active_isa``, ``available_isas``, ``set_isa`` and
``hardware_threads``. The public functions call ``core().<name>(...)`` and never branch on
the backend.

``SEMCBIR_BACKEND=cpp|numba`` chooses at import (default: cpp when the extension imports, else
numba); ``SEMCBIR_ISA=scalar|avx2|avx512`` forces the C++ SIMD level (every C++ kernel follows
it).
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

__all__ = ["active_isa", "available_isas", "backend", "core", "set_backend", "set_isa"]

#: the names every backend module exports (see _core.pyi)
CONTRACT = (
    "encode_sbs",
    "hamming_topk",
    "hamming_distances",
    "build_phrase_matrices",
    "sparse_l2_topk",
    "SparseL2Index",
    "sparse_sbs_encode",
    "sparse_sbs_decode",
    "sparse_sbs_check",
    "SparseSBSIndex",
    "active_isa",
    "available_isas",
    "set_isa",
    "hardware_threads",
)

_core: ModuleType | None
try:
    from . import _core  # type: ignore[attr-defined, no-redef]

    _core_error: BaseException | None = None
except ImportError as exc:  # pragma: no cover - exercised when the build is absent
    _core = None
    _core_error = exc

_BACKENDS = ("cpp", "numba")
_NUMBA_HINT = "pip install 'semcbir_fast[numba]'"
_active: str = ""
_numba_module: ModuleType | None = None


def _why_no_core() -> str:
    return (f"the compiled core semcbir_fast._core cannot be imported "
            f"({type(_core_error).__name__}: {_core_error}); reinstall semcbir_fast with a "
            "C++17 compiler (`pip install .`)")


def _why_no_numba(exc: ImportError) -> str:
    name = getattr(exc, "name", None) or ""
    if isinstance(exc, ModuleNotFoundError) and (name == "numba" or name.startswith("numba.")):
        return f"numba is not installed ({_NUMBA_HINT})"
    return f"the numba backend cannot be imported ({type(exc).__name__}: {exc})"


def _numba() -> ModuleType:
    """The numba backend package, imported on first use (ImportError naming what is missing)."""
    global _numba_module
    if _numba_module is None:
        try:
            from . import _numba as module
        except ImportError as exc:
            why = _why_no_numba(exc)
            if _core is None:
                msg = f"semcbir_fast: no kernel backend: {_why_no_core()}, and {why}"
            else:
                msg = f"semcbir_fast: the numba backend is not available: {why}"
            raise ImportError(msg) from exc
        _numba_module = module
    return _numba_module


def set_backend(name: str) -> None:
    """Switch the kernels between ``"cpp"`` (compiled core) and ``"numba"`` (fallback).

    Raises ValueError for another name, RuntimeError when the compiled core is missing
    (``"cpp"``), ImportError when numba is missing (``"numba"``).
    """
    global _active
    if name not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {name!r}")
    if name == "cpp" and _core is None:
        raise RuntimeError(f"semcbir_fast: {_why_no_core()}, or use the numba backend")
    if name == "numba":
        _numba()
    _active = name


def backend() -> str:
    """The active backend: ``"cpp"`` or ``"numba"``."""
    return _active


def core() -> Any:
    """The module implementing the kernels (the contract above) for the active backend."""
    return _core if _active == "cpp" else _numba()


def active_isa() -> str:
    """SIMD level used by the C++ kernels (``"scalar"``, ``"avx2"``, ``"avx512"``), or
    ``"numba"`` when the numba backend is active."""
    return str(core().active_isa())


def available_isas() -> list[str]:
    """Levels this CPU and build support (``["numba"]`` with the numba backend)."""
    return list(core().available_isas())


def set_isa(name: str) -> None:
    """Force a SIMD level of the active backend (results never depend on it; speed does).

    ValueError for a level this CPU / build / backend lacks (the numba backend has one level,
    ``"numba"``).
    """
    if not isinstance(name, str):
        raise ValueError(f"ISA name must be a str, got {name!r}")  # noqa: TRY004
    core().set_isa(name)


def _init() -> None:
    want = os.environ.get("SEMCBIR_BACKEND", "").strip().lower()
    if want:
        set_backend(want)
    else:
        set_backend("cpp" if _core is not None else "numba")
    isa = os.environ.get("SEMCBIR_ISA", "").strip().lower()
    if isa and _active == "cpp":
        try:
            set_isa(isa)
        except ValueError as exc:
            raise ValueError(f"SEMCBIR_ISA={isa!r}: {exc}; available: {available_isas()}") from None


_init()
