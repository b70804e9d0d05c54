"""/check/ routes: custom health checks."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from reconciler.api import authz
from reconciler.api.authz import Access
from reconciler.api.candidate import Change, manifest_body, write
from reconciler.api.context import actor, api, desired, identified_object, json_answer, json_object
from reconciler.api.problems import ApiError, forbidden, not_found
from reconciler.api.routes import Route
from reconciler.api.upstreams import check_owner
from reconciler.manifest.model import Check


def check_of(request: web.Request, need: Access) -> tuple[Check, dict[str, Any]]:
    name = request.match_info["name"]
    state = desired(request).state
    found = state.checks.get(name)
    access = authz.check_access(actor(request), found, state.upstreams.values()) if found else Access.NONE
    if found is None or access == Access.NONE:
        raise not_found(f"check {name!r}")
    if access < need:
        raise forbidden(f"no write access to check {name!r}")
    return found, dict(desired(request).body("Check", name) or {})


async def list_checks(request: web.Request) -> web.Response:
    d, who = desired(request), actor(request)
    upstreams = list(d.state.upstreams.values())
    return json_answer(
        [d.body("Check", n) for n, c in sorted(d.state.checks.items()) if authz.check_access(who, c, upstreams) > 0]
    )


async def create_check(request: web.Request) -> web.Response:
    body = manifest_body("Check", await json_object(request))
    name = body.get("name")
    d = desired(request)
    if isinstance(name, str) and name in d.state.checks:
        raise ApiError(409, f"check {name!r} exists")
    check_owner(request, body.get("owner"))
    revision = await write(api(request).store, d, [Change("Check", str(name), body)], actor(request).name)
    return json_answer(body, 201, revision)


async def get_check(request: web.Request) -> web.Response:
    return json_answer(check_of(request, Access.READ)[1])


async def replace_check(request: web.Request) -> web.Response:
    old, _ = check_of(request, Access.WRITE)
    body = manifest_body("Check", await identified_object(request, "name", old.name))
    check_owner(request, body.get("owner"), old.owner)
    revision = await write(api(request).store, desired(request), [Change("Check", old.name, body)], actor(request).name)
    return json_answer(body, 200, revision)


async def delete_check(request: web.Request) -> web.Response:
    old, _ = check_of(request, Access.WRITE)
    revision = await write(api(request).store, desired(request), [Change("Check", old.name, None)], actor(request).name)
    return web.Response(status=204, headers={"X-Store-Revision": str(revision)})


ROUTES = (
    Route("GET", "/check/", list_checks, "Checks the user may read", response="[Check]"),
    Route("POST", "/check/", create_check, "Create a check", "Check", "Check", 201, errors=(400, 401, 403, 409)),
    Route("GET", "/check/{name}", get_check, "One check", response="Check"),
    Route("PUT", "/check/{name}", replace_check, "Replace a check", "Check", "Check", errors=(400, 401, 403, 404, 409)),
    Route(
        "DELETE",
        "/check/{name}",
        delete_check,
        "Delete a check no upstream uses",
        status=204,
        errors=(401, 403, 404, 409),
    ),
)
