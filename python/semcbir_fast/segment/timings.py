"""Seconds per pipeline stage, added into a caller's dict (the ``timings`` argument)."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch


class _Timings:
    """Accumulate seconds per stage into a user dict; synchronise CUDA at stage ends."""

    def __init__(self, out: dict[str, float] | None, device: torch.device) -> None:
        self.out = out
        self.cuda = device.type == "cuda"
        self.lock = threading.Lock()

    @property
    def on(self) -> bool:
        return self.out is not None

    def sync(self) -> None:
        if self.out is not None and self.cuda:
            import torch

            torch.cuda.synchronize()

    def add(self, key: str, seconds: float) -> None:
        if self.out is not None:
            with self.lock:
                self.out[key] = self.out.get(key, 0.0) + seconds

    def stage(self, key: str) -> _Stage:
        return _Stage(self, key)


class _Stage:
    def __init__(self, t: _Timings, key: str) -> None:
        self.t, self.key = t, key

    def __enter__(self) -> None:
        if self.t.on:
            self.t.sync()
            self.t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        if self.t.on:
            self.t.sync()
            self.t.add(self.key, time.perf_counter() - self.t0)
