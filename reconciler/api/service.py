"""/auth (log in, renew, log out), /status, /metrics and /openapi.json."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from functools import cache
from typing import Any

from aiohttp import web

from reconciler.api import authz
from reconciler.api.auth import check_login, expiry_text
from reconciler.api.context import SERVED_ROUTES, actor, api, from_view, json_answer, json_object
from reconciler.api.openapi import openapi_document
from reconciler.api.problems import ApiError, forbidden, not_found
from reconciler.api.routes import Route
from reconciler.store.tokens import TokenRecord

BAD_LOGIN = "invalid user name or password"
STATUS_REUSE = 0.25  # seconds a GET /status answer is served again (at least; cache_seconds if longer)


def token_answer(token: str, record: TokenRecord) -> web.Response:
    return json_answer({"token": token, "token_expiration": expiry_text(record.expires)})


async def post_auth(request: web.Request) -> web.Response:
    """Log in with {"user_name", "password"}, or renew with {"token"}."""
    body = await json_object(request)
    context = api(request)
    if set(body) == {"token"} and isinstance(body["token"], str):
        found = await asyncio.to_thread(context.tokens.lookup, body["token"])
        owner = (await context.desired.latest()).state.users.get(found.user) if found else None
        if found is None or owner is None or not owner.enabled:
            raise ApiError(401, "invalid or expired token")
        renewed = await asyncio.to_thread(context.tokens.renew, body["token"])
        if renewed is None:
            raise ApiError(401, "invalid or expired token")
        return token_answer(body["token"], renewed)
    user_name, password = body.get("user_name"), body.get("password")
    if set(body) != {"user_name", "password"} or not isinstance(user_name, str) or not isinstance(password, str):
        raise ApiError(400, "invalid body", 'send {"user_name", "password"} to log in or {"token"} to renew')
    address = request.remote or "?"
    wait = context.failed_logins.retry_after(user_name, address)
    if wait > 0:
        raise ApiError(429, "too many failed logins; try again later", None, {"Retry-After": str(int(wait) + 1)})
    d = await context.desired.latest()
    user = d.state.users.get(user_name)
    if not await asyncio.to_thread(check_login, user, password[:1024]):
        context.failed_logins.failed(user_name, address)
        raise ApiError(401, BAD_LOGIN)
    context.failed_logins.succeeded(user_name)
    token, record = await asyncio.to_thread(context.tokens.issue, user_name)
    return token_answer(token, record)


async def delete_auth(request: web.Request) -> web.Response:
    """Revoke {"token"} (yours, or anyone's with MANAGEMENT); no body: the token of this request."""
    body = await json_object(request, required=False)
    token = body.get("token", request.headers.get("X-Auth-Token", ""))
    if not isinstance(token, str):
        raise ApiError(400, "invalid body", "token: a string")
    context = api(request)
    record = await asyncio.to_thread(context.tokens.lookup, token)
    if record is None:
        raise not_found("token")
    who = actor(request)
    if record.user != who.name and not authz.may_manage(who):
        raise forbidden("revoking another user's token needs MANAGEMENT")
    await asyncio.to_thread(context.tokens.revoke, record)
    return web.Response(status=204)


async def get_status(request: web.Request) -> web.Response:
    context = api(request)
    cached = context.status_cache
    if cached is None or time.monotonic() - cached[0] > max(context.tokens.recheck, STATUS_REUSE):
        status: dict[str, Any] = await from_view(request, lambda v: v.status())
        cached = (time.monotonic(), json.dumps(status).encode())
        context.status_cache = cached
    return web.Response(body=cached[1], content_type="application/json")


async def get_metrics(request: web.Request) -> web.Response:
    expected = api(request).metrics_token
    if expected is not None:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {expected}".encode()):
            raise ApiError(401, "metrics need Authorization: Bearer <metrics token>")
    text = await from_view(request, lambda v: v.metrics())
    return web.Response(body=text, content_type="text/plain", charset="utf-8", headers={"Version": "0.0.4"})


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(_document(request.app[SERVED_ROUTES]))


@cache
def _document(routes: tuple[Route, ...]) -> dict[str, Any]:
    return openapi_document(routes)


ROUTES = (
    Route(
        "POST",
        "/auth",
        post_auth,
        "Log in (user_name, password) or renew (token)",
        "AuthRequest",
        "Token",
        public=True,
        errors=(400, 401, 429),
    ),
    Route(
        "DELETE",
        "/auth",
        delete_auth,
        "Revoke a token (yours, or any with MANAGEMENT)",
        "TokenOnly",
        status=204,
        errors=(400, 401, 403, 404),
    ),
    Route("GET", "/status", get_status, "Controller and fleet status", response="Status", errors=(401,)),
    Route(
        "GET",
        "/metrics",
        get_metrics,
        "Prometheus metrics (Bearer metrics token when serve sets one)",
        response="text",
        public=True,
        errors=(401,),
    ),
    Route("GET", "/openapi.json", get_openapi, "This document", response="Object", public=True, errors=()),
)
