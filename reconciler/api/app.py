"""The REST API of SPEC.md §4 as one aiohttp application: ``create_app(store, view, ...)``.

Middleware, in order: the access log (obreconcile.api.access, INFO: one line per request, the
path escaped, never a token), errors (ApiError -> JSON; a store that cannot be used -> 503; anything
else -> a bare JSON 500, logged, no stack trace in the response), then authentication (X-Auth-Token only; never from the URL)
which also pins the desired state the handler checks and writes against, then the body's decoding
(reconciler.api.body: one decoder for every route, before any handler). Blocking store calls
run in threads: the same event loop runs the health checks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiohttp import web

from reconciler.api import access_nodes, checks, health, history, service, ui, upstreams, users
from reconciler.api.auth import LoginLimits
from reconciler.api.authz import actor_of
from reconciler.api.context import ACTOR, API, BODY, DESIRED, MAX_BODY, SERVED_ROUTES, ApiContext, read_body
from reconciler.api.problems import ApiError
from reconciler.api.routes import Handler, Route
from reconciler.api.view import ControllerView
from reconciler.errors import StoreError, StoreUnavailableError
from reconciler.store import Store
from reconciler.store.tokens import TokenRecord

log = logging.getLogger("obreconcile.api")
access_log = logging.getLogger("obreconcile.api.access")
SERVER = "obreconcile"  # the Server header: no library or version for a scanner to match

ALL_ROUTES: tuple[Route, ...] = (
    *upstreams.ROUTES,
    *checks.ROUTES,
    *access_nodes.ROUTES,
    *users.ROUTES,
    *service.ROUTES,
    *health.ROUTES,
    *history.ROUTES,
    *ui.ROUTES,
)
PUBLIC = {(r.method, r.path) for r in ALL_ROUTES if r.public}


@web.middleware
async def access(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One line per request: client, user, method, path (escaped), status, milliseconds."""
    start = time.monotonic()
    status = "-"  # cancelled: the client went away
    try:
        response = await handler(request)
        status = str(response.status)
        return response
    finally:
        if access_log.isEnabledFor(logging.INFO):
            user = request[ACTOR].name if ACTOR in request else "-"
            took = (time.monotonic() - start) * 1000
            path = printable(request.raw_path)
            access_log.info("%s %s %s %s %s %.1fms", request.remote, user, request.method, path, status, took)


def printable(text: str, limit: int = 300) -> str:
    """``text`` for a log line: non-ASCII and control characters escaped, at most ``limit`` characters."""
    escaped = text.encode("unicode_escape", "backslashreplace").decode("ascii")
    return escaped if len(escaped) <= limit else escaped[:limit] + "..."


async def server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as e:
        return e.response()
    except StoreError as e:  # an outage is not the client's fault, nor a bug: 503, no traceback
        log.warning("%s %s: %s", request.method, request.path, e)
        retry = {"Retry-After": "5"} if isinstance(e, StoreUnavailableError) else None
        return ApiError(503, "the store cannot be used now; try again later", str(e), retry).response()
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[MAX_BODY]
        return ApiError(413, "request body too large", f"at most {limit} bytes").response()
    except web.HTTPException as e:
        if e.status >= 400:
            headers = {k: v for k, v in e.headers.items() if k in ("Allow", "Retry-After")}
            return ApiError(e.status, e.reason, None, headers).response()
        raise
    except (
        asyncio.CancelledError,
        ConnectionResetError,
        KeyboardInterrupt,
        SystemExit,
    ):  # the client left: no answer to give
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return ApiError(500, "internal error (see the controller's log)").response()


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route.resource
    template = route.canonical if route is not None else request.path
    if (request.method, template) in PUBLIC or request.match_info.http_exception is not None:
        return await handler(request)
    token = request.headers.get("X-Auth-Token", "")
    if not token:
        raise ApiError(401, "authentication needed: send the token from POST /auth in X-Auth-Token")
    context = request.app[API]
    record = context.tokens.recent(token)
    if record is None or context.desired.stale():

        def lookup() -> tuple[TokenRecord | None, int]:
            return context.tokens.lookup(token), context.store.revision()

        try:
            record, revision = await asyncio.to_thread(lookup)
        except StoreUnavailableError:
            record, revision = context.tokens.known(token), 0  # the last desired state, if any
            if record is None:
                raise
        if record is None:
            raise ApiError(401, "invalid or expired token")
        desired = await context.desired.at(revision)
    else:
        desired = await context.desired.at(0)
    user = desired.state.users.get(record.user)
    if user is None or not user.enabled:
        raise ApiError(401, "invalid or expired token")
    request[ACTOR] = actor_of(user, desired.state.groups)
    request[DESIRED] = desired
    try:
        return await handler(request)
    finally:
        if request.method != "GET":
            context.desired.expire()  # read your writes: the next request reads the revision


@web.middleware
async def decode_body(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every body is decoded before its handler looks at the path: whatever reconciler.api.body
    refuses is a 400 on every route (after 401 for a missing token), whatever the path names."""
    if request.body_exists and request.match_info.http_exception is None:
        request[BODY] = await read_body(request)
    return await handler(request)


def create_app(
    store: Store,
    view: ControllerView,
    *,
    metrics_token: str | None = None,
    token_lifetime: float = 3600,
    client_max_size: int = 1 << 20,
    clock: Callable[[], float] = time.time,
    login_limits: LoginLimits | None = None,
    cache_seconds: float = 0.0,
) -> web.Application:
    """The API application; ``serve`` adds its background tasks and runs it (see docs/api.md).

    ``cache_seconds``: how long a token found valid, and the store's revision, are trusted
    without asking the store again (0: every request asks; see docs/api.md for the trade-off).
    """
    app = web.Application(middlewares=[access, errors, authenticate, decode_body], client_max_size=client_max_size)
    app.on_response_prepare.append(server_header)
    app[API] = ApiContext.build(
        store,
        view,
        metrics_token=metrics_token,
        token_lifetime=token_lifetime,
        clock=clock,
        login_limits=login_limits or LoginLimits(),
    )
    app[API].tokens.recheck = app[API].desired.recheck = cache_seconds
    app[SERVED_ROUTES] = ALL_ROUTES
    app[history.AUDIT] = history.AuditLog()
    app[MAX_BODY] = client_max_size
    for route in ALL_ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
    return app
