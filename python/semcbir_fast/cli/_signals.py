"""Ctrl-C acts within a second, even while the process is inside a long native call.

Python runs its SIGINT handler (``KeyboardInterrupt``) only when the main thread returns to
the interpreter; a model call in torch, LiteRT or our C++ core can take seconds under load.
:func:`install_interrupt_watchdog` asks the C-level handler to also write the signal to a
pipe (``signal.set_wakeup_fd``, done at once, whatever the main thread does); a daemon
thread reading it gives the normal ``KeyboardInterrupt`` path ``grace`` seconds, then prints
the usual line and ends the process with status 130. That is safe because every file this
library writes is written to a temporary name and renamed (an index, a cache entry): a
hard exit leaves at most a temporary file, which the next write of that file removes
(:func:`semcbir_fast._atomic.remove_stale_temporaries`).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable

__all__ = ["install_interrupt_watchdog"]


def install_interrupt_watchdog(command: str, grace: float = 0.5,
                               exit_fn: Callable[[int], None] = os._exit
                               ) -> Callable[[], None]:
    """Start the watchdog (main thread only); returns the function that removes it."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        old = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    except (ValueError, OSError):  # pragma: no cover - not the main thread / interpreter
        os.close(r)
        os.close(w)
        return lambda: None
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            try:
                data = os.read(r, 64)
            except OSError:
                return
            if not data or done.is_set():
                return
            if signal.SIGINT in data:
                if done.wait(grace):  # the KeyboardInterrupt path finished in time
                    return
                try:
                    sys.stderr.write(f"semcbir {command}: interrupted\n")
                    sys.stderr.flush()
                finally:
                    exit_fn(130)
                return

    threading.Thread(target=watch, name="semcbir-sigint", daemon=True).start()

    def remove() -> None:
        done.set()
        try:
            signal.set_wakeup_fd(old)
        except (ValueError, OSError):  # pragma: no cover
            pass
        os.close(w)  # the reader sees end of file and stops

    return remove
