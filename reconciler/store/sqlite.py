"""The SQLite store: one file, safe for several processes on one machine.

- WAL journal (readers never block the writer), ``synchronous=FULL``, a busy timeout so that
  two CLI runs or a CLI beside ``serve`` wait for each other instead of failing.
- Every write is one ``BEGIN IMMEDIATE`` transaction: the revision is read, checked against
  the caller's base revision, raised by one, and the objects and audit rows written, all or
  nothing. A process killed inside it leaves the file at the old revision (WAL rollback).
- The schema is versioned with ``PRAGMA user_version``; ``MIGRATIONS[i]`` takes version i to
  i + 1. A file with a newer version than this code knows is refused, never rewritten.
- Watch: ``wait`` polls the revision every 20 ms (one indexed read); simple, and a controller
  sees a change within that delay.
- A file that is not a database, or fails ``PRAGMA quick_check``, raises StoreCorruptError:
  the store is never reset behind the operator's back.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from reconciler.errors import ConflictError, StoreCorruptError, StoreError, StoreUnavailableError
from reconciler.store.base import (
    HISTORY_KEEP,
    AuditEntry,
    Delete,
    DeployEntry,
    DeployRecord,
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
    check_ops,
)
from reconciler.store.tokens import TokenRecord

SQLITE_MAGIC = b"SQLite format 3\x00"
POLL_INTERVAL = 0.02
BIG_COMMIT = 1000  # objects; after such a commit the WAL is checkpointed at once

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 0 -> 1: the first schema
        "CREATE TABLE state (id INTEGER PRIMARY KEY CHECK (id = 1), revision INTEGER NOT NULL)",
        "INSERT INTO state VALUES (1, 0)",
        """CREATE TABLE objects (kind TEXT NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL,
            revision INTEGER NOT NULL, source TEXT NOT NULL, origin TEXT NOT NULL, at REAL NOT NULL,
            PRIMARY KEY (kind, name)) WITHOUT ROWID""",
        """CREATE TABLE audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, revision INTEGER NOT NULL,
            kind TEXT NOT NULL, name TEXT NOT NULL, action TEXT NOT NULL, source TEXT NOT NULL,
            origin TEXT NOT NULL, at REAL NOT NULL)""",
        "CREATE INDEX audit_revision ON audit (revision)",
        "CREATE TABLE deploys (access_node TEXT PRIMARY KEY, record TEXT NOT NULL)",
        """CREATE TABLE health (upstream TEXT NOT NULL, backend TEXT NOT NULL, check_name TEXT NOT NULL,
            record TEXT NOT NULL, PRIMARY KEY (upstream, backend, check_name)) WITHOUT ROWID""",
        """CREATE TABLE locks (name TEXT PRIMARY KEY, holder TEXT NOT NULL, token TEXT NOT NULL,
            expires REAL NOT NULL)""",
    ),
    (  # 1 -> 2: fingerprints, so that a re-sync reads no bodies (the empty one never matches)
        "ALTER TABLE objects ADD COLUMN fingerprint TEXT NOT NULL DEFAULT ''",
    ),
    (  # 2 -> 3: the store's identity, recorded on access nodes beside the revision (fencing)
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "INSERT INTO meta VALUES ('store_id', lower(hex(randomblob(16))))",
    ),
    (  # 3 -> 4: API tokens, as sha256 hashes only (reconciler/store/tokens.py)
        """CREATE TABLE tokens (hash TEXT PRIMARY KEY, user TEXT NOT NULL, expires REAL NOT NULL,
            created REAL NOT NULL) WITHOUT ROWID""",
    ),
    (  # 4 -> 5: the addresses backend names last resolved to (kept when a name stops resolving)
        "CREATE TABLE addresses (host TEXT PRIMARY KEY, addresses TEXT NOT NULL, at REAL NOT NULL) WITHOUT ROWID",
    ),
    (  # 5 -> 6: the deploy history (every record whose outcome differs from the node's last)
        "CREATE TABLE deploy_log (seq INTEGER PRIMARY KEY AUTOINCREMENT, access_node TEXT NOT NULL, record TEXT NOT NULL)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


class SqliteStore(Store):
    kind = "sqlite"

    def __init__(self, path: str | Path, busy_timeout: float = 30.0, create_directory: bool = False) -> None:
        """Open (or create) the database at ``path``. Its directory must exist unless
        ``create_directory`` (the CLI's default store, under the current directory): a typo in
        a path is an error, never a new empty store somewhere."""
        super().__init__()
        self.path = Path(path)
        self.url = f"sqlite:///{path}"
        self._mutex = threading.RLock()
        self._create_directory = create_directory
        self._db = self._connect(busy_timeout)
        try:
            with self._errors():
                mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if mode != "wal":
                    raise StoreError(f"{self.url}: SQLite refused WAL mode (journal_mode={mode})")
                self._db.execute("PRAGMA synchronous=FULL")
            self._migrate()
        except BaseException:
            self._db.close()
            raise

    def _connect(self, busy_timeout: float) -> sqlite3.Connection:
        if self.path.is_dir():
            raise StoreUnavailableError(f"{self.url}: {self.path} is a directory, not a database file")
        try:
            with self.path.open("rb") as f:
                head = f.read(len(SQLITE_MAGIC))
        except FileNotFoundError:
            head = b""
            self.created = True
            if not self.path.parent.is_dir() and not self._create_directory:
                raise StoreUnavailableError(
                    f"{self.url}: the directory {self.path.parent} does not exist "
                    "(create it first, or fix the store URL: obreconcile never creates it)"
                ) from None
        except OSError as e:
            raise StoreUnavailableError(f"{self.url}: cannot read {self.path}: {e.strerror}") from e
        if head and head != SQLITE_MAGIC[: len(head)]:
            raise StoreCorruptError(
                f"{self.url}: {self.path} is not an SQLite database (corrupted or overwritten); "
                "restore it from a backup or move it away and apply the manifests again"
            )
        try:
            if self._create_directory:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as e:
            raise StoreUnavailableError(f"{self.url}: cannot open {self.path}: {e}") from e
        return db

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn sqlite3's errors into StoreErrors that name the file and say what to do."""
        try:
            yield
        except sqlite3.DatabaseError as e:
            text = str(e)
            if "not a database" in text or "malformed" in text or "corrupt" in text:
                raise StoreCorruptError(
                    f"{self.url}: the database is corrupted ({text}); restore it from a backup"
                ) from e
            if "locked" in text or "busy" in text:
                raise StoreUnavailableError(
                    f"{self.url}: the database stayed locked by another process ({text})"
                ) from e
            if "unable to open" in text or "readonly" in text or "disk I/O" in text:
                raise StoreUnavailableError(f"{self.url}: cannot use {self.path}: {text}") from e
            raise StoreError(f"{self.url}: {text}") from e

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One BEGIN IMMEDIATE transaction: committed when the block ends, else rolled back."""
        with self._mutex, self._errors():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees one revision."""
        with self._mutex, self._errors():
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")

    def _migrate(self) -> None:
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreCorruptError(
                    f"{self.url}: schema version {version} is newer than this obreconcile knows "
                    f"({SCHEMA_VERSION}); upgrade obreconcile"
                )
            for step in MIGRATIONS[version:]:
                for statement in step:
                    db.execute(statement)
            if version != SCHEMA_VERSION:
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def store_id(self) -> str:
        with self._mutex, self._errors():
            return str(self._db.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()[0])

    # desired objects ---------------------------------------------------------------------
    def revision(self) -> int:
        with self._mutex, self._errors():
            return int(self._db.execute("SELECT revision FROM state").fetchone()[0])

    def snapshot(self) -> Snapshot:
        with self._read() as db:
            revision = int(db.execute("SELECT revision FROM state").fetchone()[0])
            rows = db.execute("SELECT kind, name, body, revision, source, origin, at FROM objects").fetchall()
        objects = {(r[0], r[1]): _stored(r) for r in rows}
        return Snapshot(revision, objects)

    def get(self, kind: str, name: str) -> StoredObject | None:
        with self._mutex, self._errors():
            row = self._db.execute(
                "SELECT kind, name, body, revision, source, origin, at FROM objects WHERE kind = ? AND name = ?",
                (kind, name),
            ).fetchone()
        return None if row is None else _stored(row)

    def index(self) -> StoreIndex:
        with self._read() as db:
            revision = int(db.execute("SELECT revision FROM state").fetchone()[0])
            rows = db.execute("SELECT kind, name, revision, source, origin, at, fingerprint FROM objects").fetchall()
        entries = {(r[0], r[1]): IndexEntry(*r[2:]) for r in rows}
        return StoreIndex(revision, entries)

    def commit(self, ops: Sequence[Op], base_revision: int | None = None) -> int:
        check_ops(ops)
        if not ops:
            return self.revision()
        with self._write() as db:
            current = int(db.execute("SELECT revision FROM state").fetchone()[0])
            if base_revision is not None and current != base_revision:
                raise ConflictError(f"{self.url}: the store is at revision {current}, not {base_revision} as read")
            self._check_expected(db, ops)
            ops = [op.with_fingerprint() if isinstance(op, Put) else op for op in ops]
            revision = current + 1
            self._write_objects(db, ops, revision)
            db.execute("UPDATE state SET revision = ?", (revision,))
        self.writes += len(ops)
        if len(ops) >= BIG_COMMIT:
            self._checkpoint()
        return revision

    def _checkpoint(self) -> None:
        """Copy a big commit from the WAL into the database now, not in the next small commit."""
        with self._mutex, self._errors():
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _check_expected(self, db: sqlite3.Connection, ops: Sequence[Op]) -> None:
        for op in ops:
            if op.expect is None:
                continue
            row = db.execute("SELECT revision FROM objects WHERE kind = ? AND name = ?", (op.kind, op.name)).fetchone()
            have = 0 if row is None else int(row[0])
            if have != op.expect:
                raise ConflictError(f"{op.kind}/{op.name} is at revision {have}, not {op.expect}")

    def _write_objects(self, db: sqlite3.Connection, ops: Sequence[Op], revision: int) -> None:
        puts = [op for op in ops if isinstance(op, Put)]
        deletes = [op for op in ops if isinstance(op, Delete)]
        db.executemany(
            "INSERT OR REPLACE INTO objects (kind, name, body, revision, source, origin, at, fingerprint)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (p.kind, p.name, json.dumps(p.body), revision, *_provenance_row(p.provenance), p.fingerprint)
                for p in puts
            ],
        )
        db.executemany("DELETE FROM objects WHERE kind = ? AND name = ?", [(d.kind, d.name) for d in deletes])
        db.executemany(
            "INSERT INTO audit (revision, kind, name, action, source, origin, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    revision,
                    op.kind,
                    op.name,
                    "put" if isinstance(op, Put) else "delete",
                    op.provenance.source,
                    op.provenance.origin,
                    op.provenance.when,
                )
                for op in ops
            ],
        )

    def audit(self, since_revision: int = 0) -> list[AuditEntry]:
        with self._mutex, self._errors():
            rows = self._db.execute(
                "SELECT revision, kind, name, action, source, origin, at FROM audit WHERE revision > ? ORDER BY seq",
                (since_revision,),
            ).fetchall()
        return [AuditEntry.from_row(int(r[0]), r[1:]) for r in rows]

    def wait(self, after_revision: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            revision = self.revision()
            if revision > after_revision or time.monotonic() >= deadline:
                return revision
            time.sleep(POLL_INTERVAL)

    # live state records --------------------------------------------------------------------
    def record_deploy(self, record: DeployRecord) -> None:
        self.record_deploys([record])

    def record_deploys(self, records: Sequence[DeployRecord]) -> None:
        with self._write() as db:  # one transaction: one fsync for the whole rollout
            rows = db.execute("SELECT access_node, record FROM deploys").fetchall()
            last = {r[0]: DeployRecord.from_dict(json.loads(r[1])) for r in rows}
            changed = [r for r in records if not r.same_outcome(last.get(r.access_node))]
            db.executemany(
                "INSERT OR REPLACE INTO deploys VALUES (?, ?)",
                [(r.access_node, json.dumps(r.to_dict())) for r in records],
            )
            if changed:
                db.executemany(
                    "INSERT INTO deploy_log (access_node, record) VALUES (?, ?)",
                    [(r.access_node, json.dumps(r.to_dict())) for r in changed],
                )
                db.execute("DELETE FROM deploy_log WHERE seq <= (SELECT MAX(seq) FROM deploy_log) - ?", (HISTORY_KEEP,))

    def deploy_records(self) -> dict[str, DeployRecord]:
        with self._mutex, self._errors():
            rows = self._db.execute("SELECT access_node, record FROM deploys").fetchall()
        return {r[0]: DeployRecord.from_dict(json.loads(r[1])) for r in rows}

    def deploy_history(self, limit: int = 100, before: int | None = None) -> list[DeployEntry]:
        with self._mutex, self._errors():
            rows = self._db.execute(
                "SELECT seq, record FROM deploy_log WHERE seq < ? ORDER BY seq DESC LIMIT ?",
                (before if before is not None else 1 << 62, limit),
            ).fetchall()
        return [DeployEntry(int(seq), DeployRecord.from_dict(json.loads(record))) for seq, record in rows]

    def record_health(self, records: Sequence[HealthRecord]) -> None:
        with self._write() as db:
            db.executemany(
                "INSERT OR REPLACE INTO health VALUES (?, ?, ?, ?)",
                [(*r.key, json.dumps(r.to_dict())) for r in records],
            )

    def health_records(self) -> dict[tuple[str, str, str], HealthRecord]:
        with self._mutex, self._errors():
            rows = self._db.execute("SELECT record FROM health").fetchall()
        records = [HealthRecord.from_dict(json.loads(r[0])) for r in rows]
        return {r.key: r for r in records}

    # last known addresses ---------------------------------------------------------------------
    def record_addresses(self, addresses: Mapping[str, Sequence[str]]) -> None:
        if not addresses:
            return
        now = time.time()
        with self._write() as db:
            db.executemany(
                "INSERT OR REPLACE INTO addresses VALUES (?, ?, ?)",
                [(host, json.dumps(list(found)), now) for host, found in addresses.items()],
            )

    def templates(self) -> TemplateSet | None:
        with self._mutex, self._errors():
            row = self._db.execute("SELECT value FROM meta WHERE key = 'templates'").fetchone()
        return None if row is None else TemplateSet.from_dict(json.loads(row[0]))

    def record_templates(self, templates: TemplateSet | None) -> None:
        with self._write() as db:
            if templates is None:
                db.execute("DELETE FROM meta WHERE key = 'templates'")
            else:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('templates', ?)", (json.dumps(templates.to_dict()),))

    def known_addresses(self) -> dict[str, tuple[str, ...]]:
        with self._mutex, self._errors():
            rows = self._db.execute("SELECT host, addresses FROM addresses").fetchall()
        return {str(host): tuple(json.loads(found)) for host, found in rows}

    # locks ----------------------------------------------------------------------------------
    def acquire_lock(self, name: str, holder: str, ttl: int) -> Lock | None:
        token = uuid.uuid4().hex
        with self._write() as db:
            now = time.time()
            row = db.execute("SELECT expires FROM locks WHERE name = ?", (name,)).fetchone()
            if row is not None and row[0] > now:
                return None
            db.execute("INSERT OR REPLACE INTO locks VALUES (?, ?, ?, ?)", (name, holder, token, now + ttl))
        return SqliteLock(self, name, holder, ttl, token)

    def lock_holder(self, name: str) -> str | None:
        with self._mutex, self._errors():
            row = self._db.execute(
                "SELECT holder FROM locks WHERE name = ? AND expires > ?", (name, time.time())
            ).fetchone()
        return None if row is None else str(row[0])

    def lock_holders(self, prefix: str) -> dict[str, str]:
        with self._mutex, self._errors():
            rows = self._db.execute(
                "SELECT name, holder FROM locks WHERE substr(name, 1, ?) = ? AND expires > ?",
                (len(prefix), prefix, time.time()),
            ).fetchall()
        return {str(name): str(holder) for name, holder in rows}

    def _refresh_lock(self, lock: SqliteLock) -> bool:
        with self._write() as db:
            now = time.time()
            cursor = db.execute(
                "UPDATE locks SET expires = ? WHERE name = ? AND token = ? AND expires > ?",
                (now + lock.ttl, lock.name, lock.token, now),
            )
            return cursor.rowcount == 1

    def _release_lock(self, lock: SqliteLock) -> None:
        with self._write() as db:
            db.execute("DELETE FROM locks WHERE name = ? AND token = ?", (lock.name, lock.token))

    # tokens -------------------------------------------------------------------------------
    def put_token(self, record: TokenRecord) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO tokens VALUES (?, ?, ?, ?)", tuple(record.to_dict().values()))

    def get_token(self, token_hash: str) -> TokenRecord | None:
        with self._mutex, self._errors():
            row = self._db.execute("SELECT * FROM tokens WHERE hash = ?", (token_hash,)).fetchone()
        return None if row is None else TokenRecord(*row)

    def delete_token(self, token_hash: str) -> bool:
        with self._write() as db:
            return db.execute("DELETE FROM tokens WHERE hash = ?", (token_hash,)).rowcount == 1

    def tokens(self) -> list[TokenRecord]:
        with self._mutex, self._errors():
            return [TokenRecord(*row) for row in self._db.execute("SELECT * FROM tokens").fetchall()]

    # the store itself -------------------------------------------------------------------
    def check_health(self) -> StoreHealth:
        with self._mutex, self._errors():
            result = [r[0] for r in self._db.execute("PRAGMA quick_check").fetchall()]
        if result == ["ok"]:
            return StoreHealth(True, f"{self.path}: ok (schema {SCHEMA_VERSION}, WAL)")
        raise StoreCorruptError(f"{self.url}: integrity check failed: {'; '.join(result[:5])}")

    def close(self) -> None:
        with self._mutex:
            self._db.close()


class SqliteLock(Lock):
    def __init__(self, store: SqliteStore, name: str, holder: str, ttl: int, token: str) -> None:
        super().__init__(name, holder, ttl)
        self.token = token
        self._store = store

    def refresh(self) -> bool:
        return self._store._refresh_lock(self)

    def release(self) -> None:
        self._store._release_lock(self)


def _provenance_row(p: Provenance) -> tuple[str, str, float]:
    return (p.source, p.origin, p.when)


def _stored(row: Sequence[object]) -> StoredObject:
    kind, name, body, revision, source, origin, at = row
    provenance = Provenance(source, str(origin), float(at))  # type: ignore[arg-type]
    return StoredObject(str(kind), str(name), json.loads(str(body)), int(revision), provenance)  # type: ignore[call-overload]
