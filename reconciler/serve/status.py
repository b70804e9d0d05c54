"""``GET /status`` of a running controller (SPEC.md §4), answered from memory.

The master knows the health of every backend (its monitor) and the outcome of every push
(its node workers). A controller that is not the master serves the API too: it reads the
store's deploy and health records every few seconds (``refresh``, in a thread) and answers
from that copy. A status never waits for the store: when the store does not answer, the
last copy is served with ``etcd_health.healthy: false``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.health.select import select
from reconciler.manifest.model import DesiredState
from reconciler.serve.push import NodeWorker
from reconciler.store import DeployRecord, DeployState, HealthRecord, Store, deploy_state


@dataclass
class StatusCache:
    """What a status is made of when it does not come from the master's own memory."""

    store_ok: bool = True
    store_detail: str = "not checked yet"
    master: str | None = None
    management: dict[str, str] = field(default_factory=dict)  # lock name -> holder
    state: DesiredState | None = None
    revision: int = 0
    deploys: dict[str, DeployRecord] = field(default_factory=dict)
    health: dict[tuple[str, str, str], HealthRecord] = field(default_factory=dict)

    def refresh(self, store: Store) -> None:
        """Read the records a non-master reports (blocking: run it in a thread)."""
        revision = store.revision()
        if self.state is None or revision != self.revision:
            self.state, self.revision = store.desired_state(), revision
        self.deploys = store.deploy_records()
        self.health = store.health_records()


def _health_of_records(
    state: DesiredState, records: dict[tuple[str, str, str], HealthRecord]
) -> dict[str, dict[str, bool]]:
    out: dict[str, dict[str, bool]] = {}
    for upstream in state.upstreams.values():
        for check in upstream.checks:
            for backend in upstream.nodes:
                record = records.get((upstream.name, backend.hostname, check))
                up = record is None or record.status == "up"
                hosts = out.setdefault(upstream.name, {})
                hosts[backend.hostname] = hosts.get(backend.hostname, True) and up
    return out


@dataclass(frozen=True)
class StatusInput:
    """What a controller knows when it is asked for its status.

    The master's own memory (``state``, ``revision``, ``health``, ``workers``, ``panic``) is
    used only when ``master``; otherwise ``cache`` (the store's records) answers.
    """

    host_name: str
    master: bool
    master_since: float | None
    store_kind: str
    cache: StatusCache
    state: DesiredState | None
    revision: int
    health: Mapping[str, Mapping[str, bool]] | None  # the master's monitor: upstream -> backend -> up
    workers: Mapping[str, NodeWorker]
    panic: tuple[str, ...]


def build_status(source: StatusInput) -> dict[str, Any]:
    cache = source.cache
    master = source.master
    state = source.state if master and source.state is not None else cache.state
    revision = source.revision if master else cache.revision
    health: Mapping[str, Mapping[str, bool]]
    if master and source.health is not None:
        health = source.health
    else:
        health = _health_of_records(state, cache.health) if state is not None else {}
    nodes: list[dict[str, Any]] = []
    names = sorted(state.access_nodes) if state is not None else []
    for name in names:
        worker = source.workers.get(name) if master else None
        if worker is not None:
            s = worker.state
            job = worker.job
            converged = job is not None and s.converged_to(job) and not worker.needed(job)
            nodes.append(
                {
                    "name": name,
                    "converged": converged,
                    "revision": s.store_revision,
                    "render_revision": s.revision,
                    "result": s.result or "pending",
                    "error": s.error,
                    "reloads": s.reloads,
                    "refused": sorted(r.upstream for r in s.refused),
                }
            )
            continue
        record = cache.deploys.get(name)
        nodes.append(
            {
                "name": name,
                "converged": deploy_state(record, revision) == DeployState.CONVERGED,
                "revision": record.revision if record else None,
                "result": record.result if record else DeployState.NEVER_DEPLOYED,
                "error": record.error if record else "",
                "refused": sorted(str(r.get("upstream", "")) for r in record.refused) if record else [],
            }
        )
    total = up = 0
    panic = []
    if state is not None:
        for upstream in state.upstreams.values():
            hosts = health.get(upstream.name, {})
            total += len(upstream.nodes)
            up += sum(hosts.get(b.hostname, True) for b in upstream.nodes)
            if not master and hosts and select(upstream, hosts).panic:
                panic.append(upstream.name)
    if master:
        panic = list(source.panic)  # the master's last pass selected every upstream already
    return {
        "master_node": source.host_name if master else cache.master,
        "this_node": {"host_name": source.host_name, "master": master, "master_since": source.master_since},
        "etcd_health": {"healthy": cache.store_ok, "detail": cache.store_detail, "store": source.store_kind},
        "revision": revision,
        "access_nodes": {
            "total": len(nodes),
            "converged": sum(bool(n["converged"]) for n in nodes),
            "failed": sum(n["result"] == "failed" for n in nodes),
        },
        "backends": {"total": total, "up": up, "down": total - up},
        "panic": sorted(panic),
        "refused_upstreams": sorted({u for n in nodes for u in n["refused"]}),
        "nodes": nodes,
    }
