"""A command kept running while the caller works: how a node lock is held.

``Transport.hold(command)`` starts ``command`` with its stdin left open and returns a
``HeldCommand``. ``read_until(sentinel, timeout)`` waits for a sentinel line on both its stdout and
stderr (or its exit) and returns what came before: a command that takes a lock can then
report what it read under it in the same round trip; ``release()`` closes its stdin and
waits for it to end. The command is expected to
stop when its stdin closes (``cat >/dev/null``), so a controller that dies (its pipe or SSH
connection closes) releases whatever the command held, e.g. an ``flock``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(frozen=True)
class HeldOutput:
    """What a held command printed before its sentinel lines, or before it exited."""

    stdout: bytes
    stderr: bytes
    exit_code: int | None  # None: both sentinel lines came (the command is still running)


def strip_sentinel(stdout: bytes, stderr: bytes, sentinel: bytes) -> tuple[bytes, bytes] | None:
    """Both streams without their final sentinel line; None while either has not printed it."""
    line = sentinel + b"\n"
    if stdout.endswith(line) and stderr.endswith(line):
        return stdout[: -len(line)], stderr[: -len(line)]
    return None


class HeldCommand(ABC):
    """A running command on an access node whose stdin stays open until ``release()``."""

    @abstractmethod
    def read_until(self, sentinel: bytes, timeout: float) -> HeldOutput:
        """Its output until ``sentinel`` ended both stdout and stderr (without the sentinel lines),
        or until it exited (then ``exit_code`` is set).

        Raises ``CommandTimeout`` when neither happens within ``timeout`` seconds.
        """

    @abstractmethod
    def release(self) -> None:
        """Close the command's stdin and wait (briefly) for it to end. Safe to call twice."""
