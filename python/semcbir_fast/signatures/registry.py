"""The one registry of signature kinds (like timm's model registry).

>>> from semcbir_fast.signatures import create_signature, list_signatures
>>> list_signatures()                                   # doctest: +SKIP
['hybrid', 'sbovp', 'sbs']
>>> sig = create_signature("sbs", num_classes=151, levels=3)   # doctest: +SKIP

A new kind is one module with a :class:`~semcbir_fast.signatures.base.Signature` subclass
decorated with :func:`register_signature`; the CLI, the pipeline, the evaluation, the
reports and the index loader find it here.
"""

from __future__ import annotations

from typing import Any

from .base import Signature

__all__ = ["DEFAULT_SIGNATURE", "create_signature", "get_signature", "list_signatures", "register_signature",
           "unregister_signature"]

_REGISTRY: dict[str, type[Signature]] = {}

#: The kind the CLI uses when none is named.
DEFAULT_SIGNATURE = "sbs"


def register_signature(cls: type[Signature]) -> type[Signature]:
    """Class decorator: register ``cls`` under ``cls.name`` (a name may be taken once)."""
    if not (isinstance(cls, type) and issubclass(cls, Signature)) or not cls.name:
        raise ValueError(f"register_signature takes a Signature subclass with a name, got {cls!r}")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"a signature named {cls.name!r} is already registered "
                         f"({_REGISTRY[cls.name].__name__})")
    _REGISTRY[cls.name] = cls
    return cls


def unregister_signature(name: str) -> None:
    """Remove a registered kind (for tests and plug-ins that replace one)."""
    _REGISTRY.pop(name, None)


def get_signature(name: str) -> type[Signature]:
    """The class registered as ``name`` (``ValueError`` naming the known ones)."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown signature {name!r}; known: {', '.join(list_signatures())}"
                         ) from None


def list_signatures() -> list[str]:
    """Registered names, sorted."""
    return sorted(_REGISTRY)


def create_signature(name: str, preset: str = "default", *, num_classes: int,
                     ignore_index: int | None = None, **overrides: Any) -> Signature:
    """A signature of kind ``name`` with the parameters of ``preset`` (``"default"``,
    ``"spec"`` where the kind has it) and ``overrides``."""
    cls = get_signature(name)
    presets = cls.presets()
    if preset not in presets:
        raise ValueError(f"signature {name} has no preset {preset!r}; it has {sorted(presets)}")
    return cls(presets[preset], num_classes=num_classes, ignore_index=ignore_index, **overrides)
