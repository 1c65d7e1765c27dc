"""Threads of the numba kernels (mirrors cpp/include/semcbir/parallel.hpp)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numba as nb

__all__ = ["check_threads_arg", "hardware_threads", "with_threads"]


def check_threads_arg(threads: int) -> int:
    """The binding's check of ``threads``: >= 0 (0 = all), capped at MAX_THREADS (1024)."""
    from .._convert import MAX_THREADS

    threads = int(threads)
    if threads < 0:
        raise ValueError(f"threads must be >= 0 (0 = all cores), got {threads}")
    return min(threads, MAX_THREADS)


def hardware_threads() -> int:
    """What ``threads=0`` means: numba's thread pool size (all cores unless NUMBA_NUM_THREADS)."""
    return int(nb.config.NUMBA_NUM_THREADS)


@contextlib.contextmanager
def with_threads(threads: int) -> Iterator[None]:
    """Limit numba's parallel kernels to ``threads`` threads (0 = all) inside the block."""
    old = nb.get_num_threads()
    cap = nb.config.NUMBA_NUM_THREADS
    threads = check_threads_arg(threads)
    nb.set_num_threads(max(1, cap if threads == 0 else min(threads, cap)))
    try:
        yield
    finally:
        nb.set_num_threads(old)
