"""Fixtures of the transport tests: sshd servers, an isolated HOME, a transport of each kind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.manifest.model import AccessNode, Connection
from reconciler.transport import ConnectionPool, SSHSettings, Transport, open_transport
from tests.services.sshd import SSHServer
from tests.services.sshd_fixtures import sshd, sshd_factory  # noqa: F401  (registers the fixtures)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test reads or writes the real ~/.ssh, or uses a real ssh-agent."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home


def local_node(name: str = "local1", *, sudo: bool = False) -> AccessNode:
    return AccessNode(name=name, owner="ops", connection=Connection(type="local", sudo=sudo))


def ssh_transport(server: SSHServer, pool: ConnectionPool | None = None, **ssh: Any) -> Transport:
    ssh.setdefault("known_hosts", server.known_hosts)
    ssh.setdefault("allow_agent", False)
    return open_transport(server.access_node(), SSHSettings(**ssh), pool=pool)


@pytest.fixture(params=["local", "ssh"])
def transport(request: pytest.FixtureRequest) -> Iterator[Transport]:
    """The same contract, once over the local transport and once over SSH to a real sshd."""
    if request.param == "local":
        opened = open_transport(local_node())
    else:
        opened = ssh_transport(request.getfixturevalue("sshd"))
    with opened:
        yield opened
