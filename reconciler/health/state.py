"""Backend health as every renderer sees it: one rule from check states, and when the store's is used.

``backend_health(probes, states)`` is the one rule turning check states into backend health
(a backend is up when every check of its upstream says up; a check without a state yet is
up). ``serve`` applies it to its monitor's states, ``converge`` to the stored states after
its one run of checks, ``apply`` and ``plan`` to the stored states (``stored_health``).

Freshness: ``apply`` and ``plan`` use the health the store holds only while a controller
holds the master lease. A master writes every check state that changes within a second (and
right before each of its renders), so its records are current; nothing else keeps records
current, so when no controller holds the lease the records may describe a backend that has
come back long ago, and every backend is rendered up (as ``render`` does). docs/apply.md.

No asyncio here: plan and apply import this module, and a CLI start must stay light.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from reconciler.health.checks import CheckSpec, CheckStringError, Target, checks_of
from reconciler.manifest.model import DesiredState

log = logging.getLogger("obreconcile.health")

Key = tuple[str, str, str]  # (upstream, backend hostname, check name)
Health = dict[str, dict[str, bool]]  # upstream -> backend hostname -> up
MASTER_LOCK = "master"  # the lock that `serve` controllers elect their master with


@dataclass(frozen=True)
class Probe:
    """One scheduled check: which check on which backend of which upstream."""

    key: Key
    spec: CheckSpec
    target: Target


def probes_of(state: DesiredState) -> dict[Key, Probe]:
    """Every (upstream, backend, check) of the desired state; upstreams without checks have none."""
    out: dict[Key, Probe] = {}
    for upstream in state.upstreams.values():
        if not upstream.checks:
            continue
        try:
            specs = checks_of(upstream, state)
        except CheckStringError as e:  # the schema refuses these; never let one stop the others
            log.error("health: upstream %s: %s: its backends count as up", upstream.name, e)
            continue
        for backend in upstream.nodes:
            target = Target.of(backend)
            for spec in specs:
                key = (upstream.name, backend.hostname, spec.name)
                out[key] = Probe(key, spec, target)
    return out


class _HasStatus(Protocol):
    @property
    def status(self) -> str: ...


def backend_health(probes: Mapping[Key, object], states: Mapping[Key, _HasStatus]) -> Health:
    """upstream -> backend hostname -> up (every check up); only upstreams with checks.

    ``probes``: the checks of the desired state (``probes_of``); ``states``: what each check
    says (the monitor's ``CheckState``s or the store's ``HealthRecord``s). States of checks the
    desired state no longer has are ignored.
    """
    out: Health = {}
    for key in probes:
        upstream, backend, _ = key
        state = states.get(key)
        up = state is None or state.status == "up"
        hosts = out.setdefault(upstream, {})
        hosts[backend] = hosts.get(backend, True) and up
    return out


class HealthSource(StrEnum):
    """Where the health a render used came from."""

    CONTROLLER = "controller"  # the store's records, kept current by the controller holding the master lease
    STALE = "stale"  # records exist but no controller keeps them current: every backend up
    NONE = "none"  # no records: every backend up


@dataclass(frozen=True)
class UsedHealth:
    """The health a render uses, and why (plan prints it)."""

    health: Health
    source: HealthSource
    controller: str | None = None  # the master whose records these are

    @property
    def down(self) -> list[str]:
        """``upstream/backend`` of every backend rendered down by health, sorted."""
        return sorted(f"{u}/{h}" for u, hosts in self.health.items() for h, up in hosts.items() if not up)

    def describe(self) -> str:
        if self.source is HealthSource.CONTROLLER:
            down = self.down
            detail = f"{len(down)} backend(s) down: {', '.join(down)}" if down else "every backend up"
            return f"health: from the store, kept current by controller {self.controller} (master lease held); {detail}"
        if self.source is HealthSource.STALE:
            return "health: not used, no controller holds the master lease (stored records may be old); every backend rendered up"
        return "health: none recorded; every backend rendered up"

    def to_dict(self) -> dict[str, object]:
        return {"source": str(self.source), "controller": self.controller, "down": self.down}


def used_health(state: DesiredState, states: Mapping[Key, _HasStatus], master: str | None) -> UsedHealth:
    """The health ``apply`` and ``plan`` render with: the stored states while ``master`` (the
    holder of the master lease) keeps them current, else every backend up (see the module)."""
    if master is None:
        return UsedHealth({}, HealthSource.STALE if states else HealthSource.NONE)
    return UsedHealth(backend_health(probes_of(state), states), HealthSource.CONTROLLER, master)
