"""Fixtures of the apply tests: a fleet of real access nodes (sshd + nginx each) and backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services.backends import HttpBackend
from tests.services.fleet import Fleet
from tests.services.fleet_fixtures import fleet_under_test


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """Three access nodes, each its own sshd and nginx, stopped at the end whatever happens."""
    yield from fleet_under_test(tmp_path, 3)


@pytest.fixture
def backends() -> Iterator[list[HttpBackend]]:
    """Four HTTP backends on 127.0.0.1 answering with their names b0..b3."""
    started = [HttpBackend(f"b{i}") for i in range(4)]
    try:
        yield started
    finally:
        for backend in started:
            backend.stop()


def address(backend: HttpBackend) -> str:
    return f"127.0.0.1:{backend.port}"
