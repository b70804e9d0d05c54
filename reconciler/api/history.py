"""``GET /deploy`` (deploy history, or each access node's last record) and ``GET /audit``.

Both list newest first, in pages: ``limit`` entries, and ``next`` (a cursor: pass it as
``before`` for the next page; null at the end). A user sees the entries of objects it may
read now (access nodes for deploys; for the audit log each kind's own rule); an entry of an
object that no longer exists is shown to GLOBAL_RO, GLOBAL_RW and SUPER only.

The audit log is append-only, so the API keeps a copy and reads only what was added since the
revision it last saw (``AuditLog``): a page is a slice of memory, not a read of the whole log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from reconciler.api import authz
from reconciler.api.authz import Access, Actor
from reconciler.api.context import actor, api, desired, json_answer
from reconciler.api.problems import ApiError
from reconciler.api.routes import Route
from reconciler.manifest.model import DesiredState
from reconciler.store import AuditEntry, DeployRecord, Store

PAGE = 50
MAX_PAGE = 1000


def query_text(request: web.Request, name: str, default: str) -> str:
    value = request.query.get(name, default)
    if len(value) > 1024:
        raise ApiError(400, "invalid query", f"{name}: at most 1024 characters")
    return value


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter between ``low`` and ``high``; 400 naming it otherwise."""
    text = request.query.get(name)
    if text is None or text == "":
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 19 or not low <= int(text) <= high:
        raise ApiError(400, "invalid query", f"{name}: an integer from {low} to {high}")
    return int(text)


def query_flag(request: web.Request, name: str) -> bool:
    text = request.query.get(name, "false")
    if text not in ("true", "false", "1", "0"):
        raise ApiError(400, "invalid query", f"{name}: true or false")
    return text in ("true", "1")


# --- who may see what --------------------------------------------------------------------------


def _sees_everything(who: Actor) -> bool:
    return who.has("GLOBAL_RO", "GLOBAL_RW", "SUPER")


def may_see_node(who: Actor, state: DesiredState, name: str) -> bool:
    node = state.access_nodes.get(name)
    if node is None:
        return _sees_everything(who)
    return authz.access_node_access(who, node) > Access.NONE


def may_see_object(who: Actor, state: DesiredState, kind: str, name: str) -> bool:
    """May ``who`` see the audit entries of (kind, name), as the object is now (or is gone)?"""
    access: Access | None = None
    if kind == "Upstream" and name in state.upstreams:
        access = authz.upstream_access(who, state.upstreams[name])
    elif kind == "Check" and name in state.checks:
        access = authz.check_access(who, state.checks[name], state.upstreams.values())
    elif kind == "AccessNode" and name in state.access_nodes:
        access = authz.access_node_access(who, state.access_nodes[name])
    elif kind == "User" and name in state.users:
        access = authz.user_access(who, state.users[name])
    elif kind == "Group" and name in state.groups:
        access = authz.group_access(who, state.groups[name])
    if access is not None:
        return access > Access.NONE
    if kind in ("User", "Group"):
        return authz.may_manage(who)
    return _sees_everything(who)


# --- deploys -------------------------------------------------------------------------------------


def deploy_entry(record: DeployRecord, seq: int | None) -> dict[str, Any]:
    return {
        "seq": seq,
        "access_node": record.access_node,
        "revision": record.revision,
        "result": record.result,
        "step": record.step,
        "error": record.error,
        "when": record.when,
        "by": record.by,
        "seconds": round(record.seconds, 3),
        "files": len(record.digests),
    }


async def list_deploys(request: web.Request) -> web.Response:
    """The deploy history newest first; ``latest=true``: each access node's last record instead."""
    who, state = actor(request), desired(request).state
    store = api(request).store
    node = query_text(request, "access_node", "")
    if query_flag(request, "latest"):
        records = await asyncio.to_thread(store.deploy_records)
        entries = [deploy_entry(r, None) for n, r in sorted(records.items()) if may_see_node(who, state, n)]
        return json_answer({"entries": entries, "next": None})
    limit = query_int(request, "limit", PAGE, 1, MAX_PAGE)
    before = query_int(request, "before", 0, 0, 1 << 62) or None

    def wanted(record: DeployRecord) -> bool:
        return (not node or record.access_node == node) and may_see_node(who, state, record.access_node)

    def read() -> tuple[list[dict[str, Any]], int | None]:
        out: list[dict[str, Any]] = []
        cursor = before
        while len(out) < limit:
            page = store.deploy_history(limit=max(limit, 100), before=cursor)
            for entry in page:
                if wanted(entry.record):
                    out.append(deploy_entry(entry.record, entry.seq))
                    if len(out) == limit:
                        return out, entry.seq
                cursor = entry.seq
            if len(page) < max(limit, 100):
                return out, None
        return out, cursor

    entries, cursor = await asyncio.to_thread(read)
    return json_answer({"entries": entries, "next": cursor})


# --- audit ---------------------------------------------------------------------------------------


@dataclass
class AuditLog:
    """The audit log as far as this process has read it (append-only: only the new part is read)."""

    entries: list[AuditEntry] = field(default_factory=list)
    revision: int = 0  # the store revision read up to
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def read(self, store: Store, revision: int) -> list[AuditEntry]:
        """The log up to at least ``revision`` (the desired state the request was checked against)."""
        async with self.lock:
            if revision > self.revision or not self.entries:
                new = await asyncio.to_thread(store.audit, self.revision)
                self.entries.extend(new)
                self.revision = max([revision, self.revision, *(e.revision for e in new)])
        return self.entries


AUDIT = web.AppKey("audit", AuditLog)


def audit_entry(seq: int, entry: AuditEntry) -> dict[str, Any]:
    p = entry.provenance
    return {
        "seq": seq,
        "revision": entry.revision,
        "kind": entry.kind,
        "name": entry.name,
        "action": entry.action,
        "source": p.source,
        "origin": p.origin,
        "when": p.when,
    }


def page_newest_first(
    count: int, before: int | None, limit: int, keep: Callable[[int], bool]
) -> tuple[list[int], int | None]:
    """Positions below ``before`` (0 .. count-1), newest first, that ``keep`` accepts; and the next cursor."""
    out: list[int] = []
    position = min(count, before if before is not None else count) - 1
    while position >= 0 and len(out) < limit:
        if keep(position):
            out.append(position)
        position -= 1
    return out, (out[-1] if len(out) == limit and position >= 0 else None)


async def list_audit(request: web.Request) -> web.Response:
    who, d = actor(request), desired(request)
    limit = query_int(request, "limit", PAGE, 1, MAX_PAGE)
    before = query_int(request, "before", 0, 0, 1 << 62) or None
    kind, name = query_text(request, "kind", ""), query_text(request, "name", "")
    log = request.app[AUDIT]
    entries = await log.read(api(request).store, d.revision)
    state = d.state
    seen: dict[tuple[str, str], bool] = {}

    def keep(position: int) -> bool:
        e = entries[position]
        if (kind and e.kind != kind) or (name and e.name != name):
            return False
        key = (e.kind, e.name)
        if key not in seen:
            seen[key] = may_see_object(who, state, e.kind, e.name)
        return seen[key]

    positions, cursor = page_newest_first(len(entries), before, limit, keep)
    return json_answer({"entries": [audit_entry(p, entries[p]) for p in positions], "next": cursor})


PAGING = (("limit", "integer"), ("before", "integer"))
ROUTES = (
    Route(
        "GET",
        "/deploy",
        list_deploys,
        "Deploy history newest first (latest=true: each access node's last record)",
        response="DeployPage",
        errors=(400, 401),
        query=(*PAGING, ("access_node", "string"), ("latest", "boolean")),
    ),
    Route(
        "GET",
        "/audit",
        list_audit,
        "The audit log newest first: who changed which object, through the API or an apply",
        response="AuditPage",
        errors=(400, 401),
        query=(*PAGING, ("kind", "string"), ("name", "string")),
    ),
)
