"""The SSH transport (paramiko): commands over exec channels, files over SFTP.

A command runs on its own channel of the (pooled) connection: stdin is streamed while
stdout and stderr are read, so neither side can block the other; the exit status comes
from the channel. A timeout closes the channel and raises ``CommandTimeout`` (the remote
process, having no terminal, may keep running until it writes to the closed channel).

Without sudo, files are read over one SFTP session per transport. With sudo, the shell
paths of ``Transport`` are used instead (``sudo -n sh -c 'cat ...'``). Nothing is written
file by file: apply ships a release as one tar stream to the deploy script.
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable
from typing import TypeVar

import paramiko

from reconciler.errors import CommandTimeout, ConnectionLost, TransportError
from reconciler.transport.base import CommandResult, Transport, shorten
from reconciler.transport.connect import ConnectionPool, SSHSettings, SSHTarget, alive
from reconciler.transport.held import HeldCommand, HeldOutput, strip_sentinel

CHUNK = 32768
T = TypeVar("T")
_LINK_ERRORS = (paramiko.SSHException, OSError, EOFError)


class SSHTransport(Transport):
    """One access node over SSH. Its connection comes from ``pool`` (reused across the run,
    closed by the pool's owner) or, without a pool, is its own and closed by ``close()``."""

    def __init__(
        self,
        name: str,
        target: SSHTarget,
        settings: SSHSettings,
        *,
        sudo: bool = False,
        command_timeout: float | None = None,
        pool: ConnectionPool | None = None,
    ) -> None:
        super().__init__(name, target.label, sudo=sudo, command_timeout=command_timeout)
        self.ssh_target = target
        self.settings = settings
        self._own_pool = pool is None
        self.pool = pool if pool is not None else ConnectionPool()
        self._sftp: paramiko.SFTPClient | None = None
        self._sftp_owner: paramiko.SSHClient | None = None

    def connect(self) -> SSHTransport:
        """Set up the connection now (errors surface here rather than at the first command)."""
        self._client()
        return self

    def close(self) -> None:
        if self._sftp is not None:
            try:
                self._sftp.close()
            except _LINK_ERRORS:
                pass
            self._sftp = self._sftp_owner = None
        if self._own_pool:
            self.pool.close()

    def _client(self, *, renew: bool = False) -> paramiko.SSHClient:
        return self.pool.client(self.ssh_target, self.settings, renew=renew)

    def _open_channel(self) -> paramiko.Channel:
        client = self._client()
        try:
            return _session(client, self.settings.connect_timeout)
        except _LINK_ERRORS as e:
            if alive(client):  # refused by the server (MaxSessions...), not a dead connection
                raise TransportError(self.target, f"cannot open a channel: {e}") from e
        # The pooled connection died since its last use. Nothing was started on it,
        # so setting up a new one is connection setup, not a re-run.
        try:
            return _session(self._client(renew=True), self.settings.connect_timeout)
        except _LINK_ERRORS as e:
            raise ConnectionLost(self.target, f"cannot open a channel: {e}") from e

    def _execute(self, line: str, input: bytes | None, timeout: float | None) -> CommandResult:
        channel = self._open_channel()
        try:
            channel.exec_command(line)
            return self._collect(channel, line, input, timeout)
        except _LINK_ERRORS as e:
            raise ConnectionLost(
                self.target, f"connection lost while running (it may or may not have run): {shorten(line)}"
            ) from e
        finally:
            channel.close()

    def _hold(self, line: str) -> HeldCommand:
        channel = self._open_channel()
        try:
            channel.exec_command(line)
        except _LINK_ERRORS as e:
            channel.close()
            raise ConnectionLost(self.target, f"connection lost starting: {shorten(line)}") from e
        return _SSHHeld(channel, self.target, line)

    def _collect(
        self, channel: paramiko.Channel, line: str, input: bytes | None, timeout: float | None
    ) -> CommandResult:
        deadline = None if timeout is None else time.monotonic() + timeout
        readable = channel.fileno()  # a pipe set whenever stdout or stderr data (or EOF) arrives
        pending = memoryview(input) if input else None
        if pending is None:
            channel.shutdown_write()
        stdout, stderr = bytearray(), bytearray()
        while True:
            while channel.recv_ready():
                stdout += channel.recv(CHUNK)
            while channel.recv_stderr_ready():
                stderr += channel.recv_stderr(CHUNK)
            if pending is not None and (channel.eof_received or channel.closed):
                pending = None  # the command is done with its input
            if pending is not None and channel.send_ready():
                pending = pending[channel.send(bytes(pending[:CHUNK])) :] or None
                if pending is None:
                    channel.shutdown_write()
                continue  # send on while the window is open: no wait between chunks
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise CommandTimeout(self.target, f"command did not finish within {timeout:g}s: {shorten(line)}")
            finished = channel.eof_received or channel.closed
            if finished and not channel.recv_ready() and not channel.recv_stderr_ready():
                if channel.status_event.wait(remaining):
                    break
                continue
            # paramiko has no file descriptor for "the send window opened": poll it briefly
            select.select([readable], [], [], 0.002 if pending is not None else remaining)
        while channel.recv_ready():
            stdout += channel.recv(CHUNK)
        while channel.recv_stderr_ready():
            stderr += channel.recv_stderr(CHUNK)
        status = channel.recv_exit_status()  # -1: no status (killed by a signal, or the link dropped)
        if status == -1 and not channel.get_transport().is_active():
            raise EOFError("the connection closed before the command's exit status arrived")
        return CommandResult(status, bytes(stdout), bytes(stderr))

    def _sftp_session(self) -> paramiko.SFTPClient:
        client = self._client()
        if self._sftp is None or self._sftp_owner is not client:
            try:
                self._sftp = client.open_sftp()
            except _LINK_ERRORS as e:
                raise ConnectionLost(self.target, f"cannot open an SFTP session: {e}") from e
            self._sftp_owner = client
        return self._sftp

    def _file_operation(self, what: str, operation: Callable[[paramiko.SFTPClient], T]) -> T:
        sftp = self._sftp_session()
        try:
            return operation(sftp)
        except _LINK_ERRORS as e:
            if self._sftp_owner is None or not alive(self._sftp_owner):
                raise ConnectionLost(self.target, f"connection lost while trying to {what}") from e
            reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
            raise TransportError(self.target, f"cannot {what}: {reason}") from e

    def read_file(self, path: str) -> bytes | None:
        if self.sudo:
            return super().read_file(path)

        def read(sftp: paramiko.SFTPClient) -> bytes | None:
            try:
                with sftp.open(path, "rb") as f:
                    f.prefetch()  # concurrent reads: one 32 KiB request per round trip is slow for big files
                    return bytes(f.read())
            except FileNotFoundError:
                return None

        return self._file_operation(f"read {path}", read)

class _SSHHeld(HeldCommand):
    def __init__(self, channel: paramiko.Channel, target: str, line: str) -> None:
        self.channel = channel
        self.target = target
        self.line = line
        self.buffer = bytearray()

    def read_until(self, sentinel: bytes, timeout: float) -> HeldOutput:
        deadline = time.monotonic() + timeout
        stdout, stderr = self.buffer, bytearray()
        while True:
            ended = self.channel.exit_status_ready() or self.channel.closed
            while self.channel.recv_ready():
                stdout += self.channel.recv(CHUNK)
            while self.channel.recv_stderr_ready():
                stderr += self.channel.recv_stderr(CHUNK)
            found = strip_sentinel(bytes(stdout), bytes(stderr), sentinel)
            if found is not None:
                return HeldOutput(*found, None)
            if ended:  # everything it printed arrived before its exit status
                return HeldOutput(bytes(stdout), bytes(stderr), self.channel.recv_exit_status())
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CommandTimeout(self.target, f"no answer within {timeout:g}s: {shorten(self.line)}")
            select.select([self.channel.fileno()], [], [], min(remaining, 0.5))

    def release(self) -> None:
        try:
            if not self.channel.closed:
                self.channel.shutdown_write()
                self.channel.status_event.wait(10)
        except _LINK_ERRORS:
            pass
        finally:
            self.channel.close()


def _session(client: paramiko.SSHClient, timeout: float) -> paramiko.Channel:
    transport = client.get_transport()
    if transport is None or not transport.is_active():
        raise paramiko.SSHException("connection is closed")
    return transport.open_session(timeout=timeout)
