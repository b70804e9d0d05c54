"""The transport interface: run a command (or a batch, or hold one), read files, close.

``apply`` and ``observe`` hold a ``Transport`` and never know whether it is SSH or local.
Every method of the interface works with ``sudo``: commands are wrapped as
``sudo -n sh -c '<command>'`` and reading a file then goes through a small shell script run
by that same wrapper (``read_script``), so one code path serves both transports. Without
sudo, the subclasses read directly (SFTP, ``os``), with the same semantics: ``read_file``
returns ``None`` when the path does not exist (a dangling symlink counts as missing).
Nothing writes files one by one: apply ships a release as one tar stream to its deploy
script (reconciler/deploy/scripts.py).

A ``Transport`` is used by one thread at a time; open one per access node and worker.
"""

from __future__ import annotations

import logging
import shlex
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from reconciler.errors import CommandError
from reconciler.transport.batch import batch_script, parse_batch
from reconciler.transport.held import HeldCommand

Command = str | Sequence[str]
log = logging.getLogger("reconciler.transport")

#: exit code of ``read_script`` when the file does not exist
MISSING_EXIT = 44
#: default limit for one command (or one batch), seconds
DEFAULT_COMMAND_TIMEOUT = 120.0


@dataclass(frozen=True)
class CommandResult:
    """What a command did: its exit code and both output streams, as bytes."""

    exit_code: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def text(self) -> str:
        """stdout decoded as UTF-8 (undecodable bytes replaced)."""
        return self.stdout.decode("utf-8", "replace")


def command_line(command: Command) -> str:
    """A shell command line: a string as is, an argv list quoted with ``shlex.join``."""
    if isinstance(command, str):
        return command
    return shlex.join(command)


def sudo_command(line: str) -> str:
    """``line`` run as root by ``sudo -n`` (never prompts: a password prompt fails instead)."""
    return f"sudo -n sh -c {shlex.quote(line)}"


def shorten(line: str, limit: int = 200) -> str:
    """A command line cut to ``limit`` characters, for messages."""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def read_script(path: str) -> str:
    """Print the file, or exit ``MISSING_EXIT`` when it does not exist."""
    q = shlex.quote(path)
    return f"if [ -e {q} ]; then exec cat -- {q}; else exit {MISSING_EXIT}; fi"


class Transport(ABC):
    """A connection to one access node. Subclasses implement ``_execute`` and ``close``.

    ``name`` is the access node's name, ``target`` where commands run (``user@host:port``
    or ``local``), ``sudo`` whether commands and file operations run as root through sudo.
    """

    def __init__(self, name: str, target: str, *, sudo: bool = False, command_timeout: float | None = None) -> None:
        self.name = name
        self.target = target
        self.sudo = sudo
        self.command_timeout = command_timeout

    def describe(self) -> str:
        """For messages: ``lb1.example.com:80 (deploy@lb1.example.com:22, sudo)``."""
        return f"{self.name} ({self.target}{', sudo' if self.sudo else ''})"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @abstractmethod
    def close(self) -> None:
        """Release the connection (a pooled SSH connection stays open for the pool's owner)."""

    @abstractmethod
    def _execute(self, line: str, input: bytes | None, timeout: float | None) -> CommandResult:
        """Run one shell command line exactly as given (already wrapped for sudo)."""

    def run(
        self, command: Command, *, input: bytes | None = None, timeout: float | None = None, check: bool = False
    ) -> CommandResult:
        """Run ``command`` through ``/bin/sh`` on the access node and wait for it.

        ``command`` is a shell line, or an argv list (quoted with ``shlex.join``). ``input`` is
        fed to its stdin (else stdin is empty). ``timeout`` (default: the transport's
        ``command_timeout``) raises ``CommandTimeout``; ``check=True`` raises ``CommandError``
        on a non-zero exit. A command is never retried.
        """
        line = self.wrap(command)
        started = time.monotonic()
        result = self._execute(line, input, timeout if timeout is not None else self.command_timeout)
        # Only the command line (never its input or output): file data travels on stdin.
        log.debug("%s: exit %d in %.3fs: %s", self.name, result.exit_code, time.monotonic() - started, shorten(line))
        if check and not result.ok:
            raise CommandError(self.target, line, result.exit_code, result.stderr)
        return result

    def wrap(self, command: Command) -> str:
        """The exact line ``run`` sends: ``sudo -n sh -c '…'`` around it when ``sudo`` is set."""
        line = command_line(command)
        return sudo_command(line) if self.sudo else line

    def hold(self, command: Command) -> HeldCommand:
        """Start ``command`` with stdin left open; see ``reconciler.transport.held``."""
        line = self.wrap(command)
        log.debug("%s: holding: %s", self.name, shorten(line))
        return self._hold(line)

    @abstractmethod
    def _hold(self, line: str) -> HeldCommand:
        """Start one shell command line (already wrapped for sudo) with stdin left open."""

    def run_batch(self, commands: Mapping[str, Command], *, timeout: float | None = None) -> dict[str, CommandResult]:
        """Run several commands in one round trip; their results by name, in the given order.

        Each command runs in its own subshell with stdin from /dev/null, so one failing (or
        calling ``exit``) does not stop the others. Names are short words (``[A-Za-z0-9_.:/-]``).
        Meant for observing facts: ``{"nginx": "nginx -v", "marker": "cat /etc/...", ...}``.
        """
        script, boundary = batch_script({name: command_line(c) for name, c in commands.items()})
        result = self.run(script, timeout=timeout)
        parsed = parse_batch(result.stdout, result.stderr, boundary, list(commands))
        if parsed is None:  # the script broke off: sudo refused, the shell died
            raise CommandError(self.target, self.wrap(script), result.exit_code or 1, result.stderr)
        return {name: CommandResult(*parts) for name, parts in parsed.items()}

    def read_file(self, path: str) -> bytes | None:
        """The file's content, or ``None`` when it does not exist."""
        result = self.run(read_script(path))
        return self._read_result(path, result)

    def read_files(self, paths: Sequence[str]) -> dict[str, bytes | None]:
        """Several files in one round trip (``None`` for each missing one)."""
        results = self.run_batch({f"f{i}": read_script(p) for i, p in enumerate(paths)})
        return {p: self._read_result(p, results[f"f{i}"]) for i, p in enumerate(paths)}

    def _read_result(self, path: str, result: CommandResult) -> bytes | None:
        if result.exit_code == MISSING_EXIT:
            return None
        if not result.ok:
            raise CommandError(self.target, self.wrap(read_script(path)), result.exit_code, result.stderr)
        return result.stdout
