"""Desired states built with the model classes, for the store tests and bench/store.py."""

from __future__ import annotations

from dataclasses import replace

from reconciler.manifest.model import (
    AccessNode,
    Backend,
    Connection,
    DesiredState,
    Group,
    Listen,
    Source,
    Upstream,
)


def upstream(name: str, backends: int = 2, weight: int = 1, file: str = "upstreams.yaml") -> Upstream:
    nodes = tuple(Backend(f"app{i}.{name}.internal:8080", weight=weight) for i in range(backends))
    return Upstream(name, "team-a", Listen("http", (f"{name}.example.com",)), nodes=nodes, source=Source(file, 1))


def fleet(upstreams: int, access_nodes: int = 1, backends: int = 2) -> DesiredState:
    """``upstreams`` upstreams served by every one of ``access_nodes`` access nodes."""
    ups = {f"u{i:05d}": upstream(f"u{i:05d}", backends) for i in range(upstreams)}
    nodes = {
        f"lb{i}.example.com:80": AccessNode(
            f"lb{i}.example.com:80",
            "ops",
            Connection("ssh", f"lb{i}.example.com"),
            upstreams=tuple(ups),
            source=Source("nodes.yaml", 1),
        )
        for i in range(access_nodes)
    }
    groups = {
        "team-a": Group("team-a", source=Source("groups.yaml", 1)),
        "ops": Group("ops", source=Source("groups.yaml", 1)),
    }
    return DesiredState(groups=groups, upstreams=ups, access_nodes=nodes)


def with_upstream(state: DesiredState, up: Upstream) -> DesiredState:
    return replace(state, upstreams={**state.upstreams, up.name: up})


def without_upstream(state: DesiredState, name: str) -> DesiredState:
    ups = {k: v for k, v in state.upstreams.items() if k != name}
    nodes = {k: replace(n, upstreams=tuple(u for u in n.upstreams if u != name)) for k, n in state.access_nodes.items()}
    return replace(state, upstreams=ups, access_nodes=nodes)
