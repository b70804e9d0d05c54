"""GitOps semantics: put what the manifests say into the store, in one transaction.

Objects whose provenance is the manifests are replaced by what the manifests now say, so an
object deleted in Git is removed from the store. Objects created through the API are left
alone unless ``prune_api``; one the manifests now declare is taken over by Git. Only objects
that differ are written, so a re-sync with one upstream changed writes exactly one object.
``plan_sync`` only reads (plan shows it); ``sync_manifests`` commits it.

A sync that would destroy much is a ``Destroy`` (``SyncPlan.destroy``): every object of the
store, any AccessNode, or more than ``DESTROY_SHARE`` of the objects when that is more than
``DESTROY_AT_LEAST`` of them. apply refuses it unless told (``--allow-destroy``); plan shows it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from reconciler import gc_pause
from reconciler.errors import ConflictError
from reconciler.manifest.model import KINDS, DesiredState, to_manifest
from reconciler.store.base import (
    Delete,
    ObjectKey,
    Op,
    Provenance,
    Put,
    Store,
    StoredObject,
    fingerprint,
)

MANIFESTS = "manifests"  # the origin of an object built without a source file


DESTROY_SHARE = 0.5  # more than half of the store's objects removed by one sync ...
DESTROY_AT_LEAST = 10  # ... and more than this many: a wrong path, not a clean-up


class DestroyReason(StrEnum):
    EVERYTHING = "everything"  # the store would hold no object at all afterwards
    ACCESS_NODE = "access_node"  # an AccessNode would be removed (its nginx is left orphaned)
    SHARE = "share"  # more than DESTROY_SHARE of the objects, and more than DESTROY_AT_LEAST


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
    fingerprint: str = ""

    def to_op(self) -> Op:
        if self.new_body is None:
            return Delete(self.kind, self.name, self.new_provenance)
        return Put(self.kind, self.name, self.new_body, self.new_provenance, fingerprint=self.fingerprint)


@dataclass(frozen=True)
class SyncPlan:
    """What a sync would do against the store at ``base_revision``, and the API objects it keeps."""

    base_revision: int
    changes: tuple[SyncChange, ...]
    kept_api: tuple[ObjectKey, ...]
    stored: int = 0  # objects in the store at base_revision

    @property
    def removed(self) -> tuple[ObjectKey, ...]:
        return tuple((c.kind, c.name) for c in self.changes if c.action == SyncAction.REMOVE)

    @property
    def destroy(self) -> Destroy | None:
        """What makes this sync a destroy (refused unless allowed), or None."""
        removed = self.removed
        reasons = []
        if removed and len(removed) == self.stored:
            reasons.append(DestroyReason.EVERYTHING)
        if any(kind == "AccessNode" for kind, _ in removed):
            reasons.append(DestroyReason.ACCESS_NODE)
        if len(removed) > DESTROY_AT_LEAST and len(removed) > DESTROY_SHARE * self.stored:
            reasons.append(DestroyReason.SHARE)
        return Destroy(tuple(reasons), removed, self.stored) if reasons else None


@dataclass(frozen=True)
class Destroy:
    """A sync that removes much: why (``reasons``), what (``removed``), out of how many."""

    reasons: tuple[DestroyReason, ...]
    removed: tuple[ObjectKey, ...]
    stored: int

    def summary(self) -> str:
        """One line: '3 of 5 objects (every object, 1 AccessNode)'."""
        why = []
        if DestroyReason.EVERYTHING in self.reasons:
            why.append("every object in the store")
        if DestroyReason.ACCESS_NODE in self.reasons:
            nodes = sum(kind == "AccessNode" for kind, _ in self.removed)
            why.append(f"{nodes} AccessNode{'s' * (nodes != 1)}")
        if DestroyReason.SHARE in self.reasons:
            why.append(f"more than {DESTROY_SHARE:.0%} of the objects")
        return f"{len(self.removed)} of {self.stored} objects ({', '.join(why)})"

    def refusal(self, shown: int = 20) -> str:
        """Why apply refuses, with the list of what it would remove (at most ``shown`` names)."""
        names = [f"{kind}/{name}" for kind, name in self.removed]
        listed = "\n  ".join(names[:shown]) + (f"\n  ... and {len(names) - shown} more" if len(names) > shown else "")
        return (
            f"refusing to remove {self.summary()} from the store:\n  {listed}\n"
            "Check the manifest paths; if this is meant, run again with --allow-destroy "
            '(docs/apply.md, "The destroy guard")'
        )


@dataclass(frozen=True)
class SyncResult:
    base_revision: int
    revision: int  # equal to base_revision when nothing changed
    changes: tuple[SyncChange, ...]
    kept_api: tuple[ObjectKey, ...]
    writes: int


@dataclass(frozen=True)
class _Declared:
    kind: str
    name: str
    obj: Any
    provenance: Provenance
    fingerprint: str


def plan_sync(store: Store, desired: DesiredState, prune_api: bool = False, now: float | None = None) -> SyncPlan:
    """The object-level changes that make the store say what ``desired`` says (reads only).

    Objects are compared by fingerprint first, from the store's index; only those that differ
    are turned into manifest form and compared with their stored bodies.
    """
    with gc_pause.paused():
        return _plan(store, desired, prune_api, time.time() if now is None else now)


def _plan(store: Store, desired: DesiredState, prune_api: bool, when: float) -> SyncPlan:
    index = store.index()
    candidates: list[_Declared] = []
    declared: set[ObjectKey] = set()
    for kind in KINDS:
        for name, obj in sorted(desired.of_kind(kind).items()):
            declared.add((kind, name))
            origin = obj.source.file or MANIFESTS
            entry = index.entries.get((kind, name))
            fp = fingerprint(obj)
            if entry is None or entry.fingerprint != fp or entry.source != "manifest" or entry.origin != origin:
                candidates.append(_Declared(kind, name, obj, Provenance("manifest", origin, when), fp))
    gone = sorted(k for k in index.entries if k not in declared)
    kept = tuple(k for k in gone if index.entries[k].source == "api" and not prune_api)
    removed = [k for k in gone if k not in kept]
    old = store.get_many([(c.kind, c.name) for c in candidates if (c.kind, c.name) in index.entries] + removed)
    changes = [change for c in candidates if (change := _declared_change(old.get((c.kind, c.name)), c)) is not None]
    removed_by = Provenance("manifest", MANIFESTS, when)
    changes += [SyncChange(SyncAction.REMOVE, k[0], k[1], old.get(k), None, removed_by) for k in removed]
    return SyncPlan(index.revision, tuple(changes), kept, len(index.entries))


def _declared_change(stored: StoredObject | None, c: _Declared) -> SyncChange | None:
    body = to_manifest(c.kind, c.obj)
    if stored is None:
        return SyncChange(SyncAction.ADD, c.kind, c.name, None, body, c.provenance, c.fingerprint)
    if stored.provenance.source == "api":
        return SyncChange(SyncAction.TAKEOVER, c.kind, c.name, stored, body, c.provenance, c.fingerprint)
    if stored.body != body or stored.provenance.origin != c.provenance.origin:
        return SyncChange(SyncAction.CHANGE, c.kind, c.name, stored, body, c.provenance, c.fingerprint)
    return None  # same content; only the fingerprint scheme differs


def sync_manifests(
    store: Store, desired: DesiredState, prune_api: bool = False, plan: SyncPlan | None = None
) -> SyncResult:
    """Make the store say what the manifests say, in one transaction, writing only changes.

    ``plan``: a ``plan_sync`` of the same arguments the caller already made (it is committed
    against its base revision, so a store that moved since is a conflict, never a lost write).
    Raises ConflictError when another writer changed the store between the read and the
    commit (nothing is written then; running again recomputes against the new state).
    """
    if plan is None:
        plan = plan_sync(store, desired, prune_api)
    if not plan.changes:
        return SyncResult(plan.base_revision, plan.base_revision, (), plan.kept_api, 0)
    ops = [change.to_op() for change in plan.changes]
    try:
        with gc_pause.paused():
            revision = store.commit(ops, base_revision=plan.base_revision)
    except ConflictError as e:
        raise ConflictError(f"{e}; the manifests were not applied, run again to apply them") from e
    return SyncResult(plan.base_revision, revision, plan.changes, plan.kept_api, len(ops))
