"""A route of the API: method, path, handler, and what OpenAPI says of it.

Each handler module lists its routes in a ``ROUTES`` tuple; app.py adds them all to the router
and openapi.py documents exactly the same tuple, so what is served is what is documented.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # aiohttp's form: /upstream/{name}
    handler: Handler
    summary: str
    body: str | None = None  # name of the request body's schema (components/schemas)
    response: str | None = None  # name of the success response's schema; "[X]" is a list of X
    status: int = 200  # success status
    public: bool = False  # no X-Auth-Token needed
    errors: tuple[int, ...] = (401, 403, 404)
    query: tuple[tuple[str, str], ...] = ()  # query parameters: (name, JSON type "string" | "integer" | "boolean")
