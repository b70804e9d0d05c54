"""What the API needs from the running controller, and nothing more: the contract between
``reconciler/api`` (routes) and ``reconciler/serve/controller.py`` (health loop, convergence).

``serve`` builds one aiohttp application: ``reconciler.api.app.create_app(store, view, ...)``
with the controller as ``view``. Tests of the API use ``StoreView`` (no controller running).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest

from reconciler.health.state import MASTER_LOCK
from reconciler.store import DeployState, Store, deploy_state, refused_by_upstream


class CheckResult(Protocol):
    """The last known result of one check on one backend (the monitor's state or a HealthRecord)."""

    @property
    def status(self) -> str: ...  # "up" | "down" (rise/fall applied)
    @property
    def detail(self) -> str: ...  # the last result's words ("connection refused", "200")
    @property
    def seconds(self) -> float: ...  # how long the last check took
    @property
    def checked(self) -> float: ...  # when its result came (0: none yet)
    @property
    def since(self) -> float: ...  # when the status last flipped (0: up since the first check)


CheckKey = tuple[str, str, str]  # (upstream, backend hostname, check name)


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

    def refused_upstreams(self) -> Mapping[str, list[dict[str, Any]]]:
        """Upstreams the renderer refuses on access nodes (left at their last good rendering):
        upstream -> ``[{access_node, message, field, value, paths}]``, as the nodes' last pushes
        left them (``GET /health``, ``GET /upstream/{name}/health``)."""
        ...

    def check_results(self) -> Mapping[CheckKey, CheckResult]:
        """``GET /health``: the last result of every check known (a check without one is up).

        The master answers from its monitor (live); another controller from the store's health
        records, which are written when a check's rise/fall count changes (so a latency there is
        the one of that moment)."""
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
                    "refused": sorted(str(r.get("upstream", "")) for r in record.refused) if record else [],
                }
            )
        backends = sum(len(u.nodes) for u in state.upstreams.values())
        return {
            "master_node": self.store.lock_holder(MASTER_LOCK),
            "etcd_health": {"healthy": health.ok, "detail": health.detail, "store": self.store.kind},
            "revision": revision,
            "access_nodes": {
                "total": len(nodes),
                "converged": sum(n["converged"] for n in nodes),
                "failed": failed,
            },
            "backends": {"total": backends, "up": backends, "down": 0},
            "panic": [],
            "refused_upstreams": sorted({u for n in nodes for u in n["refused"]}),
            "nodes": nodes,
        }

    def metrics(self) -> bytes:
        return bytes(generate_latest(self.registry))

    def management_nodes(self) -> list[dict[str, Any]]:
        master = self.store.lock_holder(MASTER_LOCK)
        return [{"host_name": master, "master": True, "since": None}] if master else []

    def refused_upstreams(self) -> Mapping[str, list[dict[str, Any]]]:
        pairs = [(name, r) for name, record in self.store.deploy_records().items() for r in record.refused]
        return refused_by_upstream(pairs)

    def check_results(self) -> Mapping[CheckKey, CheckResult]:
        return self.store.health_records()
