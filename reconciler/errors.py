"""Every error obreconcile raises on purpose.

    ObreconcileError                 base: the CLI prints str(error) and exits 1, never a traceback
     +-- ManifestError               manifests could not be loaded or are invalid; carries every Problem
     +-- RenderError                 a value refused by the template finaliser, a broken template

Later stages add their own subclasses here (transport, node, store), each with the facts an
operator needs: the access node, the step, nginx's stderr.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


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
    """Rendering nginx configuration failed (an unsafe value, a template error)."""
