"""``semcbir``: index a folder of images, search it, evaluate, and make galleries.

Commands (``semcbir COMMAND --help`` for every option; one module per command here)::

    semcbir index FOLDER... -o INDEX [--signature sbs|sbovp|hybrid] [--model NAME|PATH]
                  [--append | --overwrite] [signature options]
    semcbir search INDEX IMAGE... [-k 10] [--json]
    semcbir info INDEX [--json]
    semcbir eval --dataset corel1k|msrc|folders [--root DIR] [--oracle] [--report DIR]
                 [--signature sbs|sbovp|hybrid] [signature options, lists allowed]
    semcbir gallery INDEX IMAGE... -o DIR [-k 10] [--categories corel1k|msrc|parent]
    semcbir serve INDEX [--host 127.0.0.1] [--port 8000]
    semcbir train-hash corel1k|msrc|folders -o CKPT [--bits 48] [--resume] [--evaluate]

Signature options come from the registered signatures' parameters (their defaults are the
``"default"`` presets: ``semcbir_fast.signatures``). Also ``python -m semcbir_fast ...``. A
user mistake (missing file, bad option value, corrupt index) prints one line ``semcbir
<command>: error: ...`` on stderr and exits with status 1 (2 for command-line syntax
errors, 130 on Ctrl-C, within a second: ``cli._signals``); tracebacks are for bugs only (``SEMCBIR_DEBUG=1`` shows them for
every error).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import eval as eval_cmd
from . import gallery, index, info, search, serve, train_hash
from ._common import DEFAULT_MODEL, CLIError, cli_wording, err

__all__ = ["DEFAULT_MODEL", "CLIError", "build_parser", "main"]

COMMANDS = (index, search, info, eval_cmd, gallery, serve, train_hash)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``semcbir`` (exposed for documentation tools)."""
    from .. import __version__

    ap = argparse.ArgumentParser(
        prog="semcbir",
        description="Content-based image retrieval from semantic segmentation "
        "(label maps -> signatures -> exact search).")
    ap.add_argument("--version", action="version", version=f"semcbir_fast {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for cmd in COMMANDS:
        cmd.register(sub)
    return ap


def _fmt_os_error(exc: OSError) -> str:
    if exc.filename is not None and exc.strerror:
        return f"{exc.strerror}: {exc.filename}"
    return str(exc)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``semcbir`` command line; returns the exit status (0 = success)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a syntax error (argparse printed it)
        return int(exc.code) if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("SEMCBIR_DEBUG", "") not in ("", "0")
    from ..index import IndexFormatError

    remove_watchdog = None
    if argv is None and args.command != "serve":  # a process of its own (uvicorn: its own)
        from ._signals import install_interrupt_watchdog

        remove_watchdog = install_interrupt_watchdog(args.command)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        err(f"semcbir {args.command}: interrupted")
        return 130
    except CLIError as exc:
        if debug:
            raise
        err(f"semcbir {args.command}: error: {exc}")
        return 1
    except (IndexFormatError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
            PermissionError, ValueError, KeyError) as exc:
        if debug:
            raise
        msg = cli_wording(_fmt_os_error(exc) if isinstance(exc, OSError) else str(exc))
        if isinstance(exc, KeyError):
            msg = str(exc.args[0]) if exc.args else "key error"
        err(f"semcbir {args.command}: error: {msg.splitlines()[0] if msg else type(exc).__name__}")
        return 1
    except BrokenPipeError:  # e.g. `semcbir search ... | head`
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        except OSError:
            pass
        return 0
    finally:
        if remove_watchdog is not None:
            remove_watchdog()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
