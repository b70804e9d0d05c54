"""A manifest document being validated, and the report its problems are located through."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.errors import Problem
from reconciler.manifest.load import Document, PathPart

SHOWN = 60  # characters of an offending value shown in a message


@dataclass
class LocatedObject:
    """A document of a known kind, with its name and whether it passed its schema."""

    kind: str
    name: str
    doc: Document
    valid: bool

    @property
    def data(self) -> dict[str, Any]:
        return self.doc.data  # type: ignore[no-any-return]


class Report:
    """Collects problems, locating each through its document."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, doc: Document, path: Sequence[PathPart], message: str, key: bool = False) -> None:
        line, column = doc.locate(path, key=key)
        data = doc.data if isinstance(doc.data, dict) else {}
        kind, name = data.get("kind"), data.get("name")
        kind = kind if isinstance(kind, str) else ""
        name = name if isinstance(name, str) else ""
        self.problems.append(Problem(doc.file, line, column, short(kind), short(name), field_path(path), message))


def short(text: str) -> str:
    text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= SHOWN else text[:SHOWN] + "..."


def shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN else text[:SHOWN] + "..."


def field_path(path: Iterable[PathPart]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
