"""Management nodes (SPEC.md's word for a controller running ``serve``): registered and listed.

Each ``serve`` holds a lock named ``management/<host_name>`` under a lease with the master
lease's TTL (an etcd lease in etcd): it disappears when the controller stops or dies.
``Store.lock_holders(MANAGEMENT_PREFIX)`` lists the live ones.
"""

from __future__ import annotations

MANAGEMENT_PREFIX = "management/"
