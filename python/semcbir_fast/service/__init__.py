"""``semcbir serve``: search an index over HTTP, with a web page (FastAPI + uvicorn).

>>> from semcbir_fast.service import open_service, create_app, ServiceConfig  # doctest: +SKIP
>>> service = open_service("corel1k.sbsi", config=ServiceConfig(max_k=50))    # doctest: +SKIP
>>> app = create_app(service)            # uvicorn.run(app, host="127.0.0.1")  # doctest: +SKIP

- :mod:`.engine`: :class:`SearchService` (the index and model loaded once; queries by an
  uploaded image or a stored id through :class:`~semcbir_fast.pipeline.Retriever`; stored
  images and thumbnails; limits) and :class:`ServiceConfig`. No web framework needed.
- :mod:`.app`: :func:`create_app`, the HTTP routes around it (needs the ``service`` extra:
  ``pip install 'semcbir_fast[service]'``).
- ``static/``: the page (plain HTML, JavaScript and CSS; nothing from a CDN).

API, limits and measured throughput: ``docs/service.md``.
"""

from __future__ import annotations

from typing import Any

from .engine import SearchService, ServiceConfig, ServiceError, open_service

__all__ = ["SearchService", "ServiceConfig", "ServiceError", "create_app", "open_service"]


def create_app(service: SearchService) -> Any:
    """The FastAPI application of ``service`` (:func:`semcbir_fast.service.app.create_app`)."""
    from .app import create_app as _create_app

    return _create_app(service)
