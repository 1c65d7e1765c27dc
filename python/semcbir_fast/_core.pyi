"""Type stubs of the private compiled core (see python/bindings.cpp)."""

import numpy as np
import numpy.typing as npt

def encode_sbs(
    maps: list[npt.NDArray[np.integer]],
    num_classes: int,
    levels: int,
    ignore_index: int | None,
    pyramid: bool,
    stride: int,
    threads: int,
) -> npt.NDArray[np.uint8]: ...
def hamming_topk(
    queries: npt.NDArray[np.uint8], database: npt.NDArray[np.uint8], k: int, threads: int
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]: ...
def hamming_distances(
    a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8], threads: int
) -> npt.NDArray[np.int32]: ...
def active_isa() -> str: ...
def available_isas() -> list[str]: ...
def set_isa(name: str) -> None: ...
def hardware_threads() -> int: ...
