"""Two controllers' APIs on one etcd accept each other's tokens and see each other's revocations."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.api.app import create_app
from reconciler.api.view import StoreView
from reconciler.store import Store, open_store
from tests.api.server import RunningServer, seed
from tests.api.world import password, world
from tests.services.etcd import EtcdStartError, start_etcd


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[tuple[RunningServer, RunningServer, Store]]:
    try:
        etcd = start_etcd(tmp_path / "etcd")
    except EtcdStartError as e:
        pytest.fail(f"this test needs a real etcd and it could not be started: {e}", pytrace=False)
    url = etcd.url(f"api-{uuid.uuid4().hex[:8]}")
    stores = [open_store(url), open_store(url)]
    seed(stores[0], world())
    servers = [RunningServer(create_app(s, StoreView(s))) for s in stores]
    try:
        yield servers[0], servers[1], stores[0]
    finally:
        for server in servers:
            server.stop()
        for store in stores:
            store.close()
        etcd.stop()


def test_tokens_are_shared_through_etcd(two_servers: tuple[RunningServer, RunningServer, Store]) -> None:
    a, b, store = two_servers
    token = a.login("owner", password("owner"))
    assert b.call("GET", "/upstream/app-a", token).status_code == 200
    r = b.call("PATCH", "/upstream/app-a/node/10.0.0.1:8080", token, {"force_status": "down"})
    assert r.status_code == 200
    assert a.call("GET", "/upstream/app-a/node/10.0.0.1:8080", token).json()["force_status"] == "down"
    assert b.call("DELETE", "/auth", token).status_code == 204
    assert a.call("GET", "/status", token).status_code == 401
    assert all(t.user != "owner" for t in store.tokens())
