"""GitOps semantics: put what the manifests say into the store, in one transaction.

Objects whose provenance is the manifests are replaced by what the manifests now say, so an
object deleted in Git is removed from the store. Objects created through the API are left
alone unless ``prune_api``; one the manifests now declare is taken over by Git. Only objects
that differ are written, so a re-sync with one upstream changed writes exactly one object.
``plan_sync`` is the pure half (plan shows it); ``sync_manifests`` commits it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from reconciler.errors import ConflictError
from reconciler.manifest.model import KINDS, DesiredState, to_manifest
from reconciler.store.base import Delete, ObjectKey, Op, Provenance, Put, Snapshot, Store, StoredObject

MANIFESTS = "manifests"  # the origin of an object built without a source file


class SyncAction(StrEnum):
    ADD = "add"  # declared in the manifests, not in the store
    CHANGE = "change"  # declared and stored from the manifests, body or file differs
    REMOVE = "remove"  # stored from the manifests (or the API with prune_api), declared no more
    TAKEOVER = "takeover"  # created through the API, now declared in the manifests: Git wins


@dataclass(frozen=True)
class SyncChange:
    """One object-level change of a sync: old is what the store holds, new what it will."""

    action: SyncAction
    kind: str
    name: str
    old: StoredObject | None
    new_body: Mapping[str, Any] | None
    new_provenance: Provenance

    def to_op(self) -> Op:
        if self.new_body is None:
            return Delete(self.kind, self.name, self.new_provenance)
        return Put(self.kind, self.name, self.new_body, self.new_provenance)


@dataclass(frozen=True)
class SyncPlan:
    """What a sync would do against one snapshot, and the API objects it leaves alone."""

    base_revision: int
    changes: tuple[SyncChange, ...]
    kept_api: tuple[ObjectKey, ...]


@dataclass(frozen=True)
class SyncResult:
    base_revision: int
    revision: int  # equal to base_revision when nothing changed
    changes: tuple[SyncChange, ...]
    kept_api: tuple[ObjectKey, ...]
    writes: int


def plan_sync(snapshot: Snapshot, desired: DesiredState, prune_api: bool = False, now: float | None = None) -> SyncPlan:
    """The object-level changes that make the store say what ``desired`` says (pure)."""
    when = time.time() if now is None else now
    changes: list[SyncChange] = []
    declared: set[ObjectKey] = set()
    for kind in KINDS:
        for name, obj in sorted(desired.of_kind(kind).items()):
            declared.add((kind, name))
            body = to_manifest(kind, obj)
            provenance = Provenance("manifest", obj.source.file or MANIFESTS, when)
            change = _declared_change(snapshot.objects.get((kind, name)), kind, name, body, provenance)
            if change is not None:
                changes.append(change)
    kept: list[ObjectKey] = []
    for key, stored in sorted(snapshot.objects.items()):
        if key in declared:
            continue
        if stored.provenance.source == "api" and not prune_api:
            kept.append(key)
            continue
        removed_by = Provenance("manifest", MANIFESTS, when)
        changes.append(SyncChange(SyncAction.REMOVE, key[0], key[1], stored, None, removed_by))
    return SyncPlan(snapshot.revision, tuple(changes), tuple(kept))


def _declared_change(
    stored: StoredObject | None, kind: str, name: str, body: dict[str, Any], provenance: Provenance
) -> SyncChange | None:
    if stored is None:
        return SyncChange(SyncAction.ADD, kind, name, None, body, provenance)
    if stored.provenance.source == "api":
        return SyncChange(SyncAction.TAKEOVER, kind, name, stored, body, provenance)
    if stored.body != body or stored.provenance.origin != provenance.origin:
        return SyncChange(SyncAction.CHANGE, kind, name, stored, body, provenance)
    return None


def sync_manifests(store: Store, desired: DesiredState, prune_api: bool = False) -> SyncResult:
    """Make the store say what the manifests say, in one transaction, writing only changes.

    Raises ConflictError when another writer changed the store between the read and the
    commit (nothing is written then; running again recomputes against the new state).
    """
    snapshot = store.snapshot()
    plan = plan_sync(snapshot, desired, prune_api)
    if not plan.changes:
        return SyncResult(plan.base_revision, plan.base_revision, (), plan.kept_api, 0)
    ops = [change.to_op() for change in plan.changes]
    try:
        revision = store.commit(ops, base_revision=plan.base_revision)
    except ConflictError as e:
        raise ConflictError(f"{e}; the manifests were not applied, run again to apply them") from e
    return SyncResult(plan.base_revision, revision, plan.changes, plan.kept_api, len(ops))
