"""Fixtures of the render tests: a real nginx under tmp_path, always stopped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services.nginx import Nginx


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Nginx]:
    """An nginx under ``tmp_path/nginx``, not yet configured or started; stopped at the end."""
    server = Nginx(tmp_path / "nginx")
    try:
        yield server
    finally:
        server.stop()
