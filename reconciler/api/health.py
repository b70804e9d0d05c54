"""``GET /health`` and ``GET /upstream/{name}/health``: every backend's health as the UI shows it.

Per upstream the user may read (404 for one it may not, as everywhere): ``min_servers``,
``panic``, the failover tiers in use, whether the user may write it (``access``), and per
backend its health word (``up``, ``down``, ``drained`` = forced down, ``forced`` = forced up),
the role nginx is told (``enabled``, ``backup``, ``down``: SPEC.md §3's selection), and each
check's last result, latency, when it came and since when the check is in its state.
``GET /health`` filters (``state``, ``q``) and pages (``offset``, ``limit``) on the server, so
that a page of 50 upstreams of 1,000 is a small answer; ``counts`` covers every upstream the
user may read, whatever the filter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from aiohttp import web

from reconciler.api import authz
from reconciler.api.authz import Access, Actor
from reconciler.api.context import actor, desired, from_view, json_answer
from reconciler.api.history import query_int, query_text
from reconciler.api.problems import ApiError
from reconciler.api.routes import Route
from reconciler.api.upstreams import upstream_of
from reconciler.api.view import CheckKey, CheckResult
from reconciler.health.select import Role, select
from reconciler.manifest.model import Backend, Upstream


class Health(StrEnum):
    """A backend's health as an operator reads it."""

    UP = "up"  # every check passes (or the upstream has none)
    DOWN = "down"  # a check says down
    DRAINED = "drained"  # force_status down: never gets traffic
    FORCED = "forced"  # force_status up: gets traffic whatever the checks say


class Filter(StrEnum):
    """``GET /health?state=``: which upstreams to list."""

    ALL = "all"
    PROBLEMS = "problems"  # a backend not up, panic, or refused by the renderer on an access node
    DOWN = "down"
    DRAINED = "drained"  # a backend drained or forced
    PANIC = "panic"


PAGE = 50
MAX_PAGE = 1000


def _backend_health(backend: Backend, down: bool) -> Health:
    if backend.force_status == "down":
        return Health.DRAINED
    if backend.force_status == "up":
        return Health.FORCED
    return Health.DOWN if down else Health.UP


def _is_down(upstream: Upstream, hostname: str, results: Mapping[CheckKey, CheckResult]) -> bool:
    for check in upstream.checks:
        result = results.get((upstream.name, hostname, check))
        if result is not None and result.status == "down":
            return True
    return False


def _summary(upstream: Upstream, results: Mapping[CheckKey, CheckResult]) -> tuple[set[Health], bool]:
    """The health words of the upstream's backends, and whether it is in panic (none eligible)."""
    seen: set[Health] = set()
    eligible = False
    for backend in upstream.nodes:
        health = _backend_health(backend, _is_down(upstream, backend.hostname, results))
        seen.add(health)
        eligible = eligible or health in (Health.UP, Health.FORCED)
    return seen, bool(upstream.nodes) and not eligible


def _matches(upstream: Upstream, words: set[Health], panic: bool, wanted: Filter, q: str, refused: bool) -> bool:
    if wanted == Filter.PROBLEMS and words <= {Health.UP} and not panic and not refused:
        return False
    if wanted == Filter.DOWN and Health.DOWN not in words:
        return False
    if wanted == Filter.DRAINED and not words & {Health.DRAINED, Health.FORCED}:
        return False
    if wanted == Filter.PANIC and not panic:
        return False
    if q:
        text = " ".join([upstream.name, upstream.description or "", *(b.hostname for b in upstream.nodes)]).lower()
        return q in text
    return True


def _check(name: str, result: CheckResult | None) -> dict[str, Any]:
    if result is None:
        return {"check": name, "status": "up", "detail": "", "seconds": None, "checked": None, "since": None}
    return {
        "check": name,
        "status": result.status,
        "detail": result.detail,
        "seconds": round(result.seconds, 6) if result.checked else None,
        "checked": result.checked or None,
        "since": result.since or None,
    }


def upstream_health(
    upstream: Upstream,
    results: Mapping[CheckKey, CheckResult],
    access: Access,
    panic: bool,
    refused: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """One upstream as ``GET /health`` lists it; ``refused``: where the renderer refuses it
    (``ControllerView.refused_upstreams``)."""
    down = {b.hostname: _is_down(upstream, b.hostname, results) for b in upstream.nodes}
    selection = select(upstream, {h: not d for h, d in down.items()} if upstream.checks else None)
    backends = []
    for backend, role in selection.backends:
        checks = [_check(c, results.get((upstream.name, backend.hostname, c))) for c in upstream.checks]
        failing = [c for c in checks if c["status"] == "down"]
        flips = [c["since"] for c in (failing or checks) if c["since"]]
        latest = max(checks, key=lambda c: c["checked"] or 0, default=None)
        backends.append(
            {
                "hostname": backend.hostname,
                "failover": backend.failover,
                "weight": backend.weight,
                "force_status": backend.force_status,
                "health": _backend_health(backend, down[backend.hostname]).value,
                "role": role.value,
                # since when the backend is in its state: down since its first failing check fell;
                # up since its last check rose (None: since the first check, or no checks)
                "since": (min(flips) if failing else max(flips)) if flips else None,
                "detail": (failing[0] if failing else latest or {}).get("detail", ""),
                "seconds": max((c["seconds"] or 0 for c in checks), default=0) or None,
                "checked": latest["checked"] if latest else None,
                "checks": checks,
            }
        )
    tiers = sorted({s.backend.failover for s in selection.backends if s.role == Role.ENABLED})
    return {
        "name": upstream.name,
        "description": upstream.description,
        "owner": upstream.owner,
        "min_servers": upstream.min_servers,
        "checks": list(upstream.checks),
        "panic": panic or selection.panic,
        "tiers_in_use": tiers,
        "access": "write" if access >= Access.WRITE else "read",
        "backends": backends,
        # the access nodes on which the renderer refuses it (its files kept at their last good rendering)
        "refused": [dict(r) for r in refused],
    }


def _visible(who: Actor, upstreams: Mapping[str, Upstream]) -> list[tuple[Upstream, Access]]:
    out = []
    for name in sorted(upstreams):
        upstream = upstreams[name]
        access = authz.upstream_access(who, upstream)
        if access > Access.NONE:
            out.append((upstream, access))
    return out


async def list_health(request: web.Request) -> web.Response:
    try:
        wanted = Filter(query_text(request, "state", Filter.ALL.value))
    except ValueError:
        raise ApiError(400, "invalid query", f"state: one of {', '.join(f.value for f in Filter)}") from None
    q = query_text(request, "q", "").strip().lower()
    offset = query_int(request, "offset", 0, 0, 10**9)
    limit = query_int(request, "limit", PAGE, 1, MAX_PAGE)
    results = await from_view(request, lambda v: v.check_results())
    refused = await from_view(request, lambda v: v.refused_upstreams())
    counts = {"upstreams": 0, "panic": 0, "backends": 0, "refused": 0, **{h.value: 0 for h in Health}}
    matching: list[tuple[Upstream, Access, bool]] = []
    for upstream, access in _visible(actor(request), desired(request).state.upstreams):
        words, panic = _summary(upstream, results)
        counts["upstreams"] += 1
        counts["panic"] += panic
        counts["refused"] += upstream.name in refused
        for backend in upstream.nodes:
            counts["backends"] += 1
            counts[_backend_health(backend, _is_down(upstream, backend.hostname, results)).value] += 1
        if _matches(upstream, words, panic, wanted, q, upstream.name in refused):
            matching.append((upstream, access, panic))
    page = [upstream_health(u, results, a, p, refused.get(u.name, ())) for u, a, p in matching[offset : offset + limit]]
    return json_answer(
        {
            "revision": desired(request).revision,
            "total": len(matching),
            "offset": offset,
            "limit": limit,
            "counts": counts,
            "upstreams": page,
        }
    )


async def get_upstream_health(request: web.Request) -> web.Response:
    upstream, _ = upstream_of(request, Access.READ)
    results = await from_view(request, lambda v: v.check_results())
    refused = await from_view(request, lambda v: v.refused_upstreams())
    access = authz.upstream_access(actor(request), upstream)
    panic = _summary(upstream, results)[1]
    return json_answer(upstream_health(upstream, results, access, panic, refused.get(upstream.name, ())))


ROUTES = (
    Route(
        "GET",
        "/health",
        list_health,
        "Health of the backends of the upstreams the user may read (filtered, paged)",
        response="HealthPage",
        errors=(400, 401),
        query=(("state", "string"), ("q", "string"), ("offset", "integer"), ("limit", "integer")),
    ),
    Route(
        "GET",
        "/upstream/{name}/health",
        get_upstream_health,
        "Health of one upstream's backends",
        response="UpstreamHealth",
    ),
)
