"""What the API needs from the running controller, and nothing more: the contract between
``reconciler/api`` (routes) and ``reconciler/serve/controller.py`` (health loop, convergence).

``serve`` builds one aiohttp application: ``reconciler.api.app.create_app(store, view, ...)``
with the controller as ``view``. Tests of the API use ``StoreView`` (no controller running).
"""

from __future__ import annotations

from typing import Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest

from reconciler.store import DeployState, Store, deploy_state


class ControllerView(Protocol):
    """Answers from memory: the API calls these on the event loop (the API runs StoreView's,
    which read the store, in a thread)."""

    def status(self) -> dict[str, Any]:
        """SPEC.md §4 ``GET /status``: at least ``master_node``, ``etcd_health`` (the store's
        health, whatever the store), ``revision``, ``access_nodes: {total, converged, failed}``,
        ``backends: {total, up, down}``, ``panic`` (upstreams in panic), and per access node
        whether it is converged (``nodes: [{name, converged, revision, error}]``)."""
        ...

    def metrics(self) -> bytes:
        """``GET /metrics``: the Prometheus text exposition of the controller's registry."""
        ...

    def management_nodes(self) -> list[dict[str, Any]]:
        """``GET /management/node``: every registered controller: ``{host_name, master, since}``."""
        ...


class StoreView:
    """A ControllerView read from the store alone (no health loop): for tests and a non-master."""

    def __init__(self, store: Store, registry: CollectorRegistry | None = None) -> None:
        self.store = store
        self.registry = registry or CollectorRegistry()

    def status(self) -> dict[str, Any]:
        health = self.store.check_health()
        state = self.store.desired_state()
        records = self.store.deploy_records()
        revision = self.store.revision()
        nodes: list[dict[str, Any]] = []
        failed = 0
        for name in sorted(state.access_nodes):
            record = records.get(name)
            node_state = deploy_state(record, revision)
            converged = node_state == DeployState.CONVERGED
            failed += node_state == DeployState.FAILED
            nodes.append(
                {
                    "name": name,
                    "converged": converged,
                    "revision": record.revision if record else None,
                    "error": record.error if record else "",
                }
            )
        backends = sum(len(u.nodes) for u in state.upstreams.values())
        return {
            "master_node": self.store.lock_holder("master"),
            "etcd_health": {"healthy": health.ok, "detail": health.detail, "store": self.store.kind},
            "revision": revision,
            "access_nodes": {
                "total": len(nodes),
                "converged": sum(n["converged"] for n in nodes),
                "failed": failed,
            },
            "backends": {"total": backends, "up": backends, "down": 0},
            "panic": [],
            "nodes": nodes,
        }

    def metrics(self) -> bytes:
        return bytes(generate_latest(self.registry))

    def management_nodes(self) -> list[dict[str, Any]]:
        master = self.store.lock_holder("master")
        return [{"host_name": master, "master": True, "since": None}] if master else []
