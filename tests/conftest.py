"""Shared pytest fixtures.

- ``backend_isa``: runs a test once per backend and SIMD level ("cpp-scalar", "cpp-avx2",
  "cpp-avx512", "numba"), skipping the ones this build / CPU / install (numba is an optional
  extra) lacks, and restores the previous backend and ISA afterwards. ``use_backend(spec)``
  is the same as a context manager (for Hypothesis tests or loops).
- ``msrc_labels``: the 240 real MSRC v1 ground-truth label maps (skips if absent).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest

BACKEND_ISA = ("cpp-scalar", "cpp-avx2", "cpp-avx512", "numba")


@contextlib.contextmanager
def use_backend(spec: str):
    """Switch to ``spec`` ("numba" or "cpp-<isa>") for the block; pytest.skip if unavailable."""
    import semcbir_fast as sf

    prev_backend = sf.backend()
    prev_cpp_isa = None
    try:  # remember the C++ ISA even when the numba backend is active
        sf.set_backend("cpp")
        prev_cpp_isa = sf.active_isa()
    except RuntimeError:
        pass
    finally:
        sf.set_backend(prev_backend)
    try:
        backend, _, isa = spec.partition("-")
        if backend == "cpp":
            if prev_cpp_isa is None:
                pytest.skip("C++ backend not built")
            sf.set_backend("cpp")
            if isa not in sf.available_isas():
                pytest.skip(f"ISA {isa} not supported on this CPU")
            sf.set_isa(isa)
            assert sf.active_isa() == isa
        else:
            try:
                sf.set_backend(backend)
            except ImportError as exc:  # numba is an optional extra
                pytest.skip(str(exc))
        assert sf.backend() == backend
        yield spec
    finally:
        if prev_cpp_isa is not None:
            sf.set_backend("cpp")
            sf.set_isa(prev_cpp_isa)
        sf.set_backend(prev_backend)


@pytest.fixture(params=BACKEND_ISA)
def backend_isa(request):
    """Run the test under each backend x ISA level; yields the spec string."""
    with use_backend(request.param) as spec:
        yield spec


def load_msrc_labels() -> tuple[list[str], list[np.ndarray]]:
    """(names, label maps) of MSRC v1, sorted by file name; raises FileNotFoundError."""
    cv2 = pytest.importorskip("cv2")
    from semcbir_fast._paths import data_root

    folder = Path(data_root()) / "msrc_v1" / "labels"
    files = sorted(folder.glob("*.png"))
    if not files:
        raise FileNotFoundError(f"no MSRC v1 label maps under {folder}")
    maps = []
    for f in files:
        m = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
        if m is None or m.ndim != 2:
            raise FileNotFoundError(f"cannot read {f} as a 2-D label map")
        maps.append(m)
    return [f.stem for f in files], maps


@pytest.fixture(scope="session")
def msrc_labels() -> list[np.ndarray]:
    """The 240 MSRC v1 label maps (uint8, 0 = void, classes 1..13)."""
    try:
        return load_msrc_labels()[1]
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
