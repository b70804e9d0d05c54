"""Fixtures of the API tests: a real server per module over a SQLite store seeded with the world."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.api.app import create_app
from reconciler.api.auth import LoginLimits
from reconciler.api.view import StoreView
from reconciler.store import Store, open_store
from tests.api.server import FakeClock, RunningServer, seed
from tests.api.world import USERS, password, world


@dataclass
class Api:
    server: RunningServer
    store: Store
    clock: FakeClock
    tokens: dict[str, str]


def start_api(path: Path, limits: LoginLimits | None = None) -> Api:
    store = open_store(f"sqlite:///{path / 'state.db'}")
    seed(store, world())
    clock = FakeClock()
    app = create_app(store, StoreView(store), clock=clock, login_limits=limits, metrics_token="m-token")
    server = RunningServer(app)
    tokens = {user: server.login(user, password(user)) for user in USERS}
    return Api(server, store, clock, tokens)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    started = start_api(tmp_path_factory.mktemp("api"))
    try:
        yield started
    finally:
        started.server.stop()
        started.store.close()


@pytest.fixture
def fresh_api(tmp_path: Path) -> Iterator[Api]:
    """A server of one's own (tests that change tokens, limits or the world)."""
    started = start_api(tmp_path, LoginLimits(per_user=3, per_address=6, window=60))
    try:
        yield started
    finally:
        started.server.stop()
        started.store.close()
