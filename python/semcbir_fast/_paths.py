"""Where the library finds shared data, model sources and its cache.

Environment variables win; otherwise the ``shared/`` folder that sits beside the
repository (``<repo>/../shared``) is used, looked up both from the current working
directory and from the source tree of this package.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "data_root", "models_root", "shared_candidates"]


def shared_candidates() -> list[Path]:
    """Candidate ``shared/`` folders, most specific first (may not exist)."""
    here = Path(__file__).resolve()
    cands = [Path.cwd() / ".." / "shared", Path.cwd() / "shared"]
    # python/semcbir_fast/_paths.py -> <repo>/../shared when run from a source tree
    if len(here.parents) >= 3:
        cands.append(here.parents[2] / ".." / "shared")
    seen: list[Path] = []
    for c in cands:
        c = c.resolve()
        if c not in seen:
            seen.append(c)
    return seen


def _resolve(env: str, sub: str) -> Path:
    value = os.environ.get(env)
    if value:
        return Path(value).expanduser()
    for cand in shared_candidates():
        if (cand / sub).is_dir():
            return cand / sub
    # Nothing found: return the first candidate so that error messages name it.
    return shared_candidates()[0] / sub


def data_root() -> Path:
    """Folder with the real data sets (``SEMCBIR_DATA``, fallback ``../shared/data``)."""
    return _resolve("SEMCBIR_DATA", "data")


def models_root() -> Path:
    """Folder with source model files (``SEMCBIR_MODELS``, fallback ``../shared/models``)."""
    return _resolve("SEMCBIR_MODELS", "models")


def cache_dir() -> Path:
    """Cache for converted models (``SEMCBIR_CACHE``, default ``~/.cache/semcbir_fast``)."""
    value = os.environ.get("SEMCBIR_CACHE")
    path = Path(value).expanduser() if value else Path.home() / ".cache" / "semcbir_fast"
    return path
