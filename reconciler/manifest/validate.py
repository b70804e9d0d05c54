"""Validate manifest documents: JSON Schemas, then the semantic rules of SPEC.md section 1.

Every problem is collected (nothing stops at the first), located at file:line:col through
the document's nodes, and reported sorted. The desired state is built only when there is
no problem at all.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from reconciler import collector
from reconciler.errors import ManifestError, Problem
from reconciler.manifest.load import DEFAULT_MAX_FILE_SIZE, Document, PathPart, load_paths
from reconciler.manifest.model import (
    API_VERSION,
    BASE_CHECKS,
    KINDS,
    DesiredState,
    Source,
    build_object,
    split_hostport,
)
from reconciler.manifest.schemas import fast_validator_for, validator_for

if TYPE_CHECKING:
    from jsonschema import ValidationError
from reconciler.passwords import password_hash_problem

_SHOWN = 60  # characters of an offending value shown in a message
_ENVELOPE = ("apiVersion", "kind")  # checked before the schemas, reported once


@dataclass
class _Object:
    """A document of a known kind, with its name and whether it passed its schema."""

    kind: str
    name: str
    doc: Document
    valid: bool

    @property
    def data(self) -> dict[str, Any]:
        return self.doc.data  # type: ignore[no-any-return]


class _Report:
    """Collects problems, locating each through its document."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, doc: Document, path: Sequence[PathPart], message: str, key: bool = False) -> None:
        line, column = doc.locate(path, key=key)
        data = doc.data if isinstance(doc.data, dict) else {}
        kind, name = data.get("kind"), data.get("name")
        kind = kind if isinstance(kind, str) else ""
        name = name if isinstance(name, str) else ""
        self.problems.append(Problem(doc.file, line, column, _short(kind), _short(name), _field(path), message))


def _short(text: str) -> str:
    text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


def _field(path: Iterable[PathPart]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validate(docs: Sequence[Document]) -> tuple[DesiredState | None, list[Problem]]:
    """The desired state of ``docs``, or None and every problem found (sorted)."""
    objects, problems = _checked(docs)
    if problems:
        return None, problems
    return _build(objects), []


def _checked(docs: Sequence[Document]) -> tuple[list[_Object], list[Problem]]:
    report = _Report()
    objects = [obj for doc in docs if (obj := _check_schema(doc, report)) is not None]
    _check_semantics(objects, report)
    return objects, sorted(report.problems)


def validate_objects(bodies: Sequence[Any], file: str = "api") -> list[Problem]:
    """Every problem of manifest-form ``bodies`` taken as one whole desired state, without files.

    The API validates a write this way: the store's objects with the change applied. Problems
    are located at ``file``:1:1 and name their object (kind, name) and field.
    """
    mark = yaml.Mark(file, 0, 0, 0, None, None)  # type: ignore[arg-type]
    node = yaml.MappingNode("tag:yaml.org,2002:map", [], start_mark=mark)
    docs = [Document(file, i, body, node) for i, body in enumerate(bodies)]
    return _checked(docs)[1]


def load_desired_state(
    paths: Iterable[str | os.PathLike[str]], max_file_size: int = DEFAULT_MAX_FILE_SIZE
) -> DesiredState:
    """Load and validate the manifests under ``paths``; raises ManifestError with every problem."""
    with collector.paused():
        docs, problems = load_paths(paths, max_file_size)
        state, more = validate(docs)
    problems = sorted(problems + more)
    if problems or state is None:
        raise ManifestError(problems)
    return state


def _build(objects: Iterable[_Object]) -> DesiredState:
    by_kind: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
    for obj in objects:
        source = Source(obj.doc.file, obj.doc.locate(())[0])
        by_kind[obj.kind][obj.name] = build_object(obj.kind, obj.data, source)
    return DesiredState(
        groups=by_kind["Group"],
        users=by_kind["User"],
        checks=by_kind["Check"],
        upstreams=by_kind["Upstream"],
        access_nodes=by_kind["AccessNode"],
    )


# --- schemas ----------------------------------------------------------------------------


def _check_schema(doc: Document, report: _Report) -> _Object | None:
    data = doc.data
    if not isinstance(data, dict):
        report.add(doc, (), f"a manifest document must be a mapping, not {_json_type(data)}")
        return None
    ok = True
    if data.get("apiVersion") != API_VERSION:
        where = ("apiVersion",)
        got = f"got {_shown(data['apiVersion'])}" if "apiVersion" in data else "missing"
        report.add(doc, where, f"must be {API_VERSION!r} ({got})")
        ok = False
    kind = data.get("kind")
    if kind not in KINDS:
        where = ("kind",)
        got = f"got {_shown(kind)}" if "kind" in data else "missing"
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
    return _Object(kind, name, doc, ok and len(report.problems) == before)


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


def _report_schema_error(doc: Document, error: ValidationError, report: _Report) -> None:
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
                    f"unknown field {_shown(extra)} ({hint}allowed: {', '.join(known)})",
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
        report.add(doc, path, f"{_shown(instance)} is not allowed{_allowed(schema)}")
    elif keyword in ("enum", "const"):
        choices = value if keyword == "enum" else [value]
        report.add(doc, path, f"{_shown(instance)} is not one of {', '.join(map(str, choices))}")
    elif keyword in ("minimum", "maximum"):
        low, high = schema.get("minimum"), schema.get("maximum")
        report.add(doc, path, f"{instance} is out of range ({low} to {high})")
    elif keyword in ("minLength", "maxLength"):
        report.add(
            doc, path, f"{_shown(instance)} has {len(instance)} characters, {_bound(keyword, value)}{_allowed(schema)}"
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


# --- semantic rules ------------------------------------------------------------------------
# They run on every document of a known kind, valid or not, so that one run reports
# everything; each rule therefore reads values through the type-checking accessors below.


def _text(data: dict[str, Any], key: str, default: str | None = None) -> str | None:
    value = data.get(key, default)
    return value if isinstance(value, str) else None


def _entries(data: dict[str, Any], key: str) -> list[tuple[int, Any]]:
    value = data.get(key)
    return list(enumerate(value)) if isinstance(value, list) else []


def _mappings(data: dict[str, Any], key: str) -> list[tuple[int, dict[str, Any]]]:
    return [(i, v) for i, v in _entries(data, key) if isinstance(v, dict)]


def _mapping(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def _check_semantics(objects: list[_Object], report: _Report) -> None:
    index = _unique_names(objects, report)
    groups = index["Group"]
    checks = index["Check"]
    upstreams = index["Upstream"]
    for obj in objects:
        data = obj.data
        if "owner" in data:
            _reference(obj, ("owner",), "group", groups, report)
        if obj.kind == "User":
            for i, _ in _entries(data, "groups"):
                _reference(obj, ("groups", i), "group", groups, report)
            password_hash = _text(data, "password_hash")
            message = password_hash_problem(password_hash) if password_hash else ""
            if message:
                report.add(obj.doc, ("password_hash",), message)
        elif obj.kind == "Check" and obj.name in BASE_CHECKS:
            report.add(obj.doc, ("name",), f"{obj.name!r} is a base check's name; give the custom check another name")
        elif obj.kind == "Upstream":
            _check_upstream(obj, groups, checks, report)
        elif obj.kind == "AccessNode":
            for i, _ in _entries(data, "upstreams"):
                _reference(obj, ("upstreams", i), "upstream", upstreams, report)
            _check_access_node(obj, upstreams, report)


def _unique_names(objects: list[_Object], report: _Report) -> dict[str, dict[str, _Object]]:
    index: dict[str, dict[str, _Object]] = {kind: {} for kind in KINDS}
    for obj in objects:
        key = _canonical_access_node(obj.name) if obj.kind == "AccessNode" else obj.name
        first = index[obj.kind].get(key)
        if first is None:
            index[obj.kind][key] = obj
            continue
        line, column = first.doc.locate(("name",))
        report.add(
            obj.doc,
            ("name",),
            f"duplicate {obj.kind} name {obj.name!r}: first defined at {first.doc.file}:{line}:{column} "
            "(names are unique per kind)",
        )
    index["AccessNode"] = {obj.name: obj for obj in index["AccessNode"].values()}
    return index


def _canonical_access_node(name: str) -> str:
    host, port = split_hostport(name, 80)
    return f"{host.lower()}:{port}"


def _reference(obj: _Object, path: tuple[PathPart, ...], what: str, known: dict[str, _Object], report: _Report) -> None:
    value: Any = obj.data
    for part in path:
        value = value[part]
    if not isinstance(value, str) or value in known:
        return  # a wrong type is the schema's to report
    close = difflib.get_close_matches(value, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    report.add(obj.doc, path, f"unknown {what} {_shown(value)} (no {what} of that name is defined{hint})")


def _check_upstream(obj: _Object, groups: dict[str, _Object], checks: dict[str, _Object], report: _Report) -> None:
    data = obj.data
    owner_name = _text(data, "owner")
    owner = groups.get(owner_name or "")
    permissions = owner.data.get("global_permissions") if owner else None
    owner_reads_all = isinstance(permissions, list) and bool(
        {"GLOBAL_RO", "GLOBAL_RW", "SUPER"} & set(map(str, permissions))
    )
    for i, name in _entries(data, "checks"):
        if not isinstance(name, str) or name in BASE_CHECKS:
            continue
        check = checks.get(name)
        if check is None:
            _reference(obj, ("checks", i), "check", checks, report)
        elif owner is not None and check.data.get("owner") != owner_name and not owner_reads_all:
            report.add(
                obj.doc,
                ("checks", i),
                f"check {name!r} belongs to group {_shown(check.data.get('owner'))}; group {owner_name!r} "
                "may use another group's check only with GLOBAL_RO",
            )
    seen_groups: set[str] = set()
    for i, rule in _mappings(data, "acl"):
        group = _text(rule, "group_name")
        if group is None:
            continue
        _reference(obj, ("acl", i, "group_name"), "group", groups, report)
        if group in seen_groups:
            report.add(obj.doc, ("acl", i, "group_name"), f"group {group!r} has more than one acl rule")
        seen_groups.add(group)
    _check_backends(obj, report)


def _check_backends(obj: _Object, report: _Report) -> None:
    data = obj.data
    seen: dict[tuple[str, int], int] = {}
    usable = 0
    for i, node in _mappings(data, "nodes"):
        if node.get("force_status", "normal") not in ("down", "d"):
            usable += 1
        hostname = _text(node, "hostname")
        if hostname is None:
            continue
        address = split_hostport(hostname, 80)
        message = _ip_literal_problem(address[0]) if obj.valid else ""
        if message:
            report.add(obj.doc, ("nodes", i, "hostname"), message)
        key = (address[0].lower(), address[1])
        if key in seen:
            report.add(
                obj.doc,
                ("nodes", i, "hostname"),
                f"backend {hostname!r} is listed twice (as nodes[{seen[key]}] too); hostnames are unique in an upstream",
            )
        seen.setdefault(key, i)
    # An upstream without backends is allowed (the API adds them one by one); it is not rendered.
    min_servers = data.get("min_servers", 1)
    has_nodes = bool(_mappings(data, "nodes"))
    if isinstance(min_servers, int) and not isinstance(min_servers, bool) and has_nodes and min_servers > usable:
        report.add(
            obj.doc,
            ("min_servers",) if "min_servers" in data else ("nodes",),
            f"is {min_servers} but the upstream has only {usable} backends not forced down",
        )


def _ip_literal_problem(host: str) -> str:
    """A message when ``host`` looks like an IP address but is not a valid one."""
    looks_v4 = host.count(".") == 3 and host.replace(".", "").isdigit()
    if not looks_v4 and ":" not in host:
        return ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return f"{_shown(host)} is not a valid IP address"
    return ""


def _check_access_node(obj: _Object, upstreams: dict[str, _Object], report: _Report) -> None:
    data = obj.data
    host, http_port = split_hostport(obj.name, 80)
    message = _ip_literal_problem(host) if obj.valid else ""
    if message:
        report.add(obj.doc, ("name",), message)
    address = _text(data, "listen_address", "*")
    if obj.valid and address and address != "*":
        message = _ip_literal_problem(address.strip("[]"))
        if message:
            report.add(obj.doc, ("listen_address",), message)
    server_names: dict[str, str] = {}
    tcp_ports: dict[int, str] = {}
    for i, name in _entries(data, "upstreams"):
        upstream = upstreams.get(name) if isinstance(name, str) else None
        if upstream is None:
            continue
        listen = _mapping(upstream.data, "listen")
        if listen.get("protocol", "http") == "tcp":
            port = listen.get("port")
            if not isinstance(port, int):
                continue
            other = tcp_ports.setdefault(port, name)
            if port == http_port:
                report.add(
                    obj.doc,
                    ("upstreams", i),
                    f"tcp upstream {name!r} listens on port {port}, the access node's http port",
                )
            elif other != name:
                report.add(
                    obj.doc,
                    ("upstreams", i),
                    f"upstreams {other!r} and {name!r} both listen on tcp port {port} on this access node",
                )
            continue
        names = [n for _, n in _entries(listen, "server_names")] if "server_names" in listen else [name]
        for server_name in names:
            if not isinstance(server_name, str):
                continue
            other = server_names.setdefault(server_name, name)
            if other != name:
                report.add(
                    obj.doc,
                    ("upstreams", i),
                    f"upstreams {other!r} and {name!r} both serve server name {server_name!r} on this access node",
                )
