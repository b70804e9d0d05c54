"""The store locks of ``serve``: the master's, and one per management node (SPEC.md's word for a
controller running ``serve``).

Controllers elect their master by holding ``MASTER_LOCK`` under a lease. Each ``serve`` also
holds a lock named ``management/<host_name>`` under a lease with the master lease's TTL (an
etcd lease in etcd): it disappears when the controller stops or dies.
``Store.lock_holders(MANAGEMENT_PREFIX)`` lists the live ones.
"""

from __future__ import annotations

from reconciler.health.state import MASTER_LOCK  # defined there: apply reads its holder (health freshness)

__all__ = ["MANAGEMENT_PREFIX", "MASTER_LOCK"]

MANAGEMENT_PREFIX = "management/"
