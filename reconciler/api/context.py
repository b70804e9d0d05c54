"""What every handler shares: the store, the controller's view, tokens, limits, the desired cache.

``Request`` helpers read the authenticated actor, the desired state it was checked against,
and a JSON object body (400, located, when it is not one).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web

from reconciler.api.auth import FailedLogins, LoginLimits, Tokens
from reconciler.api.authz import Actor
from reconciler.api.body import BodyError, decode
from reconciler.api.candidate import Desired, DesiredCache
from reconciler.api.problems import ApiError, problem_detail
from reconciler.api.routes import Route
from reconciler.api.view import ControllerView, StoreView
from reconciler.errors import Problem
from reconciler.manifest.located import shown
from reconciler.store import Store


@dataclass
class ApiContext:
    store: Store
    view: ControllerView
    tokens: Tokens
    failed_logins: FailedLogins
    desired: DesiredCache
    metrics_token: str | None = None
    clock: Callable[[], float] = field(default=lambda: 0.0)
    listings: dict[tuple[Any, ...], bytes] = field(default_factory=dict)  # (path, revision, groups, flags)
    status_cache: tuple[float, bytes] | None = None  # GET /status, reused for cache_seconds

    def listing(self, key: tuple[Any, ...], revision: int, make: Callable[[], Any]) -> bytes:
        """A list response's JSON, kept while the revision stays (one per path and set of rights)."""
        key = (*key, revision)
        found = self.listings.get(key)
        if found is None:
            if len(self.listings) >= MAX_LISTINGS or any(k[-1] != revision for k in self.listings):
                self.listings.clear()
            found = self.listings[key] = json.dumps(make()).encode()
        return found

    @classmethod
    def build(
        cls,
        store: Store,
        view: ControllerView,
        *,
        metrics_token: str | None,
        token_lifetime: float,
        clock: Callable[[], float],
        login_limits: LoginLimits,
    ) -> ApiContext:
        return cls(
            store,
            view,
            Tokens(store, token_lifetime, clock),
            FailedLogins(login_limits, clock),
            DesiredCache(store),
            metrics_token,
            clock,
        )


API = web.AppKey("api", ApiContext)
SERVED_ROUTES: web.AppKey[tuple[Route, ...]] = web.AppKey("served_routes")  # every route served (and documented)
MAX_BODY: web.AppKey[int] = web.AppKey("max_body")  # bytes: create_app's client_max_size
MAX_LISTINGS = 32  # cached list responses (one per set of rights); about 300 kB each at 1,000 upstreams
T = TypeVar("T")


async def from_view(request: web.Request, read: Callable[[ControllerView], T]) -> T:
    """Ask the controller's view: in memory, on the loop; StoreView reads the store, in a thread."""
    view = request.app[API].view
    if isinstance(view, StoreView):
        return await asyncio.to_thread(read, view)
    return read(view)


ACTOR = web.RequestKey("actor", Actor)
DESIRED = web.RequestKey("desired", Desired)


def api(request: web.Request) -> ApiContext:
    return request.app[API]


def actor(request: web.Request) -> Actor:
    return request[ACTOR]


def desired(request: web.Request) -> Desired:
    return request[DESIRED]


def json_answer(data: Any, status: int = 200, revision: int | None = None) -> web.Response:
    """A JSON response; ``revision``: the store revision it reflects (``X-Store-Revision``)."""
    headers = {"X-Store-Revision": str(revision)} if revision is not None else None
    return web.json_response(data, status=status, headers=headers)


INLINE_BODY = 64 << 10  # bytes decoded on the event loop; a longer body is decoded in a thread


@dataclass(frozen=True)
class Body:
    """A request's body, decoded (reconciler.api.body): ``size`` 0 when there was none."""

    size: int
    value: Any


BODY = web.RequestKey("body", Body)


async def read_body(request: web.Request) -> Body:
    """The request's body decoded; 400, located, for whatever ``decode`` refuses."""
    raw = await request.read()
    if not raw:
        return Body(0, None)
    try:
        value = decode(raw) if len(raw) <= INLINE_BODY else await asyncio.to_thread(decode, raw)
    except BodyError as e:
        raise body_error(e.problem) from e
    return Body(len(raw), value)


async def json_object(request: web.Request, required: bool = True) -> dict[str, Any]:
    """The request's JSON object body (decoded by app.py's middleware); 400, located, when it is not one."""
    body = request[BODY] if BODY in request else await read_body(request)
    if not body.size:
        if required:
            raise body_error(Problem("body", 0, 0, message="a JSON object body is required"))
        return {}
    if not isinstance(body.value, dict):
        raise body_error(Problem("body", 0, 0, message="the body must be a JSON object"))
    return dict(body.value)


async def identified_object(request: web.Request, field: str, value: str) -> dict[str, Any]:
    """The JSON object body with its identity ``field`` (name, hostname, group_name) the path's
    ``value``: filled in when left out, 400 when it names another (an identity never changes)."""
    fields = {field: value, **await json_object(request)}
    if fields[field] != value:
        message = f"{shown(fields[field])} is not {value!r} of the path: it never changes (delete and create instead)"
        raise body_error(Problem("body", 0, 0, field=field, message=message))
    return fields


def body_error(problem: Problem) -> ApiError:
    return ApiError(400, "invalid body", problem_detail([problem]))
