"""Which implementation runs the kernels: the compiled C++ core or the numba fallback.

``SEMCBIR_BACKEND=cpp|numba`` chooses at import (default: cpp when the extension imports);
``SEMCBIR_ISA=scalar|avx2|avx512`` forces the C++ SIMD level.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

__all__ = ["active_isa", "available_isas", "backend", "core", "set_backend", "set_isa"]

_core: ModuleType | None
try:
    from . import _core  # type: ignore[attr-defined, no-redef]

    _core_error: BaseException | None = None
except ImportError as exc:  # pragma: no cover - exercised when the build is absent
    _core = None
    _core_error = exc

_BACKENDS = ("cpp", "numba")
_active: str = ""


def _numba() -> ModuleType:
    try:
        from . import _numba_kernels
    except ImportError as exc:
        raise ImportError(
            "semcbir_fast: the compiled core is not available "
            f"({_core_error}) and the numba fallback cannot be imported ({exc}); "
            "install numba or reinstall semcbir_fast with a C++17 compiler"
        ) from exc
    return _numba_kernels


def set_backend(name: str) -> None:
    """Switch the kernels between ``"cpp"`` (compiled core) and ``"numba"`` (fallback)."""
    global _active
    if name not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {name!r}")
    if name == "cpp" and _core is None:
        raise RuntimeError(
            f"the compiled core semcbir_fast._core is not available ({_core_error}); "
            "reinstall with `pip install .` and a C++17 compiler, or use the numba backend"
        )
    if name == "numba":
        _numba()
    _active = name


def backend() -> str:
    """The active backend: ``"cpp"`` or ``"numba"``."""
    return _active


def core() -> Any:
    """The module that implements the kernels for the active backend."""
    return _core if _active == "cpp" else _numba()


def active_isa() -> str:
    """SIMD level used by the C++ kernels (``"scalar"``, ``"avx2"``, ``"avx512"``), or
    ``"numba"`` when the numba backend is active."""
    return _core.active_isa() if _active == "cpp" and _core is not None else "numba"


def available_isas() -> list[str]:
    """Levels this CPU and build support (``["numba"]`` with the numba backend)."""
    return list(_core.available_isas()) if _active == "cpp" and _core is not None else ["numba"]


def set_isa(name: str) -> None:
    """Force a SIMD level of the C++ kernels (results never depend on it; speed does)."""
    if _active != "cpp" or _core is None:
        raise RuntimeError(f"set_isa needs the cpp backend; the active backend is {_active!r}")
    if not isinstance(name, str):
        raise ValueError(f"ISA name must be a str, got {name!r}")
    _core.set_isa(name)


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
