"""The numba backend's one "ISA level" (mirrors cpp/src/isa.cpp): numba compiles for the CPU
it runs on, so there is nothing to choose."""

from __future__ import annotations

__all__ = ["active_isa", "available_isas", "set_isa"]

_LEVEL = "numba"


def active_isa() -> str:
    return _LEVEL


def available_isas() -> list[str]:
    return [_LEVEL]


def set_isa(name: str) -> None:
    """Accepts only ``"numba"`` (ValueError otherwise, like an unsupported C++ level)."""
    if name != _LEVEL:
        raise ValueError(f"ISA level {name!r} is not available with the numba backend "
                         f"(available: {_LEVEL}); SIMD levels need the cpp backend")
