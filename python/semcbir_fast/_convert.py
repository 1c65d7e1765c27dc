"""Input checks and conversions shared by the public API (convert once, at the edge)."""

from __future__ import annotations

import functools
import operator
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "MAX_K",
    "MAX_RESULT_SLOTS",
    "MAX_THREADS",
    "as_codes",
    "as_label_maps",
    "check_alloc",
    "check_int",
    "check_k",
    "check_threads",
    "check_topk_size",
    "is_torch_tensor",
    "physical_memory",
    "to_numpy",
]

#: Most threads one call uses (``kMaxThreads`` of the C++ core): larger ``threads`` values,
#: and ``threads=0`` on a larger machine, are capped here; a call also never uses more
#: threads than it has work items. Results never depend on the thread count.
MAX_THREADS = 1024

#: Largest ``k`` of a search (results per query, ``kMaxK``). A larger ``k`` could only add
#: padding slots (id -1), yet they would be allocated: it is refused with a ValueError.
MAX_K = 2**24

#: Most result slots (queries x k) one search call returns (``kMaxResultSlots``: 3 GiB of
#: distances and ids); search more queries in several calls.
MAX_RESULT_SLOTS = 2**28


def is_torch_tensor(x: Any) -> bool:
    """True for a torch.Tensor, without importing torch."""
    return type(x).__module__.startswith("torch") and hasattr(x, "detach") and hasattr(x, "cpu")


def to_numpy(x: Any) -> Any:
    """torch tensors (CPU or CUDA) -> NumPy; anything else unchanged."""
    if is_torch_tensor(x):
        return x.detach().cpu().numpy()
    return x


def check_int(
    value: Any, name: str, lo: int | None = None, hi: int | None = None, *, hint: str = ""
) -> int:
    """``value`` as an int (bools refused) within ``[lo, hi]``, else a ValueError naming ``name``."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int{hint}, got {value!r}")  # noqa: TRY004
    try:
        v = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an int{hint}, got {value!r}") from None
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"<= {hi}" if lo is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be {rng}{hint}, got {v}")
    return v


def check_threads(threads: Any) -> int:
    """``threads`` as an int in ``[0, 2**31 - 1]`` (0 = all cores; values above
    :data:`MAX_THREADS` are capped there by the kernels)."""
    return check_int(threads, "threads", 0, 2**31 - 1,
                     hint=f" (0 = all cores; more than {MAX_THREADS} are capped)")


def check_topk_size(nq: int, k: int) -> None:
    """The C++ ``check_topk_size``: ValueError unless ``1 <= k <= MAX_K`` and
    ``nq * k <= MAX_RESULT_SLOTS`` (same messages)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k > MAX_K:
        raise ValueError(f"k must be <= {MAX_K} (results per query), got {k}")
    if nq > MAX_RESULT_SLOTS // k:
        raise ValueError(
            f"queries x k = {nq} x {k} result slots exceed the maximum of {MAX_RESULT_SLOTS} "
            f"per call; search at most {MAX_RESULT_SLOTS // k} queries at a time"
        )


def check_k(k: Any, nq: int = 1) -> int:
    """``k`` of a search as an int (bools refused) with :func:`check_topk_size`'s limits for
    ``nq`` queries: ``1 <= k <= MAX_K`` and ``nq * k <= MAX_RESULT_SLOTS``. ``k`` larger than
    the database stays allowed (the extra slots are padding)."""
    if isinstance(k, bool):
        raise ValueError(f"k must be an int, got {k!r}")  # noqa: TRY004
    try:
        v = operator.index(k)
    except TypeError:
        raise ValueError(f"k must be an int, got {k!r}") from None
    check_topk_size(int(nq), v)
    return v


@functools.lru_cache(maxsize=1)
def physical_memory() -> int:
    """Bytes of memory this process can have at most: the machine's physical memory, or the
    cgroup limit when lower (unknown: 2**62)."""
    total = 2**62
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - non-POSIX
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return int(total)


def check_alloc(nbytes: int, what: str) -> None:
    """MemoryError naming ``what`` and the size when ``nbytes`` exceed
    :func:`physical_memory` (such an allocation could only fail or exhaust the machine)."""
    limit = physical_memory()
    if nbytes > limit:
        raise MemoryError(
            f"{what} needs {_gib(nbytes)} of memory, more than this machine has "
            f"({_gib(limit)}); split the call into smaller batches"
        )


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"


@functools.lru_cache(maxsize=64)
def _dtype_max(dtype: np.dtype) -> int:
    return int(np.iinfo(dtype).max)


def _check_map(a: Any, where: str, num_classes: int) -> np.ndarray:
    a = to_numpy(a)
    if not isinstance(a, np.ndarray):
        a = np.asarray(a)
    if a.dtype == np.bool_ or a.dtype.kind not in "iu":
        raise ValueError(
            f"labels{where} must have an integer dtype (uint8, int8, uint16, int16, int32, int64), "
            f"got {a.dtype}; round or cast class maps explicitly, e.g. labels.astype(np.int32)"
        )
    if a.ndim != 2:
        raise ValueError(f"labels{where} must be 2-D (H, W), got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"labels{where} must not be empty, got shape {a.shape}")
    top = _dtype_max(a.dtype)
    if num_classes > top + 1:
        raise ValueError(
            f"num_classes={num_classes} is too large for labels of dtype {a.dtype} "
            f"(values <= {top}); use a wider dtype such as uint16 or int32"
        )
    if not a.dtype.isnative:  # big-endian data (files, np.frombuffer): one native copy
        a = a.astype(a.dtype.newbyteorder("="))
    return np.ascontiguousarray(a)


def as_label_maps(labels: Any, num_classes: int) -> tuple[list[np.ndarray], bool]:
    """Normalise ``labels`` to a list of C-contiguous 2-D integer maps.

    Returns the maps and whether the input was a single map.
    """
    if isinstance(labels, (list, tuple)):
        if len(labels) == 0:
            raise ValueError("labels must not be an empty list: pass at least one (H, W) map")
        return [_check_map(a, f"[{i}]", num_classes) for i, a in enumerate(labels)], False
    arr = to_numpy(labels)
    if not isinstance(arr, np.ndarray):
        raise ValueError(  # noqa: TRY004 - bad input is a ValueError here, as everywhere
            "labels must be a 2-D map, a 3-D batch (N, H, W) or a list of 2-D maps "
            f"(NumPy or torch), got {type(labels).__name__}"
        )
    if arr.ndim == 2:
        return [_check_map(arr, "", num_classes)], True
    if arr.ndim == 3:
        if arr.shape[0] == 0:
            raise ValueError(f"labels must not be an empty batch, got shape {arr.shape}")
        _check_map(arr[:1, :1, :1][0], "", num_classes)  # dtype checks once
        if arr.shape[1] == 0 or arr.shape[2] == 0:
            raise ValueError(f"labels must not be empty, got shape {arr.shape}")
        if not arr.dtype.isnative:
            arr = arr.astype(arr.dtype.newbyteorder("="))
        arr = np.ascontiguousarray(arr)
        return [arr[i] for i in range(arr.shape[0])], False
    raise ValueError(
        f"labels must be 2-D (H, W) or 3-D (N, H, W), got {arr.ndim}-D shape {arr.shape}"
    )


def as_codes(codes: Any, name: str) -> np.ndarray:
    """Check packed codes: uint8, 1-D (one code) or 2-D (n, width), width >= 1."""
    if (
        type(codes) is np.ndarray
        and codes.dtype == np.uint8
        and codes.ndim == 2
        and codes.shape[1] > 0
        and codes.flags.c_contiguous
    ):
        return codes  # fast path: already what the kernels take
    arr = to_numpy(codes)
    if not isinstance(arr, np.ndarray):
        if isinstance(arr, Sequence):
            arr = np.asarray(arr)
        else:
            raise ValueError(  # noqa: TRY004 - bad input is a ValueError here, as everywhere
                f"{name} must be a uint8 array of codes, got {type(codes).__name__}")
    if arr.dtype != np.uint8:
        raise ValueError(
            f"{name} must be uint8 packed codes (as returned by encode_sbs), got dtype {arr.dtype}"
        )
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 1-D (width,) or 2-D (n, width), got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} must have a code width >= 1 byte, got shape {arr.shape}")
    return np.ascontiguousarray(arr)
