"""Ctrl-C ends a command within a second even when the main thread never returns to the
interpreter (cli._signals): a subprocess whose Python-level SIGINT handler does nothing,
so only the watchdog can end it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from reference import package_root

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")

CHILD = textwrap.dedent("""
    import signal, sys, time
    from semcbir_fast.cli._signals import install_interrupt_watchdog
    remove = install_interrupt_watchdog("index", grace=0.2)
    signal.signal(signal.SIGINT, lambda *a: None)  # a main thread that never reacts
    print("ready", flush=True)
    if sys.argv[1] == "removed":
        remove()
    for _ in range(300):
        time.sleep(0.1)
    print("finished", flush=True)
""")


def _child(mode: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": package_root()}
    return subprocess.Popen([sys.executable, "-c", CHILD, mode], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509


def test_watchdog_ends_an_unresponsive_process_with_130():
    p = _child("installed")
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=20)  # without the watchdog it would run 30 s
    assert p.returncode == 130 and "finished" not in out
    assert "semcbir index: interrupted" in err


def test_removed_watchdog_leaves_sigint_to_python():
    p = _child("removed")
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGINT)  # handled by the do-nothing handler: the child goes on
    try:
        p.wait(timeout=1.5)
        pytest.fail("the process ended although the watchdog was removed")
    except subprocess.TimeoutExpired:
        pass
    p.kill()
    p.communicate()


def test_cli_in_process_calls_install_no_watchdog(monkeypatch):
    """main(argv) (tests, notebooks) never installs it: it could end the caller's process."""
    from semcbir_fast import cli
    from semcbir_fast.cli import _signals

    monkeypatch.setattr(_signals, "install_interrupt_watchdog",
                        lambda *a, **k: pytest.fail("installed"))
    assert cli.main(["info", "/nonexistent.sbsi"]) == 1
