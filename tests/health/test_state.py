"""The one rule from check states to backend health, and when apply and plan use the store's."""

from __future__ import annotations

from typing import Literal

from reconciler.health.state import HealthSource, backend_health, probes_of, used_health
from reconciler.manifest.model import DesiredState
from reconciler.render.renderer import Renderer
from reconciler.resolve import StaticResolver
from reconciler.store import HealthRecord
from tests.render.desired import access_node, state_of, upstream

CHECK = {"kind": "Check", "name": "fast", "base_check": "tcp", "interval": "1s"}


def _state() -> DesiredState:
    web = upstream(
        "web",
        "10.0.0.1:80",
        "10.0.0.2:80",
        {"hostname": "10.0.0.3:80", "failover": 1},
        checks=["fast", "tcp"],
        min_servers=2,
        listen={"server_names": ["web.example.com"]},
    )
    plain = upstream("plain", "10.0.0.9:80", listen={"server_names": ["plain.example.com"]})
    return state_of([CHECK, web, plain, access_node("lb1:80", "web", "plain")])


def _record(backend: str, check: str, status: Literal["up", "down"]) -> HealthRecord:
    return HealthRecord("web", backend, check, status)


def test_a_backend_is_down_when_any_of_its_checks_is_and_unknown_checks_are_ignored() -> None:
    state = _state()
    records = {
        r.key: r
        for r in [
            _record("10.0.0.1:80", "fast", "up"),
            _record("10.0.0.1:80", "tcp", "down"),
            _record("10.0.0.2:80", "fast", "up"),
            _record("10.0.0.2:80", "removed-check", "down"),  # not a check of web any more
            HealthRecord("gone", "10.0.0.5:80", "tcp", "down"),  # an upstream removed
        ]
    }
    health = backend_health(probes_of(state), records)
    assert health == {"web": {"10.0.0.1:80": False, "10.0.0.2:80": True, "10.0.0.3:80": True}}


def test_stored_health_is_used_only_while_a_controller_holds_the_master_lease() -> None:
    state = _state()
    records = {r.key: r for r in [_record("10.0.0.1:80", "fast", "down")]}
    held = used_health(state, records, "ctl-1")
    assert held.source is HealthSource.CONTROLLER and held.down == ["web/10.0.0.1:80"]
    assert "ctl-1" in held.describe() and "1 backend(s) down: web/10.0.0.1:80" in held.describe()
    stale = used_health(state, records, None)
    assert stale.source is HealthSource.STALE and stale.health == {}
    assert "every backend rendered up" in stale.describe()
    assert used_health(state, {}, None).source is HealthSource.NONE


def test_the_render_says_what_health_changed() -> None:
    state = _state()
    renderer = Renderer(resolver=StaticResolver({}))
    node = state.access_nodes["lb1:80"]
    assert renderer.render_access_node(state, node).health == ()
    down = renderer.render_access_node(state, node, {"web": {"10.0.0.1:80": False}})
    assert down.health == ("upstream web: 10.0.0.1:80 down (health); tier 1 in use",)
    every = {"web": {h: False for h in ("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80")}}
    panic = renderer.render_access_node(state, node, every)
    assert panic.health == (
        "upstream web: 10.0.0.1:80, 10.0.0.2:80, 10.0.0.3:80 failing: panic, every backend not forced down enabled",
    )
