"""The etcd store (etcd3gw over etcd's JSON gateway at /v3/), for several controllers.

Keys under ``PREFIX/``: ``rev`` (every commit writes it; its mod_revision IS the store revision),
``obj/KIND/NAME`` and ``idx/KIND/NAME`` (an object, and the same without its body),
``audit/TXID`` (+ ``auditchunk/TXID/N``), ``pending``, ``stage/TXID/KIND/NAME``, ``stagers/TXID``,
``deploy/NODE``, ``deploylog/TIME.N``, ``health/UPSTREAM/BACKEND/CHECK``, ``lock/NAME``, ``token/SHA256``. docs/store.md explains them.

A commit that fits in one etcd transaction (128 ops, 1.5 MiB by default) is one txn comparing
``rev``'s mod_revision with the writer's base revision. A bigger one is *staged*: changes go to
``stage/TXID/`` in chunks, invisible to readers, then one small compare-and-swap txn flips
``rev`` and creates ``pending``: that flip is the commit. Readers read at one etcd revision and
lay a pending stage over ``obj/``, so they see all of a commit or none of it. The stage is then
folded into ``obj/`` (each chunk guarded by ``pending``; any writer finishes a fold left by a
killed one, and no commit is accepted while ``pending`` exists). A writer killed while staging
leaves unreferenced stage keys, removed by a later staged commit once its sentinel lease ended.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import requests
from etcd3gw import exceptions as etcd_errors
from etcd3gw.client import Etcd3Client
from etcd3gw.lease import Lease

import reconciler.store.etcd_requests as req
from reconciler.errors import ConflictError, StoreError, StoreUnavailableError
from reconciler.store.base import (
    HISTORY_KEEP,
    AuditEntry,
    DeployEntry,
    DeployRecord,
    HealthRecord,
    Lock,
    ObjectKey,
    Op,
    Put,
    Snapshot,
    Store,
    StoredObject,
    StoreHealth,
    StoreIndex,
    TemplateSet,
    check_ops,
)
from reconciler.store.etcd_tokens import EtcdTokens

DEFAULT_PREFIX = "obreconcile"
STAGING_TTL = 60
PAGE = req.PAGE
MAX_TXN_OPS = req.MAX_TXN_OPS
MAX_TXN_BYTES = req.MAX_TXN_BYTES

T = TypeVar("T")
Kv = dict[str, Any]


class EtcdStore(EtcdTokens, Store):
    kind = "etcd"

    def __init__(self, host: str, port: int, prefix: str = DEFAULT_PREFIX, timeout: float = 10.0) -> None:
        super().__init__()
        self.url = f"etcd://{host}:{port}/{prefix}"
        self._client = Etcd3Client(host, port, api_path="/v3/", timeout=timeout)
        self._p = prefix.strip("/") + "/"
        self._logged = 0  # deploy history entries written since the last trim
        self._call(self._client.status)  # fail now, clearly, when etcd is not there

    def _head(self) -> tuple[int, int, Kv | None, int]:
        """(etcd revision, store revision, pending record, its revision) read at one revision."""
        r = self._txn([], [req.range_request(self._k("rev")), req.range_request(self._k("pending"))])
        rev_kvs = r["responses"][0]["response_range"].get("kvs", [])
        pending_kvs = r["responses"][1]["response_range"].get("kvs", [])
        store_revision = int(rev_kvs[0]["mod_revision"]) if rev_kvs else 0
        if not pending_kvs:
            return int(r["header"]["revision"]), store_revision, None, 0
        pending = json.loads(base64.b64decode(pending_kvs[0]["value"]))
        return int(r["header"]["revision"]), store_revision, pending, int(pending_kvs[0]["mod_revision"])

    def store_id(self) -> str:
        key = self._k("meta", "store_id")
        value, _ = self._get(key)
        if value is None:  # the first to ask makes it; a concurrent maker's value wins if first
            made = self._txn([req.absent(key)], [req.put(key, {"id": secrets.token_hex(16)})])
            self.created = self.created or bool(made.get("succeeded"))  # this handle made the store
            value, _ = self._get(key)
        return str(value["id"]) if value else ""

    # desired objects ---------------------------------------------------------------------
    def revision(self) -> int:
        _, meta = self._get(self._k("rev"))
        return int(meta.get("mod_revision", 0))

    def snapshot(self) -> Snapshot:
        return Snapshot(*self._read_all("obj/", req.stored))

    def index(self) -> StoreIndex:
        return StoreIndex(*self._read_all("idx/", req.index_entry))

    def _read_all(self, prefix: str, make: Callable[[Kv, int], T]) -> tuple[int, dict[ObjectKey, T]]:
        """Every object under ``prefix`` at one etcd revision, with a pending stage laid over."""
        at, revision, pending, pending_revision = self._head()
        objects = {}
        for value, meta in self._range_all(self._k(prefix), at):
            objects[(value["kind"], value["name"])] = make(value, int(value.get("rev") or meta["mod_revision"]))
        if pending is not None:
            for value, _ in self._range_all(self._k("stage", pending["txid"]) + "/", at):
                key = (value["kind"], value["name"])
                if value["op"] == "delete":
                    objects.pop(key, None)
                else:
                    objects[key] = make(value, pending_revision)
        return revision, objects

    def get(self, kind: str, name: str) -> StoredObject | None:
        return self._get_many([(kind, name)])[1].get((kind, name))

    def get_many(self, keys: Sequence[ObjectKey]) -> dict[ObjectKey, StoredObject]:
        if len(keys) > 100:
            return super().get_many(keys)
        return self._get_many(keys)[1]

    def _get_many(self, keys: Sequence[ObjectKey]) -> tuple[int, dict[ObjectKey, StoredObject]]:
        """(store revision, the objects of ``keys`` that exist), all read at one etcd revision."""
        at, revision, pending, pending_revision = self._head()
        found = {}
        for kind, name in keys:
            obj = self._get_at(kind, name, at, pending, pending_revision)
            if obj is not None:
                found[(kind, name)] = obj
        return revision, found

    def _get_at(self, kind: str, name: str, at: int, pending: Kv | None, pending_revision: int) -> StoredObject | None:
        if pending is not None:
            staged, _ = self._get(self._k("stage", pending["txid"], kind, name), at)
            if staged is not None:
                return None if staged["op"] == "delete" else req.stored(staged, pending_revision)
        value, meta = self._get(self._k("obj", kind, name), at)
        return None if value is None else req.stored(value, int(value.get("rev") or meta["mod_revision"]))

    def commit(self, ops: Sequence[Op], base_revision: int | None = None) -> int:
        check_ops(ops)
        if not ops:
            return self.revision()
        if any(op.expect is not None for op in ops):
            base_revision = self._check_expected(ops, base_revision)
        txid = uuid.uuid4().hex
        ops = [op.with_fingerprint() if isinstance(op, Put) else op for op in ops]
        if 2 * len(ops) + 2 <= MAX_TXN_OPS and sum(map(req.op_size, ops)) <= MAX_TXN_BYTES:
            revision = self._commit_direct(ops, base_revision, txid)
        else:
            revision = self._commit_staged(ops, base_revision, txid)
        self.writes += len(ops)
        return revision

    def _check_expected(self, ops: Sequence[Op], base_revision: int | None) -> int:
        """Check each op's ``expect`` at one revision; the commit then compares against it."""
        revision, found = self._get_many([(op.kind, op.name) for op in ops if op.expect is not None])
        if base_revision is not None and revision != base_revision:
            raise ConflictError(f"{self.url}: the store is at revision {revision}, not {base_revision} as read")
        for op in ops:
            stored = found.get((op.kind, op.name))
            have = 0 if stored is None else stored.revision
            if op.expect is not None and have != op.expect:
                raise ConflictError(f"{op.kind}/{op.name} is at revision {have}, not {op.expect}")
        return revision

    def _guards(self, base_revision: int | None) -> list[Kv]:
        guards = [req.absent(self._k("pending"))]
        if base_revision is not None:
            guards.append(req.same_mod(self._k("rev"), base_revision))
        return guards

    def _object_writes(self, kind: str, name: str, value: Kv | None) -> list[Kv]:
        """Put (or, for None, delete) an object's obj/ and idx/ keys."""
        obj, idx = self._k("obj", kind, name), self._k("idx", kind, name)
        if value is None:
            return [req.delete(obj), req.delete(idx)]
        return [req.put(obj, value), req.put(idx, req.index_value(value))]

    def _commit_direct(self, ops: Sequence[Op], base_revision: int | None, txid: str) -> int:
        writes = [
            w
            for op in ops
            for w in self._object_writes(op.kind, op.name, req.object_value(op) if isinstance(op, Put) else None)
        ]
        writes.append(req.put(self._k("rev"), {"txid": txid}))
        writes.append(req.put(self._k("audit", txid), {"changes": [req.audit_row(op) for op in ops]}))
        return self._flip(self._guards(base_revision), writes, base_revision)

    def _flip(self, guards: list[Kv], writes: list[Kv], base_revision: int | None, sentinel: str = "") -> int:
        """Run the commit txn; fold a pending commit that blocks it and try again."""
        while True:
            r = self._txn(guards, writes)
            if r.get("succeeded"):
                return int(r["header"]["revision"])
            if sentinel and self._get(sentinel)[0] is None:
                raise StoreUnavailableError(f"{self.url}: staging took longer than its {STAGING_TTL}s lease; try again")
            if not self._fold_pending():
                current = self.revision()
                raise ConflictError(f"{self.url}: the store is at revision {current}, not {base_revision} as read")

    def _commit_staged(self, ops: Sequence[Op], base_revision: int | None, txid: str) -> int:
        self._fold_pending()
        self._collect_stale_stages()
        lease = self._call(self._client.lease, STAGING_TTL)
        sentinel = self._k("stagers", txid)
        self._txn([], [req.put(sentinel, {"when": time.time()}, lease.id)])
        chunks = list(req.chunks(ops, req.op_size))
        for n, chunk in enumerate(chunks):
            self._stage_chunk(txid, n, chunk)
            self._call(lease.refresh)
        guards = [*self._guards(base_revision), req.present(sentinel)]
        writes = [
            req.put(self._k("rev"), {"txid": txid}),
            req.put(self._k("pending"), {"txid": txid}),
            req.put(self._k("audit", txid), {"chunks": len(chunks)}),
            req.delete(sentinel),
        ]
        try:
            revision = self._flip(guards, writes, base_revision, sentinel)
        except StoreError:
            self._discard_stage(txid)
            raise
        finally:
            self._call(lease.revoke)
        self._fold(txid, revision)
        return revision

    def _stage_chunk(self, txid: str, n: int, chunk: Sequence[Op]) -> None:
        writes = [
            req.put(
                self._k("stage", txid, op.kind, op.name),
                {"op": "put", **req.object_value(op)}
                if isinstance(op, Put)
                else {"op": "delete", "kind": op.kind, "name": op.name},
            )
            for op in chunk
        ]
        writes.append(
            req.put(self._k("auditchunk", txid, f"{n:08d}"), {"changes": [req.audit_row(op) for op in chunk]})
        )
        self._txn([], writes)

    def _fold_pending(self) -> bool:
        """Finish folding a pending staged commit (left by us or by a killed writer)."""
        _, _, pending, revision = self._head()
        if pending is None:
            return False
        self._fold(pending["txid"], revision)
        return True

    def _fold(self, txid: str, revision: int) -> None:
        guard = [req.same_mod(self._k("pending"), revision)]
        staged = [value for value, _ in self._range_all(self._k("stage", txid) + "/")]
        for chunk in req.chunks(staged, lambda v: len(json.dumps(v)) * 4 // 3 + 200, MAX_TXN_OPS // 2):
            writes = [
                w
                for v in chunk
                for w in self._object_writes(
                    v["kind"], v["name"], None if v["op"] == "delete" else {**req.unstaged(v), "rev": revision}
                )
            ]
            if not self._txn(guard, writes).get("succeeded"):
                return  # another writer finished this fold
        self._txn(guard, [req.delete(self._k("stage", txid) + "/", prefix=True), req.delete(self._k("pending"))])

    def _collect_stale_stages(self) -> None:
        """Remove stages whose writer died (no live sentinel, never committed)."""
        live = {m["key"].decode().rsplit("/", 1)[1] for _, m in self._range_all(self._k("stagers/"), keys_only=True)}
        staged = {
            m["key"].decode()[len(self._k("stage/")) :].split("/", 1)[0]
            for _, m in self._range_all(self._k("stage/"), keys_only=True)
        }
        for txid in staged - live:
            self._discard_stage(txid, req.absent(self._k("stagers", txid)))

    def _discard_stage(self, txid: str, *guards: Kv) -> None:
        """Delete an uncommitted stage and its audit rows (never those of a committed one)."""
        self._txn(
            [req.absent(self._k("audit", txid)), *guards],
            [
                req.delete(self._k("stage", txid) + "/", prefix=True),
                req.delete(self._k("auditchunk", txid) + "/", prefix=True),
            ],
        )

    def audit(self, since_revision: int = 0) -> list[AuditEntry]:
        entries: list[AuditEntry] = []
        for value, meta in self._audit_records(since_revision):
            revision = int(meta["create_revision"])
            rows: Iterable[Any] = value.get("changes", ())
            if "chunks" in value:
                txid = meta["key"].decode().rsplit("/", 1)[1]
                chunks = self._range_all(self._k("auditchunk", txid) + "/")
                rows = [row for chunk, _ in chunks for row in chunk["changes"]]
            entries.extend(AuditEntry.from_row(revision, row) for row in rows)
        return entries

    def _audit_records(self, since_revision: int) -> list[tuple[Kv, Kv]]:
        prefix = self._k("audit/")
        out: list[tuple[Kv, Kv]] = []
        while True:
            page = self._kvs(
                prefix,
                range_end=req.end(prefix),
                sort_order="ascend",
                sort_target="create",
                min_create_revision=since_revision + 1,
                limit=PAGE,
            )
            out.extend((json.loads(v), m) for v, m in page)
            if len(page) < PAGE:
                return out
            since_revision = int(page[-1][1]["create_revision"])

    def wait(self, after_revision: int, timeout: float) -> int:
        revision = self.revision()
        if revision > after_revision or timeout <= 0:
            return revision
        try:
            self._client.watch_once(self._k("rev"), timeout=timeout, start_revision=after_revision + 1)
        except etcd_errors.WatchTimedOut:
            pass
        except (etcd_errors.Etcd3Exception, requests.RequestException) as e:
            raise StoreUnavailableError(f"{self.url}: watch failed ({e})") from e
        return self.revision()

    # live state records --------------------------------------------------------------------
    def record_deploy(self, record: DeployRecord) -> None:
        self.record_deploys([record])

    def record_deploys(self, records: Sequence[DeployRecord]) -> None:
        last = self.deploy_records()
        for chunk in req.chunks(records, lambda r: 400 + 200 * len(r.digests), MAX_TXN_OPS // 2):
            writes = [req.put(self._k("deploy", r.access_node), r.to_dict()) for r in chunk]
            stamp = time.time_ns()
            for n, r in enumerate(r for r in chunk if not r.same_outcome(last.get(r.access_node))):
                writes.append(req.put(self._k("deploylog", f"{stamp:020d}.{n:03d}"), {**r.to_dict(), "n": n}))
                self._logged += 1
            self._txn([], writes)
        if self._logged >= 100:
            self._trim_history()

    def _trim_history(self) -> None:
        """Keep the newest HISTORY_KEEP history entries (checked every hundred entries written)."""
        self._logged = 0
        prefix = self._k("deploylog/")
        ask = {"key": req.b64(prefix), "range_end": req.b64(req.end(prefix)), "count_only": True}
        count = int(self._call(self._client.post, self._client.get_url("/kv/range"), json=ask).get("count", 0))
        if count > HISTORY_KEEP:
            oldest = self._kvs(prefix, range_end=req.end(prefix), keys_only=True, limit=count - HISTORY_KEEP)
            if oldest:
                stop = oldest[-1][1]["key"].decode() + "\0"
                self._txn([], [{"request_delete_range": {"key": req.b64(prefix), "range_end": req.b64(stop)}}])

    def deploy_records(self) -> dict[str, DeployRecord]:
        records = [DeployRecord.from_dict(v) for v, _ in self._range_all(self._k("deploy/"))]
        return {r.access_node: r for r in records}

    def deploy_history(self, limit: int = 100, before: int | None = None) -> list[DeployEntry]:
        # seq = the entry's etcd create revision x 1024 + its place in the transaction (< 100)
        prefix = self._k("deploylog/")
        page = self._kvs(
            prefix,
            range_end=req.end(prefix),
            sort_order="descend",
            sort_target="create",
            max_create_revision=None if before is None else before // 1024,
            limit=limit + MAX_TXN_OPS,
        )
        entries = []
        for value, meta in page:
            data = json.loads(value)
            seq = int(meta["create_revision"]) * 1024 + int(data.pop("n", 0))
            if before is None or seq < before:
                entries.append(DeployEntry(seq, DeployRecord.from_dict(data)))
        entries.sort(key=lambda e: -e.seq)
        return entries[:limit]

    def record_health(self, records: Sequence[HealthRecord]) -> None:
        for chunk in req.chunks(records, lambda r: 600, MAX_TXN_OPS):
            self._txn([], [req.put(self._k("health", *r.key), r.to_dict()) for r in chunk])

    def health_records(self) -> dict[tuple[str, str, str], HealthRecord]:
        records = [HealthRecord.from_dict(v) for v, _ in self._range_all(self._k("health/"))]
        return {r.key: r for r in records}

    # last known addresses ---------------------------------------------------------------------
    def record_addresses(self, addresses: Mapping[str, Sequence[str]]) -> None:
        now = time.time()
        puts = [
            req.put(self._k("address", host), {"addresses": list(found), "at": now})
            for host, found in addresses.items()
        ]
        for chunk in req.chunks(puts, lambda _: 300, MAX_TXN_OPS):
            self._txn([], chunk)

    def templates(self) -> TemplateSet | None:
        value, _ = self._get(self._k("meta", "templates"))
        return None if value is None else TemplateSet.from_dict(value)

    def record_templates(self, templates: TemplateSet | None) -> None:
        key = self._k("meta", "templates")
        self._txn([], [req.delete(key) if templates is None else req.put(key, templates.to_dict())])

    def known_addresses(self) -> dict[str, tuple[str, ...]]:
        start = len(self._k("address", ""))
        return {
            meta["key"].decode()[start:]: tuple(value["addresses"])
            for value, meta in self._range_all(self._k("address/"))
        }

    # locks ----------------------------------------------------------------------------------
    def acquire_lock(self, name: str, holder: str, ttl: int) -> Lock | None:
        lease = self._call(self._client.lease, ttl)
        key = self._k("lock", name)
        if self._txn([req.absent(key)], [req.put(key, {"holder": holder}, lease.id)]).get("succeeded"):
            return EtcdLock(self, name, holder, ttl, lease)
        self._call(lease.revoke)
        return None

    def lock_holder(self, name: str) -> str | None:
        value, _ = self._get(self._k("lock", name))
        return None if value is None else str(value["holder"])

    def lock_holders(self, prefix: str) -> dict[str, str]:
        start = len(self._k("lock", ""))
        return {
            meta["key"].decode()[start:]: str(value["holder"])
            for value, meta in self._range_all(self._k("lock", prefix))
        }

    def _refresh_lock(self, lock: EtcdLock) -> bool:
        if self._call(lock.lease.refresh) <= 0:
            return False
        _, meta = self._get(self._k("lock", lock.name))
        return int(meta.get("lease", 0)) == lock.lease.id

    # the store itself -------------------------------------------------------------------
    def check_health(self) -> StoreHealth:
        status = self._call(self._client.status)
        r = self._call(self._client.session.get, self._client.base_url + "/health", timeout=self._client.timeout)
        healthy = r.ok and r.json().get("health") == "true"
        detail = f"etcd {status.get('version', '?')}, {'healthy' if healthy else 'unhealthy: ' + r.text.strip()}"
        return StoreHealth(healthy, detail)

    def close(self) -> None:
        self._client.session.close()


class EtcdLock(Lock):
    def __init__(self, store: EtcdStore, name: str, holder: str, ttl: int, lease: Lease) -> None:
        super().__init__(name, holder, ttl)
        self.lease = lease
        self._store = store

    def refresh(self) -> bool:
        return self._store._refresh_lock(self)

    def release(self) -> None:
        self._store._call(self.lease.revoke)
