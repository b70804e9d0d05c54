"""Validate manifest documents: JSON Schemas, then the semantic rules of SPEC.md section 1.

Every problem is collected (nothing stops at the first), located at file:line:col through
the document's nodes, and reported sorted. The desired state is built only when there is
no problem at all.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from reconciler import gc_pause
from reconciler.errors import ManifestError, Problem
from reconciler.manifest.load import DEFAULT_MAX_FILE_SIZE, Document, PathPart, load_paths
from reconciler.manifest.located import LocatedObject, Report, shown
from reconciler.manifest.model import API_VERSION, KINDS, DesiredState, Source, build_object
from reconciler.manifest.root import manifests_root, relative_to_root
from reconciler.manifest.rules import check_semantics
from reconciler.manifest.schemas import fast_validator_for, validator_for

if TYPE_CHECKING:
    from jsonschema import ValidationError

    from reconciler.manifest.cache import ManifestCache

_ENVELOPE = ("apiVersion", "kind")  # checked before the schemas, reported once


def validate(docs: Sequence[Document], root: Path | None = None) -> tuple[DesiredState | None, list[Problem]]:
    """The desired state of ``docs``, or None and every problem found (sorted).

    ``root``: objects' source files are kept relative to it (as given when None).
    """
    objects, problems = _checked(docs)
    if problems:
        return None, problems
    return _build(objects, root), []


def _checked(docs: Sequence[Document]) -> tuple[list[LocatedObject], list[Problem]]:
    report = Report()
    objects = [obj for doc in docs if (obj := _check_schema(doc, report)) is not None]
    check_semantics(objects, report)
    return objects, sorted(report.problems)


def validate_objects(bodies: Sequence[Any], file: str = "api", files: Sequence[str] = ()) -> list[Problem]:
    """Every problem of manifest-form ``bodies`` taken as one whole desired state, without files.

    The API validates a write this way: the store's objects with the change applied. Problems
    are located at ``file``:1:1 (or ``files[i]`` for ``bodies[i]``: which document a problem
    is in, whatever its name) and name their object (kind, name) and field.
    """
    places = files or [file] * len(bodies)
    docs = [
        Document(place, i, body, _nowhere(place)) for i, (body, place) in enumerate(zip(bodies, places, strict=True))
    ]
    return _checked(docs)[1]


def _nowhere(file: str) -> yaml.Node:
    mark = yaml.Mark(file, 0, 0, 0, None, None)  # type: ignore[arg-type]
    return yaml.MappingNode("tag:yaml.org,2002:map", [], start_mark=mark)


def load_desired_state(
    paths: Iterable[str | os.PathLike[str]],
    max_file_size: int = DEFAULT_MAX_FILE_SIZE,
    cache: ManifestCache | None = None,
) -> DesiredState:
    """Load and validate the manifests under ``paths``; raises ManifestError with every problem.

    Objects keep their file relative to the manifests' root (``reconciler.manifest.root``), so
    that where the checkout lies changes nothing in the store; problems name files as given.
    ``cache``: files it knows are not composed again; the files loaded now that have no
    problem at all are written to it (``reconciler.manifest.cache``).
    """
    paths = list(paths)
    with gc_pause.paused():
        docs, problems = load_paths(paths, max_file_size, cache)
        state, more = validate(docs, manifests_root(paths))
        if cache is not None:
            cache.commit({problem.file for problem in (*problems, *more)})
    problems = sorted(problems + more)
    if problems or state is None:
        raise ManifestError(problems)
    return state


def _build(objects: Iterable[LocatedObject], root: Path | None) -> DesiredState:
    by_kind: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
    relative: dict[str, str] = {}  # file -> its path from the root, once per file
    for obj in objects:
        file = obj.doc.file
        if root is not None and file not in relative:
            relative[file] = relative_to_root(file, root)
        source = Source(relative.get(file, file), obj.doc.locate(())[0])
        by_kind[obj.kind][obj.name] = build_object(obj.kind, obj.data, source)
    return DesiredState.from_kinds(by_kind)


# --- schemas ----------------------------------------------------------------------------


def _check_schema(doc: Document, report: Report) -> LocatedObject | None:
    data = doc.data
    if not isinstance(data, dict):
        report.add(doc, (), f"a manifest document must be a mapping, not {_json_type(data)}")
        return None
    ok = True
    if data.get("apiVersion") != API_VERSION:
        where = ("apiVersion",)
        got = f"got {shown(data['apiVersion'])}" if "apiVersion" in data else "missing"
        report.add(doc, where, f"must be {API_VERSION!r} ({got})")
        ok = False
    kind = data.get("kind")
    if kind not in KINDS:
        where = ("kind",)
        got = f"got {shown(kind)}" if "kind" in data else "missing"
        report.add(doc, where, f"must be one of {', '.join(KINDS)} ({got})")
        return None
    before = len(report.problems)
    if not fast_validator_for(kind).is_valid(data):
        errors = list(validator_for(kind).iter_errors(data))
        for error in _one_error_per_value(errors):
            _report_schema_error(doc, error, report)
        if not errors:  # the two validators disagree: never accept, say what the fast one saw
            first = next(iter(fast_validator_for(kind).iter_errors(data)), None)
            report.add(doc, list(first.instance_path) if first else [], first.message if first else "invalid")
    name = data.get("name")
    if not isinstance(name, str):
        return None
    return LocatedObject(kind, name, doc, ok and len(report.problems) == before)


# When one value breaks several keywords, the most telling one is reported.
_KEYWORD_RANK = {"type": 0, "const": 1, "enum": 1, "pattern": 2, "additionalProperties": 2, "required": 2}


def _one_error_per_value(errors: Iterable[ValidationError]) -> list[ValidationError]:
    """One error per (path, keyword group); apiVersion and kind are left to the envelope check."""
    best: dict[tuple[PathPart, ...], ValidationError] = {}
    extra: list[ValidationError] = []
    for error in errors:
        path = tuple(error.absolute_path)
        if path[:1] in (("apiVersion",), ("kind",)):
            continue
        if error.validator in ("required", "additionalProperties", "not"):
            extra.append(error)  # about the fields of a mapping, not the mapping's value
            continue
        current = best.get(path)
        if current is None or _KEYWORD_RANK.get(str(error.validator), 3) < _KEYWORD_RANK.get(str(current.validator), 3):
            best[path] = error
    return [*best.values(), *extra]


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "a mapping"


def _allowed(schema: Any) -> str:
    description = schema.get("description") if isinstance(schema, dict) else None
    return f" (allowed: {description})" if description else ""


def _report_schema_error(doc: Document, error: ValidationError, report: Report) -> None:
    path = list(error.absolute_path)
    keyword = error.validator
    value = error.validator_value
    instance = error.instance
    schema = error.schema
    if keyword == "additionalProperties" and isinstance(instance, dict):
        known = list(schema.get("properties", {}))
        for extra in instance:
            if extra not in known:
                close = difflib.get_close_matches(str(extra), known, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                report.add(
                    doc,
                    [*path, extra],
                    f"unknown field {shown(extra)} ({hint}allowed: {', '.join(known)})",
                    key=True,
                )
    elif keyword == "required":
        for missing in value:
            if isinstance(instance, dict) and missing not in instance and (path or missing not in _ENVELOPE):
                report.add(doc, [*path, missing], "required field is missing")
    elif keyword == "not" and isinstance(value, dict) and "required" in value:
        for present in value["required"]:
            reason = schema.get("description", "") if isinstance(schema, dict) else ""
            report.add(doc, [*path, present], f"not allowed here{': ' + reason if reason else ''}", key=True)
    elif keyword == "type":
        expected = value if isinstance(value, str) else " or ".join(value)
        report.add(doc, path, f"expected {expected}, got {_json_type(instance)}{_allowed(schema)}")
    elif keyword == "pattern":
        report.add(doc, path, f"{shown(instance)} is not allowed{_allowed(schema)}")
    elif keyword in ("enum", "const"):
        choices = value if keyword == "enum" else [value]
        report.add(doc, path, f"{shown(instance)} is not one of {', '.join(map(str, choices))}")
    elif keyword in ("minimum", "maximum"):
        low, high = schema.get("minimum"), schema.get("maximum")
        report.add(doc, path, f"{instance} is out of range ({low} to {high})")
    elif keyword in ("minLength", "maxLength"):
        report.add(
            doc, path, f"{shown(instance)} has {len(instance)} characters, {_bound(keyword, value)}{_allowed(schema)}"
        )
    elif keyword in ("minItems", "maxItems"):
        report.add(doc, path, f"has {len(instance)} entries, {_bound(keyword, value)}{_allowed(schema)}")
    elif keyword == "uniqueItems":
        dupes = sorted({str(x) for x in instance if instance.count(x) > 1})
        report.add(doc, path, f"lists {', '.join(dupes)} more than once")
    else:  # a keyword this project does not use yet: jsonschema's own words
        report.add(doc, path, error.message[:200])


def _bound(keyword: str, value: int) -> str:
    return f"{'at least' if keyword.startswith('min') else 'at most'} {value} allowed"
