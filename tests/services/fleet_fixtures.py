"""A test fleet for a pytest fixture: ``yield from fleet_under_test(tmp_path, count)``.

It fails the test (never skips) with the reason when nginx or sshd cannot be started, and
stops every sshd and nginx it started when the fixture ends, whatever happened.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.services.fleet import Fleet, start_fleet
from tests.services.nginx import nginx_binary
from tests.services.sshd import SSHDStartError


def fleet_under_test(tmp_path: Path, count: int, environment: Mapping[str, str] | None = None) -> Iterator[Fleet]:
    nginx_binary()  # fails with the fix when nginx is missing
    try:
        started = start_fleet(tmp_path / "fleet", count, environment)
    except (SSHDStartError, RuntimeError) as e:
        pytest.fail(f"cannot start the test fleet: {e}")
    try:
        yield started
    finally:
        started.stop()
