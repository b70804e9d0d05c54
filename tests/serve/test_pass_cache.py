"""A convergence pass prepares only the upstreams whose inputs changed since the last pass.

At 10,000 upstreams every pass built every upstream's context and every access node's model
anew (seconds of CPU for one health flip); the controller now keeps them (``PassCache``). These
tests count the renderer's preparations and check the files against a fresh rendering.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from reconciler.manifest.model import DesiredState, Upstream
from reconciler.render.renderer import Renderer
from reconciler.resolve import StaticResolver
from reconciler.serve.controller import Controller, ServeSettings
from reconciler.store import open_store
from reconciler.store.base import Provenance, Put
from tests.render.desired import access_node, state_of, upstream

Health = dict[str, dict[str, bool]]


def desired() -> DesiredState:
    return state_of(
        [
            upstream("api", "10.0.0.1:8080", "10.0.0.2:8080"),
            upstream("web", "10.0.1.1:8080", "10.0.1.2:8080"),
            upstream("ipv6", "[2001:db8::1]:8080", "[2001:db8::2]:8080"),
            upstream("named", "app1.internal:8080", "10.0.2.2:8080"),
            access_node("lb1:80", "api", "web", "ipv6", "named"),
            access_node("lb2:80", "api", "web", "ipv6", "named"),
        ]
    )


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[Controller]:
    with open_store(f"sqlite:///{tmp_path / 'state.db'}") as store:
        yield Controller(
            store, ServeSettings("ctl-test:1"), Renderer(resolver=StaticResolver({"app1.internal": ["10.9.9.1"]}))
        )


@pytest.fixture
def prepares(controller: Controller, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the upstreams the controller's renderer prepared, in order."""
    names: list[str] = []
    prepare = controller.renderer._prepare

    def counting(upstream: Upstream, health: Mapping[str, bool]) -> Any:
        names.append(upstream.name)
        return prepare(upstream, health)

    monkeypatch.setattr(controller.renderer, "_prepare", counting)
    return names


def files(controller: Controller, state: DesiredState, health: Health) -> dict[str, dict[str, str]]:
    jobs = controller._jobs(state, health, 0.0, False)
    return {name: dict(job.rendered.settle().files) for name, job in jobs.items() if job.rendered is not None}


def fresh(state: DesiredState, health: Health, resolver: StaticResolver) -> dict[str, dict[str, str]]:
    rendered = Renderer(resolver=resolver).render(state, health)
    return {name: dict(node.files) for name, node in rendered.items()}


def test_a_pass_after_one_health_change_prepares_that_upstream_and_the_named_one(
    controller: Controller, prepares: list[str]
) -> None:
    state = desired()
    health: Health = {"api": {"10.0.0.1:8080": True, "10.0.0.2:8080": True}}
    files(controller, state, health)
    assert sorted(prepares) == ["api", "ipv6", "named", "web"]  # once for both access nodes
    prepares.clear()
    health = {"api": {"10.0.0.1:8080": False, "10.0.0.2:8080": True}}
    second = files(controller, state, health)
    assert sorted(prepares) == ["api", "named"]  # the named upstream resolves every pass
    assert second == fresh(state, health, StaticResolver({"app1.internal": ["10.9.9.1"]}))
    assert "server 10.0.0.1:8080 weight=1 max_fails=1 fail_timeout=10s down;" in second["lb1:80"]["http/api.conf"]
    prepares.clear()
    files(controller, state, health)
    assert prepares == ["named"]


def test_a_name_that_resolves_elsewhere_is_rendered_with_its_new_address(controller: Controller) -> None:
    state = desired()
    assert "server 10.9.9.1:8080" in files(controller, state, {})["lb1:80"]["http/named.conf"]
    controller.renderer.resolver = StaticResolver({"app1.internal": ["10.9.9.7"]})
    now = files(controller, state, {})["lb1:80"]["http/named.conf"]
    assert "server 10.9.9.7:8080" in now
    assert "10.9.9.1" not in now


def test_a_state_read_again_reuses_equal_upstreams_and_prepares_a_changed_one(
    controller: Controller, prepares: list[str]
) -> None:
    files(controller, desired(), {})
    prepares.clear()
    changed = state_of(
        [
            upstream("api", "10.0.0.1:8080", "10.0.0.3:8080"),  # a backend replaced
            upstream("web", "10.0.1.1:8080", "10.0.1.2:8080"),
            upstream("ipv6", "[2001:db8::1]:8080", "[2001:db8::2]:8080"),
            upstream("named", "app1.internal:8080", "10.0.2.2:8080"),
            access_node("lb1:80", "api", "web", "ipv6", "named"),
            access_node("lb2:80", "api", "web", "ipv6", "named"),
        ]
    )
    now = files(controller, changed, {})
    assert sorted(prepares) == ["api", "named"]
    assert "server 10.0.0.3:8080" in now["lb2:80"]["http/api.conf"]
    assert now == fresh(changed, {}, StaticResolver({"app1.internal": ["10.9.9.1"]}))


def test_the_node_models_are_kept_while_the_desired_state_is_the_same(controller: Controller) -> None:
    state = desired()
    first = controller._jobs(state, {}, 0.0, False)
    again = controller._jobs(state, {"web": {"10.0.1.1:8080": False}}, 0.0, False)
    assert all(again[name].model is first[name].model for name in first)
    read_again = controller._jobs(desired(), {}, 0.0, False)
    assert all(read_again[name].model == first[name].model for name in first)
    assert read_again["lb1:80"].model is not first["lb1:80"].model


def test_the_panic_and_backend_gauges_follow_health_and_only_changed_upstreams_are_selected_again(
    controller: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    import reconciler.serve.controller as module
    from reconciler.health.select import select

    selected: list[str] = []

    def counting(upstream: Upstream, health: Mapping[str, bool]) -> Any:
        selected.append(upstream.name)
        return select(upstream, health)

    monkeypatch.setattr(module, "select", counting)

    def gauges() -> set[str]:
        text = controller.metrics().decode()
        return {
            line
            for line in text.splitlines()
            if line.startswith(
                ('obreconcile_upstream_panic{upstream="api"', 'obreconcile_backend_up{backend="10.0.0.1')
            )
        }

    state = desired()
    controller._panic_metrics(state, {})
    assert sorted(selected) == ["api", "ipv6", "named", "web"] and controller.panic == []
    selected.clear()
    dead = {"api": {"10.0.0.1:8080": False, "10.0.0.2:8080": False}}
    controller._panic_metrics(state, dead)
    assert selected == ["api"] and controller.panic == ["api"]
    assert gauges() == {
        'obreconcile_upstream_panic{upstream="api"} 1.0',
        'obreconcile_backend_up{backend="10.0.0.1:8080",upstream="api"} 0.0',
    }
    selected.clear()
    controller._panic_metrics(desired(), dead)  # read again: equal upstreams, same health
    assert selected == [] and controller.panic == ["api"]
    controller._panic_metrics(state, {})
    assert selected == ["api"] and controller.panic == []
    assert gauges() == {
        'obreconcile_upstream_panic{upstream="api"} 0.0',
        'obreconcile_backend_up{backend="10.0.0.1:8080",upstream="api"} 1.0',
    }


def test_a_pass_reads_the_desired_state_again_only_when_the_store_revision_moved(
    controller: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = controller.store
    group = {"apiVersion": "openbalancer/v1", "kind": "Group", "name": "ops"}
    web = {"apiVersion": "openbalancer/v1", "kind": "Upstream", "name": "web", "owner": "ops"}
    store.commit([Put("Group", "ops", group, Provenance("api", "alice"))])
    store.commit([Put("Upstream", "web", {**web, "nodes": [{"hostname": "10.0.0.1:80"}]}, Provenance("api", "alice"))])
    snapshots: list[int] = []
    snapshot = store.snapshot

    def counting() -> Any:
        snapshots.append(1)
        return snapshot()

    monkeypatch.setattr(store, "snapshot", counting)
    first = asyncio.run(controller._desired())
    assert first.upstreams["web"].nodes[0].hostname == "10.0.0.1:80" and len(snapshots) == 1
    assert asyncio.run(controller._desired()) is first  # a health or drift pass: the revision alone
    assert len(snapshots) == 1
    revision = store.get("Upstream", "web")
    assert revision is not None
    body = {**web, "nodes": [{"hostname": "10.0.0.2:80"}]}
    store.commit([Put("Upstream", "web", body, Provenance("api", "alice"), expect=revision.revision)])
    second = asyncio.run(controller._desired())
    assert second.upstreams["web"].nodes[0].hostname == "10.0.0.2:80" and len(snapshots) == 2
    assert controller.revision == store.revision()
