"""Transports: how obreconcile runs commands and moves files on an access node.

``open_transport(access_node, ...)`` picks the implementation from ``connection.type``:
``LocalTransport`` (subprocess, os) or ``SSHTransport`` (paramiko, SFTP). Both implement
``Transport`` (see ``base``): ``run``, ``run_batch``, ``read_file``, ``read_files``, ``hold``,
``close``, ``describe``. See docs/transport.md.
"""

from __future__ import annotations

from collections.abc import Iterable

from reconciler.transport.lazy_invoke import defer_invoke_import

defer_invoke_import()  # before anything imports paramiko (see lazy_invoke)

from reconciler.errors import ObreconcileError  # noqa: E402
from reconciler.manifest.model import AccessNode  # noqa: E402
from reconciler.transport.base import DEFAULT_COMMAND_TIMEOUT, CommandResult, Transport  # noqa: E402
from reconciler.transport.connect import ConnectionPool, SSHSettings, resolve_target  # noqa: E402
from reconciler.transport.local import LocalTransport  # noqa: E402
from reconciler.transport.ssh import SSHTransport  # noqa: E402

__all__ = [
    "CommandResult",
    "ConnectionPool",
    "LocalTransport",
    "SSHSettings",
    "SSHTransport",
    "Transport",
    "open_transport",
    "prefetch",
]


def open_transport(
    access_node: AccessNode,
    ssh: SSHSettings | None = None,
    *,
    command_timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
    pool: ConnectionPool | None = None,
) -> Transport:
    """A connected transport to ``access_node`` (SSH errors surface here, not at first use).

    ``ssh``: how to connect (the CLI's --known-hosts, --accept-new-host-keys, --connect-timeout;
    defaults otherwise). With ``pool`` the SSH connection is reused across transports of the
    run and stays open on ``close()`` until ``pool.close()``; without it the transport owns
    its connection. Raises ``UnreachableError``, ``HostKeyError``, ``AuthenticationError``.
    """
    connection = access_node.connection
    if connection.type == "local":
        return LocalTransport(access_node.name, sudo=connection.sudo, command_timeout=command_timeout)
    if connection.type != "ssh":
        raise ValueError(f"unknown connection type {connection.type!r}")
    settings = ssh or SSHSettings()
    transport = SSHTransport(
        access_node.name,
        resolve_target(connection, settings),
        settings,
        sudo=connection.sudo,
        command_timeout=command_timeout,
        pool=pool,
    )
    return transport.connect()


def prefetch(
    access_nodes: Iterable[AccessNode],
    pool: ConnectionPool,
    ssh: SSHSettings | None = None,
    *,
    workers: int = 10,
) -> None:
    """Start the SSH connections of ``access_nodes`` in ``pool`` now, in the background.

    Each key exchange mostly waits for the server: started before loading and rendering,
    it is done by the time ``open_transport(..., pool=pool)`` asks for it. Takes the same
    settings as ``open_transport``; a node whose settings are wrong (a missing identity file)
    is skipped here and reported by ``open_transport``.
    """
    settings = ssh or SSHSettings()
    targets = []
    for node in access_nodes:
        if node.connection.type != "ssh":
            continue
        try:
            targets.append((resolve_target(node.connection, settings), settings))
        except ObreconcileError:
            continue
    pool.prefetch(targets, workers)
