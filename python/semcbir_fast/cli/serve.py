"""``semcbir serve INDEX``: search the index from a web page and an HTTP API."""

from __future__ import annotations

import argparse
import ipaddress
from typing import Any

from ._common import CLIError, add_model_options, err, int_in, positive_int

HELP = "serve a search page and HTTP API for an index"

_LOOPBACK_NAMES = ("localhost",)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "serve", help=HELP,
        description="Load the index and its model once and answer searches over HTTP: a "
        "page at http://HOST:PORT/ (drop an image, see its top-k, select a result to search "
        "by it) and a JSON API (POST /search, GET /images/ID, /thumbs/ID, /info, /healthz; "
        "docs/service.md). The model is --model, else the registered model name recorded "
        "in the index (a model file path recorded in an index is never loaded).")
    p.add_argument("index", metavar="INDEX")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (127.0.0.1: this machine only; 0.0.0.0 exposes the "
                   "index and its images to the network)")
    p.add_argument("--port", type=int_in(0, 65535, "a port in [0, 65535]"), default=8000,
                   help="TCP port (8000)")
    p.add_argument("--no-model", action="store_true",
                   help="load no model: search by indexed images only (uploads get 409)")
    g = p.add_argument_group("limits")
    g.add_argument("--max-upload-mb", type=positive_int, default=16,
                   help="largest uploaded file, MiB (16)")
    g.add_argument("--max-pixels", type=positive_int, default=40_000_000,
                   help="largest uploaded image, width x height (40000000)")
    g.add_argument("--max-k", type=positive_int, default=100, help="largest k (100)")
    g.add_argument("--workers", type=int_in(0, 256, "an integer in [0, 256]"), default=0,
                   help="threads for queries and thumbnails (0: one per core, at most 8)")
    g.add_argument("--max-pending", type=positive_int, default=64,
                   help="requests waiting for those threads before 503 (64)")
    g.add_argument("--threads", type=int_in(0, 1024, "an integer >= 0"), default=1,
                   help="threads of one index scan (1; 0 = all cores)")
    g.add_argument("--allow-host", action="append", default=None, metavar="HOST",
                   help="accepted Host header (repeatable; default for a loopback bind: "
                   "127.0.0.1, localhost, [::1] and the bound address; else any)")
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (info)")
    add_model_options(p, model_default=None)
    p.set_defaults(func=run)


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str, given: list[str] | None) -> tuple[str, ...] | None:
    """The Host headers to accept: ``given``, else the loopback names for a loopback bind
    (a page elsewhere that rebinds its DNS name to 127.0.0.1 is refused), else any."""
    if given:
        return tuple(given)
    if _is_loopback(host):
        bound = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return tuple(dict.fromkeys(["127.0.0.1", "localhost", "[::1]", bound]))
    return None


def build(args: argparse.Namespace) -> Any:
    """The loaded service and its app (model and index read once, here)."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401

        from ..service import ServiceConfig, create_app, open_service
    except ImportError as exc:
        raise CLIError(f"semcbir serve needs the 'service' extra ({exc}); install it with "
                       "pip install 'semcbir_fast[service]'") from None
    try:
        config = ServiceConfig(
            max_upload_bytes=args.max_upload_mb << 20, max_pixels=args.max_pixels,
            max_k=args.max_k, default_k=min(10, args.max_k), workers=args.workers,
            max_pending=args.max_pending, search_threads=args.threads,
            allowed_hosts=allowed_hosts(args.host, args.allow_host))
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    if not args.no_model:
        try:
            import torch  # noqa: F401
        except ImportError as exc:
            raise CLIError(f"uploads need the 'segment' extra ({exc}); install it, or pass "
                           "--no-model to search by indexed images only") from None
    service = open_service(args.index, model=args.model, no_model=args.no_model,
                           device=args.device, dtype=args.dtype, config=config)
    return service, create_app(service)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    service, app = build(args)
    if not _is_loopback(args.host):
        err(f"semcbir serve: warning: binding {args.host}: anyone who reaches this address "
            "can search the index and read its images")
    host = f"[{args.host}]" if ":" in args.host else args.host
    err(f"semcbir serve: {service.name}: {len(service.index)} images, "
        f"{service.index.describe()}; model {service.info()['model'] or '(none)'}")
    err(f"semcbir serve: open http://{host}:{args.port}/ (Ctrl-C stops)")
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                timeout_keep_alive=5, server_header=False)
    return 0
