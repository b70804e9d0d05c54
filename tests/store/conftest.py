"""Fixtures of the store tests: every contract test runs against SQLite and a real etcd."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler.store import Store, open_store
from tests.services.etcd import EtcdServer, EtcdStartError, start_etcd


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """One etcd per test process (xdist worker); every test uses its own key prefix."""
    try:
        server = start_etcd(tmp_path_factory.mktemp("etcd"))
    except EtcdStartError as e:
        problem = str(e)
    else:
        problem = ""
    if problem:
        pytest.fail(f"these tests need a real etcd and it could not be started: {problem}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "etcd"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    server: EtcdServer = request.getfixturevalue("etcd_server")
    return server.url(f"test-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def open_handle(store_url: str) -> Iterator[Callable[[], Store]]:
    """Opens more handles on the same store (as another process would); all closed at the end."""
    handles: list[Store] = []

    def opener() -> Store:
        handles.append(open_store(store_url))
        return handles[-1]

    try:
        yield opener
    finally:
        for handle in handles:
            handle.close()


@pytest.fixture
def store(open_handle: Callable[[], Store]) -> Store:
    return open_handle()
