"""/upstream/ routes: upstreams, their nodes (backends), checks and ACL."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from reconciler.api import authz
from reconciler.api.authz import Access
from reconciler.api.candidate import Change, Desired, manifest_body, write
from reconciler.api.context import actor, api, desired, identified_object, json_answer, json_object
from reconciler.api.problems import ApiError, forbidden, not_found
from reconciler.api.routes import Route
from reconciler.manifest.model import BASE_CHECKS, FORCE_STATUS, Upstream


def upstream_of(request: web.Request, need: Access) -> tuple[Upstream, dict[str, Any]]:
    """The upstream named in the path and its body; 404 when unreadable, 403 when not writable."""
    name = request.match_info["name"]
    found = desired(request).state.upstreams.get(name)
    access = authz.upstream_access(actor(request), found) if found else Access.NONE
    if found is None or access == Access.NONE:
        raise not_found(f"upstream {name!r}")
    if access < need:
        raise forbidden(f"no write access to upstream {name!r}")
    body = desired(request).body("Upstream", name)
    return found, dict(body or {})


def check_new_checks(request: web.Request, old: Upstream | None, body: Mapping[str, Any]) -> None:
    """Every check newly put on the upstream must be one the actor may use (403; 404 if hidden)."""
    have = set(old.checks) if old else set()
    state = desired(request).state
    names = body.get("checks", [])
    for name in names if isinstance(names, list) else []:  # not a list: the validation's to report
        if not isinstance(name, str) or name in have or name in BASE_CHECKS or name not in state.checks:
            continue  # unknown names are the validation's to report
        check = state.checks[name]
        if authz.check_access(actor(request), check, state.upstreams.values()) == Access.NONE:
            raise not_found(f"check {name!r}")
        if not authz.may_use_check(actor(request), check):
            raise forbidden(f"check {name!r} belongs to group {check.owner!r}: using it needs GLOBAL_RO")


def check_owner(request: web.Request, owner: Any, old_owner: str | None = None) -> None:
    """403 unless the actor may make ``owner`` the owner group (authz.may_set_owner)."""
    who = actor(request)
    if not isinstance(owner, str) or authz.may_set_owner(who, owner, old_owner):
        return  # not a name: the validation's to report
    if old_owner is not None and old_owner not in who.groups:
        raise forbidden(f"changing the owner needs membership of the owner group {old_owner!r}, GLOBAL_RW or SUPER")
    raise forbidden(f"owner {owner!r} is not one of your groups")


async def commit(request: web.Request, d: Desired, name: str, body: Mapping[str, Any] | None) -> int:
    """Write (or delete, None) the upstream ``name``; the new revision."""
    return await write(api(request).store, d, [Change("Upstream", name, body)], actor(request).name)


async def save(
    request: web.Request, d: Desired, name: str, body: Mapping[str, Any] | None, status: int = 200
) -> web.Response:
    revision = await commit(request, d, name, body)
    if body is None:
        return web.Response(status=204, headers={"X-Store-Revision": str(revision)})
    return json_answer(dict(body), status, revision)


# --- upstreams -------------------------------------------------------------------------------


async def list_upstreams(request: web.Request) -> web.Response:
    d, who = desired(request), actor(request)

    def make() -> list[Any]:
        items = sorted(d.state.upstreams.items())
        return [d.body("Upstream", n) for n, u in items if authz.upstream_access(who, u) > 0]

    body = api(request).listing(("upstreams", who.groups, who.flags), d.revision, make)
    return web.Response(body=body, content_type="application/json")


async def create_upstream(request: web.Request) -> web.Response:
    body = manifest_body("Upstream", await json_object(request))
    name = body.get("name")
    d = desired(request)
    if isinstance(name, str) and name in d.state.upstreams:
        raise ApiError(409, f"upstream {name!r} exists")
    check_owner(request, body.get("owner"))
    check_new_checks(request, None, body)
    return await save(request, d, str(name), body, 201)


async def get_upstream(request: web.Request) -> web.Response:
    return json_answer(upstream_of(request, Access.READ)[1])


async def replace_upstream(request: web.Request) -> web.Response:
    old, _ = upstream_of(request, Access.WRITE)
    body = manifest_body("Upstream", await identified_object(request, "name", old.name))
    check_owner(request, body.get("owner"), old.owner)
    check_new_checks(request, old, body)
    return await save(request, desired(request), old.name, body)


async def delete_upstream(request: web.Request) -> web.Response:
    old, _ = upstream_of(request, Access.WRITE)
    if old.nodes:
        raise ApiError(409, f"upstream {old.name!r} has {len(old.nodes)} nodes: remove them first")
    return await save(request, desired(request), old.name, None)


# --- nodes (backends) ------------------------------------------------------------------------


def item_index(body: Mapping[str, Any], field: str, key: str, value: str, what: str) -> int:
    """Where the item of ``body[field]`` whose ``key`` is ``value`` is; 404 naming ``what``."""
    for i, item in enumerate(body.get(field, ())):
        if item.get(key) == value:
            return i
    raise not_found(f"{what} of upstream {body.get('name')!r}")


def node_index(body: Mapping[str, Any], hostname: str) -> int:
    return item_index(body, "nodes", "hostname", hostname, f"node {hostname!r}")


async def list_nodes(request: web.Request) -> web.Response:
    return json_answer(upstream_of(request, Access.READ)[1].get("nodes", []))


async def add_node(request: web.Request) -> web.Response:
    upstream, body = upstream_of(request, Access.WRITE)
    node = await json_object(request)
    if any(n.hostname == node.get("hostname") for n in upstream.nodes):
        raise ApiError(409, f"node {node.get('hostname')!r} exists in upstream {upstream.name!r}")
    body["nodes"] = [*body.get("nodes", []), node]
    return json_answer(node, 201, await commit(request, desired(request), upstream.name, body))


async def get_node(request: web.Request) -> web.Response:
    _, body = upstream_of(request, Access.READ)
    return json_answer(body["nodes"][node_index(body, request.match_info["hostname"])])


async def change_node(request: web.Request) -> web.Response:
    """PUT replaces the node's fields, PATCH merges them (drain: {"force_status": "down"})."""
    upstream, body = upstream_of(request, Access.WRITE)
    hostname = request.match_info["hostname"]
    i = node_index(body, hostname)
    fields = await identified_object(request, "hostname", hostname)
    node = {**body["nodes"][i], **fields} if request.method == "PATCH" else fields
    if isinstance(node.get("force_status"), str):
        node["force_status"] = FORCE_STATUS.get(node["force_status"], node["force_status"])
    body["nodes"] = [*body["nodes"][:i], node, *body["nodes"][i + 1 :]]
    return json_answer(node, revision=await commit(request, desired(request), upstream.name, body))


async def delete_node(request: web.Request) -> web.Response:
    upstream, body = upstream_of(request, Access.WRITE)
    i = node_index(body, request.match_info["hostname"])
    body["nodes"] = [*body["nodes"][:i], *body["nodes"][i + 1 :]]
    if not body["nodes"]:
        del body["nodes"]
    return await save(request, desired(request), upstream.name, body, 204)


# --- checks on an upstream ------------------------------------------------------------------


async def list_upstream_checks(request: web.Request) -> web.Response:
    return json_answer(upstream_of(request, Access.READ)[1].get("checks", []))


async def get_upstream_check(request: web.Request) -> web.Response:
    upstream, _ = upstream_of(request, Access.READ)
    name = request.match_info["check"]
    if name not in upstream.checks:
        raise not_found(f"check {name!r} on upstream {upstream.name!r}")
    body = desired(request).body("Check", name)
    return json_answer(dict(body) if body else {"name": name, "base_check": name})


async def attach_check(request: web.Request) -> web.Response:
    upstream, body = upstream_of(request, Access.WRITE)
    name = request.match_info["check"]
    if name not in BASE_CHECKS and name not in desired(request).state.checks:
        raise not_found(f"check {name!r}")
    revision = desired(request).revision  # already there: nothing written
    if name not in upstream.checks:
        body["checks"] = [*body.get("checks", []), name]
        check_new_checks(request, upstream, body)
        revision = await commit(request, desired(request), upstream.name, body)
    return json_answer(body.get("checks", []), revision=revision)


async def detach_check(request: web.Request) -> web.Response:
    upstream, body = upstream_of(request, Access.WRITE)
    name = request.match_info["check"]
    if name not in upstream.checks:
        raise not_found(f"check {name!r} on upstream {upstream.name!r}")
    body["checks"] = [c for c in body.get("checks", []) if c != name]
    return await save(request, desired(request), upstream.name, body, 204)


# --- ACL ------------------------------------------------------------------------------------


def acl_index(body: Mapping[str, Any], group: str) -> int:
    return item_index(body, "acl", "group_name", group, f"acl rule for group {group!r}")


async def list_acl(request: web.Request) -> web.Response:
    return json_answer(upstream_of(request, Access.READ)[1].get("acl", []))


async def get_acl(request: web.Request) -> web.Response:
    _, body = upstream_of(request, Access.READ)
    return json_answer(body["acl"][acl_index(body, request.match_info["group"])])


async def put_acl(request: web.Request) -> web.Response:
    upstream, body = upstream_of(request, Access.WRITE)
    group = request.match_info["group"]
    rule = await identified_object(request, "group_name", group)
    rules = [r for r in body.get("acl", []) if r.get("group_name") != group]
    body["acl"] = [*rules, rule]
    return json_answer(rule, revision=await commit(request, desired(request), upstream.name, body))


async def delete_acl(request: web.Request) -> web.Response:
    upstream, body = upstream_of(request, Access.WRITE)
    i = acl_index(body, request.match_info["group"])
    body["acl"] = [*body["acl"][:i], *body["acl"][i + 1 :]]
    return await save(request, desired(request), upstream.name, body, 204)


U = "/upstream/{name}"
ROUTES = (
    Route("GET", "/upstream/", list_upstreams, "Upstreams the user may read", response="[Upstream]"),
    Route(
        "POST",
        "/upstream/",
        create_upstream,
        "Create an upstream",
        "Upstream",
        "Upstream",
        201,
        errors=(400, 401, 403, 409),
    ),
    Route("GET", U, get_upstream, "One upstream", response="Upstream"),
    Route("PUT", U, replace_upstream, "Replace an upstream", "Upstream", "Upstream", errors=(400, 401, 403, 404, 409)),
    Route("DELETE", U, delete_upstream, "Delete an upstream without nodes", status=204, errors=(401, 403, 404, 409)),
    Route("GET", U + "/node", list_nodes, "The upstream's nodes (backends)", response="[Node]"),
    Route("POST", U + "/node", add_node, "Add a node", "Node", "Node", 201, errors=(400, 401, 403, 404, 409)),
    Route("GET", U + "/node/{hostname}", get_node, "One node", response="Node"),
    Route(
        "PUT",
        U + "/node/{hostname}",
        change_node,
        "Replace a node's settings",
        "NodeFields",
        "Node",
        errors=(400, 401, 403, 404, 409),
    ),
    Route(
        "PATCH",
        U + "/node/{hostname}",
        change_node,
        "Change some of a node's settings (drain: force_status down)",
        "NodeFields",
        "Node",
        errors=(400, 401, 403, 404, 409),
    ),
    Route("DELETE", U + "/node/{hostname}", delete_node, "Remove a node", status=204, errors=(400, 401, 403, 404, 409)),
    Route("GET", U + "/check", list_upstream_checks, "Names of the upstream's checks", response="[Name]"),
    Route("GET", U + "/check/{check}", get_upstream_check, "A check of the upstream", response="Object"),
    Route(
        "PUT",
        U + "/check/{check}",
        attach_check,
        "Put a check on the upstream",
        response="[Name]",
        errors=(400, 401, 403, 404, 409),
    ),
    Route(
        "DELETE",
        U + "/check/{check}",
        detach_check,
        "Take a check off the upstream",
        status=204,
        errors=(400, 401, 403, 404, 409),
    ),
    Route("GET", U + "/acl", list_acl, "The upstream's ACL", response="[AclRule]"),
    Route("GET", U + "/acl/{group}", get_acl, "The ACL rule of a group", response="AclRule"),
    Route(
        "PUT",
        U + "/acl/{group}",
        put_acl,
        "Set the ACL rule of a group",
        "AclRuleFields",
        "AclRule",
        errors=(400, 401, 403, 404, 409),
    ),
    Route(
        "DELETE",
        U + "/acl/{group}",
        delete_acl,
        "Remove the ACL rule of a group",
        status=204,
        errors=(400, 401, 403, 404, 409),
    ),
)
