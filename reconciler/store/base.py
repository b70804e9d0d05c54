"""The desired-state store: one interface, typed values, two implementations (sqlite, etcd).

What the store holds:

- desired objects of every kind (``StoredObject``: the manifest-form body, the revision it was
  last changed at, and its provenance: a manifest file or an API user, and when);
- an audit log (``AuditEntry``): one entry per object change, complete, in revision order;
- per access node, what was deployed there last (``DeployRecord``), and a deploy history:
  every record whose outcome differs from the node's previous one (``DeployEntry``, the newest
  ``HISTORY_KEEP`` kept; a drift check that changed nothing adds none);
- per (upstream, backend, check), the health state the health loop keeps (``HealthRecord``);
- locks held under a lease with a TTL (``Lock``): the master election and per-node locks;
- API tokens as sha256 hashes with user and expiry (``TokenRecord``, see tokens.py).

Revisions: ``revision()`` is the revision of the last change of desired objects. It strictly
increases with every ``commit``; deploy records, health records and locks never move it. In
etcd it is etcd's own revision of that commit (so a push can be fenced with etcd's
compare-and-swap); in SQLite it is a counter that grows by one per commit.
"""

from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import TracebackType
from typing import Any, Literal, NamedTuple

from reconciler.manifest.model import DesiredState, Source, build_object
from reconciler.store.tokens import TokenStore

ObjectKey = tuple[str, str]  # (kind, name)
SOURCES = ("manifest", "api")


@dataclass(frozen=True)
class Provenance:
    """Who made an object what it is: ``source`` manifest (``origin`` = file) or api (= user)."""

    source: Literal["manifest", "api"]
    origin: str
    when: float = field(default_factory=time.time)  # seconds since the epoch, UTC

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "origin": self.origin, "when": self.when}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Provenance:
        return cls(data["source"], data["origin"], float(data["when"]))


@dataclass(frozen=True)
class StoredObject:
    """One desired object as stored: its manifest-form body and where it came from."""

    kind: str
    name: str
    body: Mapping[str, Any]
    revision: int
    provenance: Provenance

    @property
    def key(self) -> ObjectKey:
        return (self.kind, self.name)


@dataclass(frozen=True)
class Put:
    """Create or replace an object. ``expect``: the revision it must be at now (0 = absent).

    ``fingerprint``: of the model object (see ``fingerprint``); computed from the body when empty.
    """

    kind: str
    name: str
    body: Mapping[str, Any]
    provenance: Provenance
    expect: int | None = None
    fingerprint: str = ""

    def with_fingerprint(self) -> Put:
        return self if self.fingerprint else replace(self, fingerprint=body_fingerprint(self.kind, self.body))


@dataclass(frozen=True)
class Delete:
    """Remove an object. ``provenance`` says who removed it (for the audit log)."""

    kind: str
    name: str
    provenance: Provenance
    expect: int | None = None


Op = Put | Delete


@dataclass(frozen=True)
class AuditEntry:
    """One change of one object, as the audit log and ``watch`` report it."""

    revision: int
    kind: str
    name: str
    action: Literal["put", "delete"]
    provenance: Provenance

    def to_row(self) -> list[Any]:
        p = self.provenance
        return [self.kind, self.name, self.action, p.source, p.origin, p.when]

    @classmethod
    def from_row(cls, revision: int, row: Sequence[Any]) -> AuditEntry:
        kind, name, action, source, origin, when = row
        return cls(revision, kind, name, action, Provenance(source, origin, float(when)))


class IndexEntry(NamedTuple):
    """What a sync needs to know of a stored object without reading its body.

    A named tuple rather than a dataclass: an index of 10,000 objects is built in every sync.
    """

    revision: int
    source: str
    origin: str
    when: float
    fingerprint: str

    @property
    def provenance(self) -> Provenance:
        return Provenance(self.source, self.origin, self.when)  # type: ignore[arg-type]


@dataclass(frozen=True)
class StoreIndex:
    """Every desired object's IndexEntry at one revision."""

    revision: int
    entries: Mapping[ObjectKey, IndexEntry]


@dataclass(frozen=True)
class Snapshot:
    """Every desired object at one revision."""

    revision: int
    objects: Mapping[ObjectKey, StoredObject]

    def desired_state(self) -> DesiredState:
        """The objects as the model's DesiredState (manifest files kept as their Source)."""
        by_kind: dict[str, dict[str, Any]] = {}
        for (kind, name), obj in sorted(self.objects.items()):
            p = obj.provenance
            source = Source(p.origin) if p.source == "manifest" else Source(f"api:{p.origin}")
            by_kind.setdefault(kind, {})[name] = build_object(kind, obj.body, source)
        return DesiredState.from_kinds(by_kind)


class DeployResult(StrEnum):
    """How the last deploy of an access node ended."""

    CONVERGED = "converged"
    FAILED = "failed"


class DeployState(StrEnum):
    """What a node's deploy record says of it at the store's revision (``deploy_state``)."""

    NEVER_DEPLOYED = "never deployed"
    FAILED = "failed"
    CONVERGED = "converged"
    # Converged at an older revision: the desired state moved since (an API write, an apply that
    # did not target it) and no convergence has recorded this node since. Drift in the files
    # themselves is what `plan` shows and what serve's drift timer corrects.
    BEHIND = "behind"
    # Deployed once, no longer declared (its AccessNode was removed): its nginx keeps serving the
    # last files obreconcile put there, and nothing converges it any more (docs/apply.md).
    ORPHANED = "orphaned"


@dataclass(frozen=True)
class DeployRecord:
    """What was deployed on one access node: desired revision, sha256 per file, outcome."""

    access_node: str
    revision: int
    digests: Mapping[str, str]
    result: DeployResult
    error: str = ""
    when: float = field(default_factory=time.time)
    by: str = ""  # who pushed: "serve HOST" (a controller), "apply USER@HOST", "converge USER@HOST"
    seconds: float = 0.0  # how long the push took
    step: str = ""  # the step that failed ("connect": the node was not reached)
    # upstreams the renderer refused there, left at their last good rendering: each as
    # RefusedUpstream.to_dict() says it (upstream, message, field, value, paths)
    refused: tuple[Mapping[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = {
            "access_node": self.access_node,
            "revision": self.revision,
            "digests": dict(self.digests),
            "result": self.result,
            "error": self.error,
            "when": self.when,
            "by": self.by,
            "seconds": self.seconds,
            "step": self.step,
        }
        if self.refused:  # only then: the records of nodes without refusals stay as they were
            out["refused"] = [dict(r) for r in self.refused]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeployRecord:
        return cls(
            data["access_node"],
            int(data["revision"]),
            dict(data["digests"]),
            DeployResult(data["result"]),
            data.get("error", ""),
            float(data["when"]),
            str(data.get("by", "")),
            float(data.get("seconds", 0.0)),
            str(data.get("step", "")),
            tuple(dict(r) for r in data.get("refused", ())),
        )

    def same_outcome(self, other: DeployRecord | None) -> bool:
        """Does ``other`` (the node's previous record) say the same? Then no history entry."""
        return other is not None and (
            self.revision,
            self.result,
            self.error,
            self.step,
            dict(self.digests),
            self.refused,
        ) == (
            other.revision,
            other.result,
            other.error,
            other.step,
            dict(other.digests),
            other.refused,
        )


def refused_by_upstream(refusals: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """(access node, refusal) pairs (``DeployRecord.refused``'s items) by upstream, for the API:
    upstream -> ``[{access_node, message, field, value, paths}, ...]`` sorted by access node."""
    out: dict[str, list[dict[str, Any]]] = {}
    for access_node, refused in sorted(refusals, key=lambda pair: pair[0]):
        item = {"access_node": access_node, **{k: v for k, v in refused.items() if k != "upstream"}}
        out.setdefault(str(refused.get("upstream", "")), []).append(item)
    return out


class DeployEntry(NamedTuple):
    """One entry of the deploy history: ``seq`` grows with every entry (the paging cursor)."""

    seq: int
    record: DeployRecord


HISTORY_KEEP = 10_000  # deploy history entries kept (the oldest go first)


def deploy_state(record: DeployRecord | None, revision: int, declared: bool = True) -> DeployState:
    """The state of an access node whose deploy record is ``record``, at store ``revision``
    (for ``obreconcile status`` and ``GET /status``); ``declared``: its AccessNode exists."""
    if record is None:
        return DeployState.NEVER_DEPLOYED
    if not declared:
        return DeployState.ORPHANED
    if record.result == DeployResult.FAILED:
        return DeployState.FAILED
    return DeployState.BEHIND if record.revision < revision else DeployState.CONVERGED


@dataclass(frozen=True)
class HealthRecord:
    """The state of one check on one backend of one upstream (kept by the health loop)."""

    upstream: str
    backend: str
    check: str
    status: Literal["up", "down"]
    consecutive: int = 0  # passes (when up) or failures (when down) in a row
    detail: str = ""
    when: float = field(default_factory=time.time)
    seconds: float = 0.0  # how long the last check took (as of when the record was written)
    checked: float = 0.0  # when that check's result came (0: none yet)
    since: float = 0.0  # when the status last flipped (0: up since the first check)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.upstream, self.backend, self.check)

    def to_dict(self) -> dict[str, Any]:
        return {
            "upstream": self.upstream,
            "backend": self.backend,
            "check": self.check,
            "status": self.status,
            "consecutive": self.consecutive,
            "detail": self.detail,
            "when": self.when,
            "seconds": self.seconds,
            "checked": self.checked,
            "since": self.since,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HealthRecord:
        return cls(
            data["upstream"],
            data["backend"],
            data["check"],
            data["status"],
            int(data["consecutive"]),
            data.get("detail", ""),
            float(data["when"]),
            float(data.get("seconds", 0.0)),
            float(data.get("checked", 0.0)),
            float(data.get("since", 0.0)),
        )


@dataclass(frozen=True)
class TemplateSet:
    """The custom templates every render uses (desired state): template name -> source.

    ``origin`` says where apply read them (a path relative to the manifests' root).
    """

    sources: Mapping[str, str]
    origin: str = ""

    @property
    def digest(self) -> str:
        digest = hashlib.sha256()
        for name in sorted(self.sources):
            digest.update(f"{name}\0{self.sources[name]}\0".encode())
        return digest.hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"sources": dict(sorted(self.sources.items())), "origin": self.origin}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TemplateSet:
        return cls({str(k): str(v) for k, v in data["sources"].items()}, str(data.get("origin", "")))


@dataclass(frozen=True)
class StoreHealth:
    ok: bool
    detail: str


class Lock(ABC):
    """A lock held under a lease: it is released by ``release`` or when the TTL runs out."""

    def __init__(self, name: str, holder: str, ttl: int) -> None:
        self.name = name
        self.holder = holder
        self.ttl = ttl

    @abstractmethod
    def refresh(self) -> bool:
        """Extend the lease by the TTL; False when the lock was lost (expired, taken)."""

    @abstractmethod
    def release(self) -> None:
        """Give the lock up now (no error when it had already expired)."""


def fingerprint(obj: Any) -> str:
    """A stable digest of a model object's content (its ``source`` left out).

    The frozen dataclasses' repr lists every compared field (``Source`` has repr=False), and is
    several times cheaper than building the manifest form: a re-sync of 10,000 unchanged
    upstreams compares fingerprints only. tests/store checks that every compared field is in
    the repr. A change of the model's repr only makes the next sync compare bodies.
    """
    return hashlib.blake2b(repr(obj).encode(), digest_size=16).hexdigest()


def body_fingerprint(kind: str, body: Mapping[str, Any]) -> str:
    """The fingerprint of a manifest-form body; "" when it is not a valid object."""
    try:
        return fingerprint(build_object(kind, body))
    except (KeyError, TypeError, ValueError, AttributeError):
        return ""


def check_ops(ops: Sequence[Op]) -> None:
    """Refuse an op list that names one object twice (a transaction changes each once)."""
    seen: set[ObjectKey] = set()
    for op in ops:
        key = (op.kind, op.name)
        if key in seen:
            raise ValueError(f"{op.kind}/{op.name} appears twice in one transaction")
        seen.add(key)


class Store(TokenStore):
    """The desired-state store. Implementations: SqliteStore, EtcdStore; see ``open_store``."""

    kind: str = ""
    url: str = ""

    def __init__(self) -> None:
        self.writes = 0  # object writes (puts and deletes) made through this handle
        self.created = False  # this handle created the store (SQLite: the file did not exist; etcd: it made the store id)

    @abstractmethod
    def store_id(self) -> str:
        """A random id made when the store was created: revisions compare only within one store.

        Access nodes record it with the revision they run (fencing, see docs/apply.md), so that a
        push from a stale controller of the same store is refused, while a push from another
        store (a fresh CI checkout's SQLite file) is told apart rather than compared.
        """

    # desired objects ---------------------------------------------------------------------
    @abstractmethod
    def revision(self) -> int:
        """The revision of the last change of desired objects (0 for an empty store)."""

    @abstractmethod
    def snapshot(self) -> Snapshot:
        """Every desired object, read at one revision."""

    @abstractmethod
    def get(self, kind: str, name: str) -> StoredObject | None: ...

    @abstractmethod
    def index(self) -> StoreIndex:
        """Revision, provenance and fingerprint of every object, without their bodies."""

    def get_many(self, keys: Sequence[ObjectKey]) -> dict[ObjectKey, StoredObject]:
        """The stored objects of ``keys`` (absent ones left out); a snapshot for many keys."""
        if len(keys) > 100:
            objects = self.snapshot().objects
            return {k: objects[k] for k in keys if k in objects}
        found = {k: self.get(*k) for k in keys}
        return {k: v for k, v in found.items() if v is not None}

    @abstractmethod
    def commit(self, ops: Sequence[Op], base_revision: int | None = None) -> int:
        """Apply every op or none; return the new revision.

        ``base_revision``: the revision the caller read; ConflictError when the store has moved
        since. Each op's ``expect`` is checked the same way. An empty list changes nothing.
        """

    @abstractmethod
    def audit(self, since_revision: int = 0) -> list[AuditEntry]:
        """Every object change after ``since_revision``, in revision order."""

    @abstractmethod
    def wait(self, after_revision: int, timeout: float) -> int:
        """Block until the revision is above ``after_revision`` or ``timeout`` ran out."""

    def watch(self, after_revision: int, timeout: float) -> list[AuditEntry]:
        """The changes after ``after_revision``, waiting up to ``timeout`` for the first one."""
        self.wait(after_revision, timeout)
        return self.audit(after_revision)

    def desired_state(self) -> DesiredState:
        return self.snapshot().desired_state()

    # live state records --------------------------------------------------------------------
    @abstractmethod
    def record_deploy(self, record: DeployRecord) -> None: ...

    def record_deploys(self, records: Sequence[DeployRecord]) -> None:
        """Several deploy records (a whole rollout); implementations write them in one go."""
        for record in records:
            self.record_deploy(record)

    @abstractmethod
    def deploy_records(self) -> dict[str, DeployRecord]: ...

    @abstractmethod
    def deploy_history(self, limit: int = 100, before: int | None = None) -> list[DeployEntry]:
        """Up to ``limit`` history entries with ``seq`` below ``before`` (None: the newest), newest first."""

    @abstractmethod
    def record_health(self, records: Sequence[HealthRecord]) -> None: ...

    @abstractmethod
    def health_records(self) -> dict[tuple[str, str, str], HealthRecord]: ...

    # last known addresses ---------------------------------------------------------------------
    @abstractmethod
    def record_addresses(self, addresses: Mapping[str, Sequence[str]]) -> None:
        """Remember what each backend name last resolved to (SPEC.md §2: a name that stops
        resolving keeps its last known address, also in the next CLI run or on a new master)."""

    @abstractmethod
    def known_addresses(self) -> dict[str, tuple[str, ...]]:
        """Backend name -> the addresses it last resolved to."""

    # templates ------------------------------------------------------------------------------
    @abstractmethod
    def templates(self) -> TemplateSet | None:
        """The custom templates renders use; None: the shipped ones."""

    @abstractmethod
    def record_templates(self, templates: TemplateSet | None) -> None:
        """Name the templates every render uses from now on (None: the shipped ones)."""

    # locks ----------------------------------------------------------------------------------
    @abstractmethod
    def acquire_lock(self, name: str, holder: str, ttl: int) -> Lock | None:
        """Take the lock ``name`` for ``ttl`` seconds, or None when someone else holds it."""

    @abstractmethod
    def lock_holder(self, name: str) -> str | None: ...

    @abstractmethod
    def lock_holders(self, prefix: str) -> dict[str, str]:
        """Live lock name -> holder, for every lock whose name starts with ``prefix``."""

    # the store itself -------------------------------------------------------------------
    @abstractmethod
    def check_health(self) -> StoreHealth: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
