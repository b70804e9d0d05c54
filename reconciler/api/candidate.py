"""The desired state as the API reads and writes it.

Reads: one snapshot of the store, kept while the store's revision stays the same (a request
costs one revision read, not a snapshot of 1,000 upstreams).

Writes: the change is applied to the snapshot's bodies, and the whole candidate desired state
is validated with the manifests' rules (schemas, references, clashes on an access node,
min_servers). Problems in the written objects are the body's fault (400); problems elsewhere
are consequences for other objects (409: e.g. deleting a group still owning an upstream).
Nothing is stored unless the candidate is valid, and the commit compares the revision read
(compare-and-swap): a concurrent change makes it 409 rather than overwrite it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.api.problems import ApiError, problem_detail
from reconciler.errors import ConflictError
from reconciler.manifest.model import API_VERSION, DesiredState, whole_numbers
from reconciler.manifest.validate import validate_objects
from reconciler.store import Delete, Op, Provenance, Put, Snapshot, Store
from reconciler.store.base import ObjectKey


@dataclass(frozen=True)
class Desired:
    """The desired state at one revision: stored objects and their model objects."""

    revision: int
    snapshot: Snapshot
    state: DesiredState

    def body(self, kind: str, name: str) -> Mapping[str, Any] | None:
        obj = self.snapshot.objects.get((kind, name))
        return None if obj is None else obj.body


@dataclass(frozen=True)
class Change:
    """One object written (``body``) or deleted (None) by a request."""

    kind: str
    name: str
    body: Mapping[str, Any] | None


audit_log = logging.getLogger("obreconcile.api.audit")  # one line per write: who, what, revision
RECHECK = 0.0  # default seconds between reads of the store's revision on the request path


class DesiredCache:
    """The latest Desired, re-read when the store's revision moves."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._current: Desired | None = None
        self._lock = asyncio.Lock()
        self._checked = 0.0
        self.recheck = RECHECK

    def stale(self) -> bool:
        """True when the revision was last read more than RECHECK seconds ago."""
        return self._current is None or time.monotonic() - self._checked > self.recheck

    def expire(self) -> None:
        """Make the next request read the store's revision (after a write)."""
        self._checked = 0.0

    async def at(self, revision: int) -> Desired:
        """The Desired at ``revision`` (just read from the store) or later."""
        current = self._current
        if current is not None and current.revision >= revision:
            if revision:
                self._checked = time.monotonic()
            return current
        async with self._lock:
            current = self._current
            if current is None or current.revision < revision:
                current = await asyncio.to_thread(self._load)
                self._current = current
                self._checked = time.monotonic()
        return current

    async def latest(self) -> Desired:
        return await self.at(await asyncio.to_thread(self.store.revision))

    def _load(self) -> Desired:
        snapshot = self.store.snapshot()
        return Desired(snapshot.revision, snapshot, snapshot.desired_state())


def manifest_body(kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """An API body as a manifest document: apiVersion and kind filled in when left out."""
    return {"apiVersion": API_VERSION, "kind": kind, **body}


WRITTEN, STORED = "request", "store"  # where a problem of the candidate state is: 400 or 409


def candidate_problems(desired: Desired, changes: Sequence[Change]) -> ApiError | None:
    """The error a set of changes earns, or None when the resulting desired state is valid."""
    bodies: dict[ObjectKey, Mapping[str, Any]] = {key: obj.body for key, obj in desired.snapshot.objects.items()}
    for change in changes:
        if change.body is None:
            bodies.pop((change.kind, change.name), None)
        else:
            bodies[(change.kind, change.name)] = change.body
    written = {(c.kind, c.name) for c in changes if c.body is not None}
    files = [WRITTEN if key in written else STORED for key in bodies]
    problems = validate_objects(list(bodies.values()), files=files)
    if not problems:
        return None
    if any(p.file == WRITTEN for p in problems):  # by document: a problem's name is escaped and cut
        return ApiError(400, "invalid body", problem_detail(problems))
    return ApiError(409, "the change would make the desired state invalid", problem_detail(problems))


async def write(store: Store, desired: Desired, changes: Sequence[Change], user: str) -> int:
    """Validate and commit ``changes`` on top of ``desired``; the new revision. Raises ApiError.

    Bodies are stored with manifests' number rule (``2.0`` is the integer 2: ``whole_numbers``)."""
    changes = [Change(c.kind, c.name, whole_numbers(c.body) if c.body is not None else None) for c in changes]
    error = await asyncio.to_thread(candidate_problems, desired, changes)
    if error is not None:
        raise error
    who = Provenance("api", user)
    ops: list[Op] = [
        Put(c.kind, c.name, c.body, who) if c.body is not None else Delete(c.kind, c.name, who) for c in changes
    ]
    try:
        revision = await asyncio.to_thread(store.commit, ops, desired.revision)
    except ConflictError as e:
        raise ApiError(409, "the desired state changed since it was read; read it again and retry", str(e)) from e
    what = ", ".join(f"{'put' if c.body is not None else 'delete'} {c.kind}/{c.name}" for c in changes)
    audit_log.info("%s: %s, revision %d", user, what, revision)  # names passed the schema: printable
    return revision
