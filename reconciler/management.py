"""Management nodes (SPEC.md's word for a controller running ``serve``): registered and listed.

Each ``serve`` holds a lock named ``management/<host_name>`` under a lease with the master
lease's TTL (an etcd lease in etcd): it disappears when the controller stops or dies.
``lock_holders`` lists the live locks under a prefix. It reads the two stores' own lock
tables until the Store interface grows a method for it (it is kept out of store/ while
that package changes for the API's tokens).
"""

from __future__ import annotations

import time

from reconciler.store import Store

MANAGEMENT_PREFIX = "management/"


def lock_holders(store: Store, prefix: str) -> dict[str, str]:
    """Live lock name -> holder, for every lock whose name starts with ``prefix``."""
    from reconciler.store.etcd import EtcdStore
    from reconciler.store.sqlite import SqliteStore

    if isinstance(store, SqliteStore):
        with store._read() as db:
            rows = db.execute(
                "SELECT name, holder FROM locks WHERE substr(name, 1, ?) = ? AND expires > ?",
                (len(prefix), prefix, time.time()),
            ).fetchall()
        return {str(name): str(holder) for name, holder in rows}
    if isinstance(store, EtcdStore):
        key = store._k("lock", prefix)
        found = store._range_all(key)
        return {str(meta["key"].decode()[len(store._k("lock", "")) :]): str(value["holder"]) for value, meta in found}
    return {}
