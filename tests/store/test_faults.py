"""Faults: a writer killed mid-commit, corrupted or unreadable SQLite files, etcd down, bad URLs."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from reconciler.errors import StoreCorruptError, StoreError, StoreUnavailableError
from reconciler.store import Store, open_store, sync_manifests
from reconciler.store.etcd import EtcdStore
from tests.services.etcd import EtcdServer, free_port
from tests.store.desired import fleet

ROOT = Path(__file__).resolve().parents[2]


def kill_at(url: str, phase: str, upstreams: int) -> None:
    """Run killed_writer until it says READY, then SIGKILL it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.store.killed_writer", url, phase, str(upstreams)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(60, process.kill)
    watchdog.start()
    try:
        line = process.stdout.readline() if process.stdout else ""
        assert line.strip() == "READY", (
            f"writer did not reach {phase}: {line!r} {process.stderr.read() if process.stderr else ''}"
        )
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(10) == -signal.SIGKILL
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()


def test_writer_killed_inside_the_commit_leaves_the_old_revision(store_url: str, store: Store) -> None:
    sync_manifests(store, fleet(5))
    before = store.snapshot()
    kill_at(store_url, "commit", 400)
    with open_store(store_url) as reopened:
        assert reopened.revision() == before.revision
        assert reopened.snapshot() == before
        result = sync_manifests(reopened, fleet(400))
        assert result.revision > before.revision
        assert reopened.desired_state() == fleet(400)


def test_etcd_writer_killed_after_the_flip_is_committed_whole(etcd_server: EtcdServer) -> None:
    url = etcd_server.url("killed-after-flip")
    with open_store(url) as store:
        sync_manifests(store, fleet(5))
        base = store.revision()
    kill_at(url, "fold", 300)
    with open_store(url) as reopened:
        assert isinstance(reopened, EtcdStore)
        assert reopened.revision() > base
        assert reopened.desired_state() == fleet(300)  # the pending stage is laid over obj/
        assert sync_manifests(reopened, fleet(300)).writes == 0
        sync_manifests(reopened, fleet(301))  # a writer first finishes the killed writer's fold
        assert reopened._head()[2] is None
        assert reopened.desired_state() == fleet(301)


def test_garbage_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database at all\n" * 100)
    with pytest.raises(StoreCorruptError, match="not an SQLite database"):
        open_store(f"sqlite:///{path}")
    assert path.read_bytes().startswith(b"this is not")  # never reset


def test_damaged_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with open_store(f"sqlite:///{path}") as store:
        sync_manifests(store, fleet(50))
    with path.open("r+b") as f:
        f.seek(100)
        f.write(os.urandom(8000))
    with pytest.raises(StoreCorruptError, match=r"corrupt|not an SQLite"):
        store = open_store(f"sqlite:///{path}")
        store.snapshot()
        store.check_health()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    open_store(f"sqlite:///{path}").close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StoreCorruptError, match="schema version 99 is newer"):
        open_store(f"sqlite:///{path}")


def test_directory_instead_of_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailableError, match="is a directory"):
        open_store(f"sqlite:///{tmp_path}")


def test_etcd_not_listening_fails_fast() -> None:
    began = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="etcd is not answering"):
        open_store(f"etcd://127.0.0.1:{free_port()}/x", timeout=2)
    assert time.monotonic() - began < 5


@pytest.mark.parametrize(
    "url",
    ["", "mysql://db/x", "sqlite://relative.db", "sqlite:///", "etcd://", "etcd://h:notaport", "etcd://h:1/bad prefix"],
)
def test_bad_store_urls_are_clear_errors(url: str) -> None:
    with pytest.raises(StoreError, match="store URL"):
        open_store(url)
