"""HTTP around :class:`~semcbir_fast.service.engine.SearchService` (FastAPI).

Routes (all answers JSON, except the page, images and thumbnails)::

    GET  /                 the search page (static/index.html, app.js, app.css)
    POST /search           multipart/form-data: image=<file> or id=<int>, k, max_distance
                           (or a JSON object {"id": 3, "k": 10}, or a url-encoded form)
    GET  /images/{id}      the stored image file of id (a key of the index, nothing else)
    GET  /thumbs/{id}      a JPEG thumbnail of it
    GET  /random           {"id": ...}: an indexed image at random
    GET  /info             the index, model, options and limits
    GET  /healthz          {"status": "ok", "count": N}

Every refusal is a 4xx (503 when the queue is full) with ``{"detail": "<one line>"}``;
a bug is a 500 with the same shape and its traceback in the server log only. Work that
takes CPU (decoding, segmentation, search, thumbnails) runs in a bounded thread pool, not
on the event loop; the request body is counted while it arrives and cut off at the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from .engine import SearchService, ServiceError, _too_large

__all__ = ["create_app"]

log = logging.getLogger("semcbir_fast.service")

#: Bytes a multipart form may carry beyond its file (boundaries, part headers, fields).
FORM_OVERHEAD = 64 << 10

_PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; "
             "img-src 'self' blob:; connect-src 'self'; base-uri 'none'; "
             "form-action 'none'; frame-ancestors 'none'")
_FILE_CSP = "default-src 'none'; sandbox"


class _TooLarge(Exception):
    pass


def host_name(header: str) -> str:
    """The host of a ``Host`` header without its port (``[::1]:8000`` -> ``[::1]``)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[: header.find("]") + 1] if "]" in header else header
    return header.split(":", 1)[0]


class _Guard:
    """Pure ASGI middleware: refuses a ``Host`` that is not allowed (DNS rebinding), and
    adds to every answer: no sniffing, no framing, no referrer, a strict CSP."""

    def __init__(self, app: Any, allowed_hosts: tuple[str, ...] | None) -> None:
        self.app = app
        self.allowed = None if allowed_hosts is None else {host_name(h) for h in allowed_hosts}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        page = scope.get("path", "") in ("/", "/index.html")
        if self.allowed is not None and "*" not in self.allowed:
            host = next((v.decode("latin-1") for k, v in scope.get("headers", ())
                         if k == b"host"), "")
            if host_name(host) not in self.allowed:
                shown = host[:60].encode("ascii", "replace").decode()
                inner = _error(400, f"host {shown!r} is not served here; use "
                               f"{min(self.allowed)} (or start with --allow-host)")
                page = False
            else:
                inner = self.app
        else:
            inner = self.app

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"x-content-type-options", b"nosniff"),
                            (b"referrer-policy", b"no-referrer"),
                            (b"x-frame-options", b"DENY"),
                            (b"content-security-policy",
                             (_PAGE_CSP if page else _FILE_CSP).encode())]
                message = {**message, "headers": headers}
            await send(message)

        await inner(scope, receive, send_with_headers)


def _error(status: int, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": reason}, status_code=status, headers=headers)


def create_app(service: SearchService) -> FastAPI:
    """The FastAPI application of ``service`` (run it with uvicorn, or test it with
    ``fastapi.testclient.TestClient``). The thread pool lives as long as the app's
    lifespan (``with TestClient(app)`` or a server run)."""
    cfg = service.config
    state: dict[str, Any] = {"pending": 0, "executor": None}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state["executor"] = ThreadPoolExecutor(cfg.executor_workers,
                                               thread_name_prefix="semcbir-serve")
        try:
            yield
        finally:
            state["executor"].shutdown(wait=True, cancel_futures=True)
            state["executor"] = None

    app = FastAPI(title="semcbir_fast", version=service.info()["library_version"],
                  docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.service = service

    async def run(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """``fn(*args, **kw)`` in the bounded pool; 503 when too many wait for it."""
        if state["pending"] >= cfg.max_pending:
            raise ServiceError(503, f"busy: {cfg.max_pending} requests are waiting; retry")
        ex = state["executor"]
        if ex is None:  # pragma: no cover - only without a lifespan
            ex = state["executor"] = ThreadPoolExecutor(cfg.executor_workers)
        state["pending"] += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                ex, functools.partial(fn, *args, **kw))
        finally:
            state["pending"] -= 1

    # ------------------------------------------------------------------ errors
    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        headers = {"retry-after": "1"} if exc.status == 503 else None
        return _error(exc.status, exc.reason, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        first = errs[0] if errs else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return _error(400, f"{where}: {first.get('msg', 'invalid request')}".strip(": "))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail).splitlines()[0],
                      getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:  # pragma: no cover
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _error(500, "internal error (the server log has the details)")

    # ------------------------------------------------------------------ API
    async def read_body(request: Request) -> dict[str, Any]:
        """The request's fields (a file as ``bytes`` under "image"), the body cut off past
        the upload limit while it is received."""
        limit = cfg.max_upload_bytes + FORM_OVERHEAD
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise ServiceError(413, _too_large(cfg.max_upload_bytes))
        received = 0
        upstream = request.receive

        async def receive() -> Any:
            nonlocal received
            message = await upstream()
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge
            return message

        counted = Request(request.scope, receive)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            if ctype == "application/json":
                try:
                    body = json.loads(await counted.body() or b"null")
                except (ValueError, UnicodeDecodeError):
                    raise ServiceError(400, "the body is not valid JSON") from None
                if not isinstance(body, dict):
                    raise ServiceError(400, "the JSON body must be an object such as "
                                       '{"id": 3, "k": 10}')
                if "image" in body:
                    raise ServiceError(400, "upload images as multipart/form-data "
                                       "(field image), not in JSON")
                return body
            if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
                fields: dict[str, Any] = {}
                async with counted.form(max_files=1, max_fields=16) as form:
                    for name, value in form.multi_items():
                        if name in fields:
                            raise ServiceError(400, f"field {name!r} is given twice")
                        if isinstance(value, UploadFile):
                            if name != "image":
                                raise ServiceError(400, f"unexpected file field {name!r}; "
                                                   "send the image as field 'image'")
                            data = await value.read(cfg.max_upload_bytes + 1)
                            fields["image"] = data
                            fields["filename"] = value.filename or ""
                        elif name == "image":
                            raise ServiceError(400, "field 'image' must be a file part (with "
                                               "a filename), not text")
                        else:
                            fields[name] = value
                return fields
        except _TooLarge:
            raise ServiceError(413, _too_large(cfg.max_upload_bytes)) from None
        raise ServiceError(415, "send multipart/form-data (image=<file> or id=<int>, k) or "
                           "a JSON object such as {\"id\": 3, \"k\": 10}")

    @app.post("/search")
    async def search(request: Request) -> JSONResponse:
        fields = await read_body(request)
        if set(fields) & {"path", "key", "file", "url"}:
            raise ServiceError(400, "queries name an uploaded image or a stored id, never a "
                               "path or URL")
        unknown = sorted(set(fields) - {"image", "filename", "id", "k", "max_distance"})
        if unknown:
            raise ServiceError(400, f"unknown field(s) {', '.join(map(repr, unknown))}; "
                               "known: image, id, k, max_distance")
        k = service.parse_k(fields.get("k"))
        max_d = service.parse_max_distance(fields.get("max_distance"))
        has_image, has_id = "image" in fields, fields.get("id") not in (None, "")
        if has_image == has_id:
            raise ServiceError(400, "give either an image (multipart field 'image') or a "
                               "stored image's id, not both" if has_image else
                               "give an image (multipart field 'image') or a stored image's "
                               "id to search by")
        if has_image:
            out = await run(service.search_upload, fields["image"], k=k, max_distance=max_d,
                            filename=fields.get("filename"))
        else:
            out = await run(service.search_id, fields["id"], k=k, max_distance=max_d)
        return JSONResponse(out)

    @app.get("/images/{id}")
    async def image(id: str) -> FileResponse:
        path, media = service.image_file(id)  # a stat: cheap enough for the loop
        return FileResponse(path, media_type=media, headers={"cache-control": "max-age=300"})

    @app.get("/thumbs/{id}")
    async def thumb(id: str) -> Response:
        data = await run(service.thumbnail, id)
        return Response(data, media_type="image/jpeg", headers={"cache-control": "max-age=300"})

    @app.get("/random")
    async def random_image() -> JSONResponse:
        return JSONResponse({"id": service.random_id()})

    @app.get("/info")
    async def info() -> JSONResponse:
        return JSONResponse(service.info())

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok", "count": len(service.index)})

    # ------------------------------------------------------------------ page
    static = resources.files("semcbir_fast.service") / "static"

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(static / "index.html"), media_type="text/html",
                            headers={"cache-control": "no-cache"})

    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    app.add_middleware(_Guard, allowed_hosts=cfg.allowed_hosts)
    return app
