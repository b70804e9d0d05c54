"""Fixtures of the apply tests: a fleet of real access nodes (sshd + nginx each) and backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services.backends import HttpBackend
from tests.services.fleet import Fleet, start_fleet
from tests.services.nginx import nginx_binary
from tests.services.sshd import SSHDStartError


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """Three access nodes, each its own sshd and nginx, stopped at the end whatever happens."""
    nginx_binary()  # fails (never skips) with the fix when nginx is missing
    try:
        started = start_fleet(tmp_path / "fleet", 3)
    except (SSHDStartError, RuntimeError) as e:
        pytest.fail(f"cannot start the test fleet: {e}")
    try:
        yield started
    finally:
        started.stop()


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
