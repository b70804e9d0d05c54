"""Which backends of an upstream get traffic: the pure rule of SPEC.md section 3.

Input: an upstream and its backends' health (hostname -> healthy; a missing hostname counts
as up, as a backend is up before its first check result). Output: for each backend, in
(failover, hostname) order, one of ``enabled``, ``backup`` or ``down``, and whether the
upstream is in ``panic`` (no backend eligible, so every backend not forced down is enabled).

1. ``force_status: down`` is never enabled (``down``).
2. eligible = ``force_status: up``, or ``normal`` and currently up.
3. Tiers are walked in ascending order, enabling every eligible backend of a tier; the walk
   stops after the first tier at which at least ``min_servers`` are enabled.
4. Eligible backends of the tiers after that are ``backup``; not eligible ones are ``down``.
5. No eligible backend at all: fail open (panic).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from operator import attrgetter
from typing import NamedTuple

from reconciler.manifest.model import Backend, Upstream


class Role(StrEnum):
    """What nginx is told about a backend."""

    ENABLED = "enabled"
    BACKUP = "backup"
    DOWN = "down"


class Selected(NamedTuple):
    backend: Backend
    role: Role


@dataclass(frozen=True)
class Selection:
    """Every backend of an upstream with its role, in (failover, hostname) order."""

    backends: tuple[Selected, ...]
    panic: bool = False

    def role(self, hostname: str) -> Role:
        for selected in self.backends:
            if selected.backend.hostname == hostname:
                return selected.role
        raise KeyError(hostname)

    def roles(self) -> dict[str, Role]:
        return {s.backend.hostname: s.role for s in self.backends}


backend_order = attrgetter("failover", "hostname")
"""The order of SPEC.md section 3: (failover, hostname)."""


def select(upstream: Upstream, health: Mapping[str, bool] | None = None) -> Selection:
    """The role of every backend of ``upstream`` given ``health`` (hostname -> up; missing = up)."""
    ordered = sorted(upstream.nodes, key=backend_order)
    if health:
        eligible = {
            b.hostname
            for b in ordered
            if b.force_status == "up" or (b.force_status == "normal" and health.get(b.hostname, True))
        }
    else:
        eligible = {b.hostname for b in ordered if b.force_status != "down"}
    if not eligible:
        return Selection(
            tuple([Selected(b, _DOWN if b.force_status == "down" else _ENABLED) for b in ordered]),
            panic=bool(ordered),
        )
    enabled: set[str] = set()
    tier = ordered[0].failover
    for b in ordered:  # tiers in ascending order; stop after the first reaching min_servers
        if b.failover != tier:
            if len(enabled) >= upstream.min_servers:
                break
            tier = b.failover
        if b.hostname in eligible:
            enabled.add(b.hostname)
    return Selection(
        tuple(
            [
                Selected(b, _ENABLED if b.hostname in enabled else _BACKUP if b.hostname in eligible else _DOWN)
                for b in ordered
            ]
        )
    )


_ENABLED, _BACKUP, _DOWN = Role.ENABLED, Role.BACKUP, Role.DOWN
