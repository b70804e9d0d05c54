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


def test_an_etcd_outage_answers_503_and_known_tokens_still_read(tmp_path: Path) -> None:
    """etcd down: never a 401 (clients would drop good tokens) nor a 500; a token this server
    checked before still reads the last desired state; logins and writes get 503."""
    try:
        etcd = start_etcd(tmp_path / "etcd")
    except EtcdStartError as e:
        pytest.fail(f"this test needs a real etcd and it could not be started: {e}", pytrace=False)
    store = open_store(etcd.url(f"api-{uuid.uuid4().hex[:8]}"))
    server = None
    try:
        seed(store, world())
        server = RunningServer(create_app(store, StoreView(store)))
        token = server.login("owner", password("owner"))
        assert server.call("GET", "/upstream/app-a", token).status_code == 200
        etcd.stop()
        known = server.call("GET", "/upstream/app-a", token)
        assert known.status_code == 200 and known.json()["name"] == "app-a"
        for method, path, who, body in (
            ("GET", "/upstream/app-a", "x" * 43, None),  # a token never seen: cannot be checked
            ("PATCH", "/upstream/app-a/node/10.0.0.1:8080", token, {"force_status": "down"}),
            ("POST", "/auth", None, {"user_name": "owner", "password": password("owner")}),
        ):
            answer = server.call(method, path, who, body)
            assert answer.status_code == 503, (method, path, answer.text)
            assert answer.headers["Retry-After"] == "5"
            assert "store" in answer.json()["error"] and etcd.url("").split("/")[2] in answer.json()["detail"]
    finally:
        if server is not None:
            server.stop()
        store.close()
        etcd.stop()
