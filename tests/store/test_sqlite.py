"""SQLite-only behaviour: schema migrations and journal mode."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from reconciler.errors import StoreUnavailableError
from reconciler.store import open_store, sync_manifests
from reconciler.store.sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteStore
from tests.store.desired import fleet


def test_a_version_1_file_is_migrated_in_place_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    for statement in MIGRATIONS[0]:
        db.execute(statement)
    db.execute(
        "INSERT INTO objects VALUES ('Group', 'ops', ?, 1, 'manifest', 'groups.yaml', 1.0)",
        ('{"apiVersion": "openbalancer/v1", "kind": "Group", "name": "ops"}',),
    )
    db.execute("UPDATE state SET revision = 1")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    with open_store(f"sqlite:///{path}") as store:
        assert store.revision() == 1
        assert store.index().entries[("Group", "ops")].fingerprint == ""  # the column's default
        desired = fleet(1)
        result = sync_manifests(store, desired)
        assert ("Group", "ops") not in {(c.kind, c.name) for c in result.changes}  # same body: no write
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    check.close()


def test_a_new_file_gets_the_current_schema(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "sub" / "state.db", create_directory=True)
    assert store.created
    store.close()
    again = SqliteStore(tmp_path / "sub" / "state.db")
    assert not again.created
    again.close()
    db = sqlite3.connect(tmp_path / "sub" / "state.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == len(MIGRATIONS)
    db.close()


def test_a_missing_directory_is_an_error_and_nothing_is_created(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailableError, match=r"the directory .*/nonexistent/dir does not exist"):
        open_store(f"sqlite:///{tmp_path}/nonexistent/dir/state.db")
    assert not (tmp_path / "nonexistent").exists()
