"""pytest fixtures around tests/services/sshd.py; import them in a conftest.py to register them:

    from tests.services.sshd_fixtures import sshd, sshd_factory  # noqa: F401

``sshd_factory(**kw)`` starts another server (several may run at once: one per access node);
``sshd`` is one server shared by the tests of a module. Every server is stopped by PID when
its fixture ends, also when tests fail. sshd that cannot start fails the test (never skips).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from tests.services.sshd import SSHDStartError, SSHServer, start_sshd

SSHServerFactory = Callable[..., SSHServer]


@contextmanager
def sshd_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServerFactory]:
    """A factory of sshd servers; leaving the block stops every server it started."""
    servers: list[SSHServer] = []

    def start(**options: object) -> SSHServer:
        try:
            server = start_sshd(tmp_path_factory.mktemp("sshd"), **options)  # type: ignore[arg-type]
        except SSHDStartError as e:
            pytest.fail(str(e), pytrace=False)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def sshd_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServerFactory]:
    """Start sshd servers on demand; all are stopped at the end of the test."""
    with sshd_servers(tmp_path_factory) as start:
        yield start


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    """One sshd shared by a module's tests (its client key logs in; known_hosts has its key)."""
    with sshd_servers(tmp_path_factory) as start:
        yield start()
