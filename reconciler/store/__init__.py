"""The desired-state store: ``open_store(url)`` gives a Store for a store URL.

URLs: ``sqlite:///RELATIVE/PATH`` or ``sqlite:////ABSOLUTE/PATH`` (SQLAlchemy's convention:
the path is everything after ``sqlite:///``), and ``etcd://HOST[:PORT][/PREFIX]`` (port 2379,
prefix ``obreconcile`` by default).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from reconciler.errors import StoreError
from reconciler.store.base import (
    AuditEntry,
    Delete,
    DeployEntry,
    DeployRecord,
    DeployResult,
    DeployState,
    HealthRecord,
    IndexEntry,
    Lock,
    Op,
    Provenance,
    Put,
    Snapshot,
    Store,
    StoredObject,
    StoreHealth,
    StoreIndex,
    TemplateSet,
    deploy_state,
    fingerprint,
    refused_by_upstream,
)
from reconciler.store.sync import SyncAction, SyncChange, SyncPlan, SyncResult, plan_sync, sync_manifests

__all__ = [
    "AuditEntry",
    "Delete",
    "DeployEntry",
    "DeployRecord",
    "DeployResult",
    "DeployState",
    "HealthRecord",
    "IndexEntry",
    "Lock",
    "Op",
    "Provenance",
    "Put",
    "Snapshot",
    "Store",
    "StoreHealth",
    "StoreIndex",
    "StoredObject",
    "SyncAction",
    "SyncChange",
    "SyncPlan",
    "SyncResult",
    "TemplateSet",
    "deploy_state",
    "fingerprint",
    "open_store",
    "plan_sync",
    "refused_by_upstream",
    "sync_manifests",
]

_PREFIX = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
_FORMS = "sqlite:///PATH or etcd://HOST:PORT[/PREFIX]"


def open_store(url: str, timeout: float = 10.0, create_directory: bool = False) -> Store:
    """Open the store at ``url``; a StoreError says clearly what is wrong with it.

    ``create_directory``: an SQLite file's missing directory is made (the CLI's default store
    only); otherwise it is an error.
    """
    if url.startswith("sqlite:///"):
        from reconciler.store.sqlite import SqliteStore

        path = url[len("sqlite:///") :]
        if not path:
            raise StoreError(f"store URL {url!r} names no file (use {_FORMS})")
        return SqliteStore(path, create_directory=create_directory)
    if url.startswith("etcd://"):
        from reconciler.store.etcd import DEFAULT_PREFIX, EtcdStore

        parts = urlsplit(url)
        try:
            host, port = parts.hostname, parts.port or 2379
        except ValueError as e:
            raise StoreError(f"store URL {url!r}: {e} (use {_FORMS})") from e
        prefix = parts.path.strip("/") or DEFAULT_PREFIX
        if not host or parts.query or parts.fragment or parts.username or not _PREFIX.match(prefix):
            raise StoreError(f"store URL {url!r} is not of the form etcd://HOST:PORT[/PREFIX]")
        return EtcdStore(host, port, prefix, timeout=timeout)
    raise StoreError(f"store URL {url!r} is not supported (use {_FORMS})")
