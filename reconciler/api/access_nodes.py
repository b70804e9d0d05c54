"""/node routes (access nodes, and the upstreams they serve) and /management/node (controllers)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from reconciler.api import authz
from reconciler.api.authz import Access
from reconciler.api.candidate import Change, manifest_body, write
from reconciler.api.context import actor, api, desired, from_view, identified_object, json_answer, json_object
from reconciler.api.problems import ApiError, forbidden, not_found
from reconciler.api.routes import Route
from reconciler.manifest.model import AccessNode


def node_of(request: web.Request, need: Access) -> tuple[AccessNode, dict[str, Any]]:
    name = request.match_info["host_name"]
    found = desired(request).state.access_nodes.get(name)
    access = authz.access_node_access(actor(request), found) if found else Access.NONE
    if found is None or access == Access.NONE:
        raise not_found(f"access node {name!r}")
    if access < need:
        raise forbidden(f"no write access to access node {name!r}")
    return found, dict(desired(request).body("AccessNode", name) or {})


def check_upstream_changes(request: web.Request, old: list[Any], new: list[Any]) -> None:
    """Adding or removing an upstream needs WRITE on it too (404 when the user cannot read it)."""
    upstreams = desired(request).state.upstreams
    for name in set(map(str, old)) ^ set(map(str, new)):
        upstream = upstreams.get(name)
        if upstream is None:
            continue  # an unknown upstream is the validation's to report
        access = authz.upstream_access(actor(request), upstream)
        if access == Access.NONE:
            raise not_found(f"upstream {name!r}")
        if access < Access.WRITE:
            raise forbidden(f"no write access to upstream {name!r}")


def changed_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> set[str]:
    return {k for k in set(old) | set(new) if old.get(k) != new.get(k)}


async def commit(request: web.Request, name: str, body: Mapping[str, Any] | None) -> int:
    """Write (or delete, None) the access node ``name``; the new revision."""
    return await write(api(request).store, desired(request), [Change("AccessNode", name, body)], actor(request).name)


async def save(request: web.Request, name: str, body: Mapping[str, Any] | None, status: int = 200) -> web.Response:
    revision = await commit(request, name, body)
    if body is None:
        return web.Response(status=204, headers={"X-Store-Revision": str(revision)})
    return json_answer(dict(body), status, revision)


async def list_access_nodes(request: web.Request) -> web.Response:
    d, who = desired(request), actor(request)
    nodes = sorted(d.state.access_nodes.items())
    return json_answer([d.body("AccessNode", n) for n, a in nodes if authz.access_node_access(who, a) > 0])


async def create_access_node(request: web.Request) -> web.Response:
    body = manifest_body("AccessNode", await json_object(request))
    if not authz.may_create_access_node(actor(request)):
        raise forbidden("only SUPER may create an access node (its connection decides where commands run)")
    name = body.get("name")
    if isinstance(name, str) and name in desired(request).state.access_nodes:
        raise ApiError(409, f"access node {name!r} exists")
    return await save(request, str(name), body, 201)


async def get_access_node(request: web.Request) -> web.Response:
    return json_answer(node_of(request, Access.READ)[1])


async def replace_access_node(request: web.Request) -> web.Response:
    old, old_body = node_of(request, Access.WRITE)
    body = manifest_body("AccessNode", await identified_object(request, "name", old.name))
    changed = changed_fields(old_body, body)
    if not authz.may_change_access_node(actor(request), changed):
        fields = ", ".join(sorted(changed & set(authz.SUPER_ONLY_FIELDS)))
        raise forbidden(f"only SUPER may change {fields} of an access node (owners change description and upstreams)")
    old_upstreams, new_upstreams = old_body.get("upstreams", []), body.get("upstreams", [])
    if isinstance(new_upstreams, list):
        check_upstream_changes(request, old_upstreams, new_upstreams)
    return await save(request, old.name, body)


async def delete_access_node(request: web.Request) -> web.Response:
    old, _ = node_of(request, Access.WRITE)
    return await save(request, old.name, None, 204)


async def get_served(request: web.Request) -> web.Response:
    node, _ = node_of(request, Access.READ)
    name = request.match_info["upstream"]
    upstream = desired(request).state.upstreams.get(name)
    if name not in node.upstreams or upstream is None or authz.upstream_access(actor(request), upstream) == 0:
        raise not_found(f"upstream {name!r} on access node {node.name!r}")
    return json_answer({"access_node": node.name, "upstream": name})


async def change_served(request: web.Request) -> web.Response:
    """PUT adds an upstream to the access node, DELETE removes it: WRITE on both."""
    node, body = node_of(request, Access.WRITE)
    name = request.match_info["upstream"]
    upstream = desired(request).state.upstreams.get(name)
    if upstream is None or authz.upstream_access(actor(request), upstream) == Access.NONE:
        raise not_found(f"upstream {name!r}")
    if authz.upstream_access(actor(request), upstream) < Access.WRITE:
        raise forbidden(f"no write access to upstream {name!r}")
    upstreams = [u for u in body.get("upstreams", []) if u != name]
    if request.method == "DELETE":
        if name not in node.upstreams:
            raise not_found(f"upstream {name!r} on access node {node.name!r}")
    else:
        upstreams.append(name)
    body["upstreams"] = upstreams
    revision = desired(request).revision  # already served: nothing written
    if request.method == "DELETE" or name not in node.upstreams:
        revision = await commit(request, node.name, body)
    if request.method == "DELETE":
        return web.Response(status=204, headers={"X-Store-Revision": str(revision)})
    return json_answer({"access_node": node.name, "upstream": name}, revision=revision)


async def list_management_nodes(request: web.Request) -> web.Response:
    if not authz.may_see_management_nodes(actor(request)):
        raise forbidden("management nodes are for SUPER")
    return json_answer(await from_view(request, lambda v: v.management_nodes()))


async def get_management_node(request: web.Request) -> web.Response:
    if not authz.may_see_management_nodes(actor(request)):
        raise forbidden("management nodes are for SUPER")
    name = request.match_info["host_name"]
    for node in await from_view(request, lambda v: v.management_nodes()):
        if node.get("host_name") == name:
            return json_answer(node)
    raise not_found(f"management node {name!r}")


N = "/node/{host_name}"
W = (400, 401, 403, 404, 409)
ROUTES = (
    Route("GET", "/node", list_access_nodes, "Access nodes the user may read", response="[AccessNode]"),
    Route(
        "POST",
        "/node",
        create_access_node,
        "Create an access node (SUPER)",
        "AccessNode",
        "AccessNode",
        201,
        errors=(400, 401, 403, 409),
    ),
    Route("GET", N, get_access_node, "One access node", response="AccessNode"),
    Route(
        "PUT",
        N,
        replace_access_node,
        "Replace an access node (connection and nginx: SUPER)",
        "AccessNode",
        "AccessNode",
        errors=W,
    ),
    Route("DELETE", N, delete_access_node, "Delete an access node", status=204, errors=(401, 403, 404, 409)),
    Route("GET", N + "/{upstream}", get_served, "Whether the access node serves an upstream", response="Served"),
    Route("PUT", N + "/{upstream}", change_served, "Serve an upstream on the access node", response="Served", errors=W),
    Route(
        "DELETE", N + "/{upstream}", change_served, "Stop serving an upstream on the access node", status=204, errors=W
    ),
    Route(
        "GET",
        "/management/node",
        list_management_nodes,
        "Controllers (SUPER)",
        response="[ManagementNode]",
        errors=(401, 403),
    ),
    Route(
        "GET", "/management/node/{host_name}", get_management_node, "One controller (SUPER)", response="ManagementNode"
    ),
)
