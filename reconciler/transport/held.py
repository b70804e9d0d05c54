"""A command kept running while the caller works: how a node lock is held.

``Transport.hold(command)`` starts ``command`` with its stdin left open and returns a
``HeldCommand``. ``first_line(timeout)`` waits for the command's first line of output (or its
exit); ``release()`` closes its stdin and waits for it to end. The command is expected to
stop when its stdin closes (``cat >/dev/null``), so a controller that dies (its pipe or SSH
connection closes) releases whatever the command held, e.g. an ``flock``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(frozen=True)
class HeldStart:
    """What a held command said first: its first output line, or its exit (then no line)."""

    line: str | None
    exit_code: int | None
    stderr: str = ""


class HeldCommand(ABC):
    """A running command on an access node whose stdin stays open until ``release()``."""

    @abstractmethod
    def first_line(self, timeout: float) -> HeldStart:
        """The first line of stdout, or the exit code if the command ended first.

        Raises ``CommandTimeout`` when neither happens within ``timeout`` seconds.
        """

    @abstractmethod
    def release(self) -> None:
        """Close the command's stdin and wait (briefly) for it to end. Safe to call twice."""
