"""What `obreconcile status` (and later GET /status) reports: the store, the master, each access node."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from reconciler.serve.locks import MASTER_LOCK
from reconciler.store import DeployState, Store, deploy_state


@dataclass(frozen=True)
class AccessNodeStatus:
    name: str
    state: DeployState
    deployed_revision: int | None = None
    error: str = ""
    when: float | None = None
    refused: tuple[dict[str, Any], ...] = ()  # upstreams left at their last good rendering (DeployRecord.refused)


@dataclass(frozen=True)
class StoreStatus:
    kind: str
    url: str
    healthy: bool
    detail: str
    revision: int
    master: str | None
    access_nodes: tuple[AccessNodeStatus, ...]

    @property
    def converged(self) -> bool:
        """Every access node converged at the store's revision (none failed, behind, orphaned or
        new) and none left an upstream at its last good rendering (refused)."""
        return all(n.state is DeployState.CONVERGED and not n.refused for n in self.access_nodes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": {"kind": self.kind, "url": self.url, "healthy": self.healthy, "detail": self.detail},
            "revision": self.revision,
            "master": self.master,
            "access_nodes": {n.name: {k: v for k, v in asdict(n).items() if k != "name"} for n in self.access_nodes},
        }


def read_status(store: Store) -> StoreStatus:
    """The status of ``store``: every access node it declares or has a deploy record of."""
    health = store.check_health()
    snapshot = store.snapshot()
    records = store.deploy_records()
    declared = {name for kind, name in snapshot.objects if kind == "AccessNode"}
    nodes = []
    for name in sorted(declared | set(records)):
        record = records.get(name)
        state = deploy_state(record, snapshot.revision, name in declared)
        if record is None:
            nodes.append(AccessNodeStatus(name, state))
        else:
            refused = tuple(dict(r) for r in record.refused)
            nodes.append(AccessNodeStatus(name, state, record.revision, record.error, record.when, refused))
    return StoreStatus(
        store.kind,
        store.url,
        health.ok,
        health.detail,
        snapshot.revision,
        store.lock_holder(MASTER_LOCK),
        tuple(nodes),
    )
