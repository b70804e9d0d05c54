"""/user and /group routes. Passwords come in as ``password`` and are stored as argon2id hashes;
no response ever carries a hash. Disabling, deleting or re-passwording a user revokes its tokens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

from reconciler.api import authz
from reconciler.api.authz import Access
from reconciler.api.candidate import Change, manifest_body, write
from reconciler.api.context import actor, api, body_error, desired, identified_object, json_answer, json_object
from reconciler.api.problems import ApiError, forbidden, not_found
from reconciler.api.routes import Route
from reconciler.errors import Problem
from reconciler.manifest.model import Group, User
from reconciler.passwords import hash_password, new_password_problem, verify_password

USER_PATCH_FIELDS = {"password", "old_password", "full_name", "enabled", "groups"}


def public_user(body: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "password_hash"}


def flags_of(request: web.Request, groups: Iterable[Any]) -> frozenset[str]:
    return authz.group_flags(map(str, groups), desired(request).state.groups)


def user_of(request: web.Request) -> tuple[User, dict[str, Any]]:
    name = request.match_info["name"]
    found = desired(request).state.users.get(name)
    if found is None or authz.user_access(actor(request), found) == Access.NONE:
        raise not_found(f"user {name!r}")
    return found, dict(desired(request).body("User", name) or {})


def require_manage_user(request: web.Request, user: User) -> None:
    if not authz.may_manage_user(actor(request), flags_of(request, user.groups)):
        raise forbidden(f"managing user {user.name!r} needs MANAGEMENT and every flag its groups hold")


def require_grant(request: web.Request, flags: Iterable[str]) -> None:
    flags = set(flags) & set(authz.FLAGS)  # other names are the schema's to refuse (400)
    if not authz.may_grant(actor(request), flags):
        raise forbidden(f"granting or removing {', '.join(sorted(flags))} needs them (GLOBAL_* needs GLOBAL_RW)")


async def new_password(value: Any) -> str:
    """``value`` if it may become a password (reconciler.passwords); 400 naming the field if not."""
    problem = (
        "expected a string" if not isinstance(value, str) else await asyncio.to_thread(new_password_problem, value)
    )
    if problem:
        raise body_error(Problem("body", 0, 0, field="password", message=problem))
    return str(value)


async def save_user(
    request: web.Request, name: str, body: Mapping[str, Any] | None, revoke: bool, status: int = 200
) -> web.Response:
    revision = await write(api(request).store, desired(request), [Change("User", name, body)], actor(request).name)
    if revoke:
        api(request).tokens.forget(name)
        await asyncio.to_thread(api(request).store.delete_user_tokens, name)
    if body is None:
        return web.Response(status=204, headers={"X-Store-Revision": str(revision)})
    return json_answer(public_user(body), status, revision)


# --- users ----------------------------------------------------------------------------------


async def list_users(request: web.Request) -> web.Response:
    d, who = desired(request), actor(request)
    users = sorted(d.state.users.items())
    return json_answer([public_user(d.body("User", n) or {}) for n, u in users if authz.user_access(who, u) > 0])


async def create_user(request: web.Request) -> web.Response:
    fields = await json_object(request)
    if not authz.may_manage(actor(request)):
        raise forbidden("creating users needs MANAGEMENT")
    if "password_hash" in fields:
        raise ApiError(400, "invalid body", "send password (the server hashes it), not password_hash")
    password = await new_password(fields.pop("password", None))
    name = fields.get("name")
    if isinstance(name, str) and name in desired(request).state.users:
        raise ApiError(409, f"user {name!r} exists")
    groups = fields.get("groups", [])
    require_grant(request, flags_of(request, groups if isinstance(groups, list) else []))
    body = manifest_body("User", {**fields, "password_hash": await asyncio.to_thread(hash_password, password)})
    return await save_user(request, str(name), body, False, 201)


async def get_user(request: web.Request) -> web.Response:
    return json_answer(public_user(user_of(request)[1]))


async def patch_user(request: web.Request) -> web.Response:
    user, body = user_of(request)
    fields = await json_object(request)
    unknown = set(fields) - USER_PATCH_FIELDS
    if unknown:
        raise ApiError(400, "invalid body", f"unknown fields {sorted(unknown)} (allowed: {sorted(USER_PATCH_FIELDS)})")
    who = actor(request)
    is_self = user.name == who.name
    if not (is_self and set(fields) <= {"password", "old_password", "full_name"}):
        require_manage_user(request, user)
    if "groups" in fields and isinstance(fields["groups"], list):
        require_grant(request, flags_of(request, set(map(str, fields["groups"])) ^ set(user.groups)))
    revoke = False
    if "password" in fields:
        password = await new_password(fields.pop("password"))
        old = fields.pop("old_password", None)
        old_ok = isinstance(old, str) and await asyncio.to_thread(verify_password, user.password_hash, old)
        if not authz.may_set_password(who, user, flags_of(request, user.groups), old_ok):
            raise forbidden("changing your own password needs the right old_password")
        body["password_hash"] = await asyncio.to_thread(hash_password, password)
        revoke = True
    fields.pop("old_password", None)
    body.update(fields)
    revoke = revoke or body.get("enabled") is False
    return await save_user(request, user.name, body, revoke)


async def delete_user(request: web.Request) -> web.Response:
    user, _ = user_of(request)
    require_manage_user(request, user)
    return await save_user(request, user.name, None, True, 204)


async def change_membership(request: web.Request) -> web.Response:
    """PUT adds the user to the group, DELETE removes it: the group's flags are granted/removed."""
    user, body = user_of(request)
    require_manage_user(request, user)
    group = request.match_info["group"]
    if group not in desired(request).state.groups:
        raise not_found(f"group {group!r}")
    require_grant(request, flags_of(request, [group]))
    groups = [g for g in body.get("groups", []) if g != group]
    if request.method == "PUT":
        groups.append(group)
    elif group not in user.groups:
        raise not_found(f"user {user.name!r} in group {group!r}")
    body["groups"] = groups
    response = await save_user(request, user.name, body, False)
    if request.method == "PUT":
        return response
    return web.Response(status=204, headers={"X-Store-Revision": response.headers["X-Store-Revision"]})


# --- groups ---------------------------------------------------------------------------------


def group_of(request: web.Request) -> tuple[Group, dict[str, Any]]:
    name = request.match_info["name"]
    found = desired(request).state.groups.get(name)
    if found is None or authz.group_access(actor(request), found) == Access.NONE:
        raise not_found(f"group {name!r}")
    return found, dict(desired(request).body("Group", name) or {})


def flag_list(body: Mapping[str, Any]) -> set[str]:
    flags = body.get("global_permissions", [])
    return set(map(str, flags)) if isinstance(flags, list) else set()


async def save_group(
    request: web.Request, name: str, body: Mapping[str, Any] | None, status: int = 200
) -> web.Response:
    revision = await write(api(request).store, desired(request), [Change("Group", name, body)], actor(request).name)
    if body is None:
        return web.Response(status=204, headers={"X-Store-Revision": str(revision)})
    return json_answer(dict(body), status, revision)


async def list_groups(request: web.Request) -> web.Response:
    d, who = desired(request), actor(request)
    return json_answer(
        [d.body("Group", n) for n, g in sorted(d.state.groups.items()) if authz.group_access(who, g) > 0]
    )


async def create_group(request: web.Request) -> web.Response:
    body = manifest_body("Group", await json_object(request))
    if not authz.may_manage(actor(request)):
        raise forbidden("creating groups needs MANAGEMENT")
    name = body.get("name")
    if isinstance(name, str) and name in desired(request).state.groups:
        raise ApiError(409, f"group {name!r} exists")
    require_grant(request, flag_list(body))
    return await save_group(request, str(name), body, 201)


async def get_group(request: web.Request) -> web.Response:
    return json_answer(group_of(request)[1])


async def replace_group(request: web.Request) -> web.Response:
    group, old = group_of(request)
    if not authz.may_manage(actor(request)):
        raise forbidden("changing groups needs MANAGEMENT")
    body = manifest_body("Group", await identified_object(request, "name", group.name))
    require_grant(request, flag_list(body) ^ flag_list(old))
    return await save_group(request, group.name, body)


async def delete_group(request: web.Request) -> web.Response:
    group, old = group_of(request)
    if not authz.may_manage(actor(request)):
        raise forbidden("deleting groups needs MANAGEMENT")
    require_grant(request, flag_list(old))
    return await save_group(request, group.name, None, 204)


M = (400, 401, 403, 404, 409)
ROUTES = (
    Route("GET", "/user", list_users, "Users the user may see (never their hashes)", response="[UserView]"),
    Route(
        "POST",
        "/user",
        create_user,
        "Create a user (MANAGEMENT)",
        "UserCreate",
        "UserView",
        201,
        errors=(400, 401, 403, 409),
    ),
    Route("GET", "/user/{name}", get_user, "One user", response="UserView"),
    Route(
        "PATCH",
        "/user/{name}",
        patch_user,
        "Change a user; your own password needs old_password",
        "UserPatch",
        "UserView",
        errors=M,
    ),
    Route("DELETE", "/user/{name}", delete_user, "Delete a user (its tokens are revoked)", status=204, errors=M),
    Route("PUT", "/user/{name}/{group}", change_membership, "Add a user to a group", response="UserView", errors=M),
    Route("DELETE", "/user/{name}/{group}", change_membership, "Remove a user from a group", status=204, errors=M),
    Route("GET", "/group", list_groups, "Groups the user may see", response="[Group]"),
    Route(
        "POST",
        "/group",
        create_group,
        "Create a group (MANAGEMENT; flags you hold)",
        "Group",
        "Group",
        201,
        errors=(400, 401, 403, 409),
    ),
    Route("GET", "/group/{name}", get_group, "One group", response="Group"),
    Route("PUT", "/group/{name}", replace_group, "Replace a group's flags", "Group", "Group", errors=M),
    Route("DELETE", "/group/{name}", delete_group, "Delete a group nothing refers to", status=204, errors=M),
)
