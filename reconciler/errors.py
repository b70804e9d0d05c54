"""Every error obreconcile raises on purpose.

    ObreconcileError                 base: the CLI prints str(error) and exits 1, never a traceback
     +-- ManifestError               manifests could not be loaded or are invalid; carries every Problem
     +-- RenderError                 a value refused by the template finaliser, a broken template
     +-- TransportError              talking to an access node failed; carries target (user@host:port)
          +-- UnreachableError       temporary: refused, timed out, reset, no banner (retry later)
          +-- ConnectionLost         temporary: dropped mid-operation; the command's effect is unknown
          +-- HostKeyError           permanent: unknown or changed host key; the fix is in the message
          +-- AuthenticationError    permanent: no key was accepted
          +-- CommandTimeout         a command ran longer than its timeout (the channel was closed)
          +-- CommandError           run(check=True) or a file operation exited non-zero; carries stderr
     +-- StoreError                  the desired-state store cannot be used (bad URL, failed operation)
          +-- StoreUnavailableError  temporary: etcd not answering, SQLite file locked or unreadable
          +-- StoreCorruptError      permanent: not a database, failed integrity check, newer schema
          +-- ConflictError          a concurrent writer changed the store first (compare-and-swap; API 409)
     +-- NodeError                   applying on one access node failed; carries node, step, stderr
     +-- PlanError                   a saved plan cannot be applied (stale, unreadable)
     +-- DestroyRefused              a sync would remove much of the store (store/sync.py's Destroy)

Each carries the facts an operator needs: the access node, the step, nginx's stderr.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum


class ObreconcileError(Exception):
    """Base of every error obreconcile reports to its user."""


@dataclass(frozen=True, order=True)
class Problem:
    """One located problem in the manifests.

    Sorted by file, line, column; printed as ``FILE:LINE:COL: Kind/name: field: message``
    (the object and field parts are left out when a problem has none, e.g. a YAML syntax error).
    """

    file: str
    line: int
    column: int
    kind: str = ""
    name: str = ""
    field: str = ""
    message: str = ""

    def __str__(self) -> str:
        parts = [f"{self.file}:{self.line}:{self.column}"]
        if self.kind or self.name:
            parts.append(f"{self.kind or '?'}/{self.name or '?'}")
        if self.field:
            parts.append(self.field)
        parts.append(self.message)
        return ": ".join(parts)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class ManifestError(ObreconcileError):
    """The manifests cannot be used; ``problems`` lists every problem found, sorted."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class RenderError(ObreconcileError):
    """Rendering nginx configuration failed (an unsafe value, a template error).

    ``access_node``, ``field`` (the refused value's place in the template context, such as
    ``upstream.server_names[0]``) and ``value`` (the refused value's repr) are set when known.
    """

    def __init__(self, message: str, *, access_node: str = "", field: str = "", value: str = "") -> None:
        self.access_node = access_node
        self.field = field
        self.value = value
        super().__init__(message)


class TransportError(ObreconcileError):
    """Talking to an access node failed. ``target`` is ``user@host:port`` (or ``local``).

    ``temporary`` says whether trying again later may succeed (kopf's temporary vs permanent).
    Messages never contain key material or passwords: only hosts, ports, paths, fingerprints.
    """

    temporary = False

    def __init__(self, target: str, message: str) -> None:
        self.target = target
        self.message = message
        super().__init__(f"{target}: {message}")


class UnreachableError(TransportError):
    """No SSH session could be set up (refused, timed out, reset, no banner) after every retry."""

    temporary = True


class ConnectionLost(TransportError):
    """The connection dropped during an operation; whether a command ran is unknown."""

    temporary = True


class HostKeyError(TransportError):
    """The host key is unknown (and not accepted) or differs from the recorded one."""


class AuthenticationError(TransportError):
    """The access node accepted none of the offered keys."""


class CommandTimeout(TransportError):
    """A command did not finish within its timeout."""

    temporary = True


class CommandError(TransportError):
    """A command exited non-zero where success was required."""

    def __init__(self, target: str, command: str, exit_code: int, stderr: bytes) -> None:
        self.command = command
        self.exit_code = exit_code
        self.stderr = stderr
        text = stderr.decode("utf-8", "replace").strip()
        shown = command if len(command) <= 200 else command[:197] + "..."
        hint = ""
        if b"sudo:" in stderr and b"password" in stderr:
            hint = " (sudo needs a password: give the user NOPASSWD in sudoers, obreconcile runs sudo -n)"
        super().__init__(target, f"command exited {exit_code}: {shown}: {text or 'no stderr'}{hint}")


class StoreError(ObreconcileError):
    """The desired-state store cannot be used; the message names the store URL."""

    temporary = False


class StoreUnavailableError(StoreError):
    """The store did not answer (etcd down, SQLite busy or unreadable); trying later may work."""

    temporary = True


class StoreCorruptError(StoreError):
    """The store's data cannot be trusted; obreconcile never resets it silently."""


class ConflictError(StoreError):
    """A compare-and-swap failed: the store changed since the revision the writer read."""

    temporary = True


class Step(StrEnum):
    """Where applying on one access node failed (SPEC.md §2's order, and before it)."""

    CONNECT = "connect"
    LOCK = "lock"
    RENDER = "render"
    PLAN = "plan"
    STAGE = "stage"
    SWITCH = "switch"
    TEST = "test"
    RELOAD = "reload"
    VERIFY = "verify"
    MARKER = "marker"
    INTERNAL = "internal"  # a bug, reported as the node's failure instead of ending its worker


class NodeError(ObreconcileError):
    """Applying on one access node failed at ``step``; ``stderr`` is the command's own message
    (nginx's), ``rolled_back`` whether the previous release was put back after a reload."""

    def __init__(
        self,
        access_node: str,
        step: Step,
        message: str,
        stderr: bytes | str = b"",
        *,
        reloaded: bool = False,
        rolled_back: bool = False,
    ) -> None:
        text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
        self.access_node = access_node
        self.step = step
        self.stderr = text.strip()
        self.message = f"{message}: {self.stderr}" if self.stderr else message
        self.reloaded = reloaded
        self.rolled_back = rolled_back
        super().__init__(f"{access_node}: {step}: {self.message}")


class DestroyRefused(ObreconcileError):
    """apply refused a sync that removes every object, an AccessNode or most of the store
    (``reconciler.store.sync.Destroy``): nothing was written; ``--allow-destroy`` allows it."""


class PlanError(ObreconcileError):
    """A saved plan cannot be applied: unreadable, or the desired state or a node moved since."""
