"""The local transport: commands through /bin/sh in a subprocess, files read with os.

For an access node whose ``connection.type`` is ``local`` (nginx on the controller itself,
and the tests). With ``sudo`` every operation goes through the shell paths of the base class.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from collections.abc import Sequence

from reconciler.errors import CommandTimeout, TransportError
from reconciler.transport.base import CommandResult, Transport, shorten
from reconciler.transport.held import HeldCommand, HeldOutput, strip_sentinel

TARGET = "local"


class LocalTransport(Transport):
    """Runs everything on this machine, as the current user (or root through ``sudo -n``)."""

    def __init__(self, name: str = TARGET, *, sudo: bool = False, command_timeout: float | None = None) -> None:
        super().__init__(name, TARGET, sudo=sudo, command_timeout=command_timeout)

    def close(self) -> None:
        """Nothing to release."""

    def _execute(self, line: str, input: bytes | None, timeout: float | None) -> CommandResult:
        # A session of its own, so that a timeout kills the whole process group: a grandchild
        # holding the pipes open would otherwise keep communicate() waiting.
        with _spawn(line) as process:
            try:
                stdout, stderr = process.communicate(input or b"", timeout=timeout)
            except subprocess.TimeoutExpired as e:
                _kill_group(process)
                process.communicate()
                raise CommandTimeout(self.target, f"command did not finish within {timeout}s: {shorten(line)}") from e
            return CommandResult(process.returncode, stdout, stderr)

    def _hold(self, line: str) -> HeldCommand:
        return _LocalHeld(_spawn(line), self.target, line)

    def read_file(self, path: str) -> bytes | None:
        if self.sudo:
            return super().read_file(path)
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise TransportError(self.target, f"cannot read {path}: {e.strerror or e}") from e

    def read_files(self, paths: Sequence[str]) -> dict[str, bytes | None]:
        if self.sudo:
            return super().read_files(paths)
        return {path: self.read_file(path) for path in paths}

class _LocalHeld(HeldCommand):
    def __init__(self, process: subprocess.Popen[bytes], target: str, line: str) -> None:
        self.process = process
        self.target = target
        self.line = line

    def read_until(self, sentinel: bytes, timeout: float) -> HeldOutput:
        assert self.process.stdout is not None and self.process.stderr is not None
        deadline = time.monotonic() + timeout
        streams = {self.process.stdout.fileno(): bytearray(), self.process.stderr.fileno(): bytearray()}
        stdout, stderr = streams.values()
        open_fds = list(streams)
        while open_fds:
            found = strip_sentinel(bytes(stdout), bytes(stderr), sentinel)
            if found is not None:
                return HeldOutput(*found, None)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CommandTimeout(self.target, f"no answer within {timeout:g}s: {shorten(self.line)}")
            ready, _, _ = select.select(open_fds, [], [], remaining)
            for fd in ready:
                data = os.read(fd, 65536)
                if data:
                    streams[fd] += data
                else:
                    open_fds.remove(fd)
        found = strip_sentinel(bytes(stdout), bytes(stderr), sentinel)
        if found is not None:
            return HeldOutput(*found, None)
        try:  # both streams closed: the command is ending
            code = self.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired as e:
            raise CommandTimeout(self.target, f"no answer within {timeout:g}s: {shorten(self.line)}") from e
        return HeldOutput(bytes(stdout), bytes(stderr), code)

    def release(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except OSError:
                pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            _kill_group(self.process)
            self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def _spawn(line: str) -> subprocess.Popen[bytes]:
    """``line`` through /bin/sh with every stream a pipe, in a session of its own (so that a
    timeout can kill its whole process group)."""
    return subprocess.Popen(
        line,
        shell=True,
        executable="/bin/sh",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
