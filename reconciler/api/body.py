"""Request bodies: the one JSON decoder of every route (SPEC.md §4, hostile input).

``decode(raw)`` returns the JSON value of a body or raises ``BodyError`` with one located
problem (the route answers 400 with it). Refused, beyond what is not JSON at all:

- bytes that are not strict UTF-8 (a BOM, an overlong form, an encoded surrogate);
- nesting deeper than ``MAX_DEPTH`` levels, as the manifest loader refuses (counted on the
  raw text before parsing, so no parser ever recurses that deep);
- a number of more than ``MAX_NUMBER`` characters (Python refuses to read an integer of 4,300
  digits and more, and nothing here needs more than a few), and one too large to be finite;
- ``NaN``, ``Infinity`` and ``-Infinity``, which Python's json accepts and JSON does not have;
- a lone surrogate written as an escape (``"\\ud800"``): it cannot be encoded, stored or hashed;
- a key given twice in one object (JSON readers disagree on which one wins).

The size cap is aiohttp's ``client_max_size`` (413, before anything is read); ``decode``
refuses a longer ``raw`` all the same, so it is safe wherever it is called from.
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

from reconciler.errors import Problem
from reconciler.manifest.load import MAX_DEPTH
from reconciler.manifest.located import field_path, shown

MAX_NUMBER = 32  # characters of one number: far above any integer field (ports, weights: 1 to 65535)
MAX_SIZE = 1 << 20  # bytes; the same as create_app's default client_max_size

_STRING_OR_BRACKET = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DELTA = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]", re.IGNORECASE)  # how JSON writes U+D800 to U+DFFF


class BodyError(Exception):
    """A body refused by ``decode``: one problem, located by line and column or by field."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


class _Refused:
    """A value the parser's hooks refused; the walk reports it with its field."""

    def __init__(self, message: str) -> None:
        self.message = message


class _Object(dict[str, Any]):
    """An object whose keys repeat: ``repeated`` is the first key given twice."""

    repeated: str = ""


class _Hooks:
    """The parser's hooks for one body; ``refused`` when one of them left a value to report."""

    def __init__(self) -> None:
        self.refused = False

    def integer(self, token: str) -> Any:
        if len(token) > MAX_NUMBER:
            return self._refuse(f"a number of {len(token)} characters, at most {MAX_NUMBER} allowed")
        return int(token)

    def float(self, token: str) -> Any:
        if len(token) > MAX_NUMBER:
            return self._refuse(f"a number of {len(token)} characters, at most {MAX_NUMBER} allowed")
        value = float(token)
        return value if math.isfinite(value) else self._refuse(f"{token} is too large a number")

    def constant(self, token: str) -> Any:
        return self._refuse(f"{token} is not a JSON value")

    def object(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) == len(pairs):
            return obj
        self.refused = True
        repeated = _Object(pairs)
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                repeated.repeated = key
                break
            seen.add(key)
        return repeated

    def _refuse(self, message: str) -> _Refused:
        self.refused = True
        return _Refused(message)


def decode(raw: bytes, max_size: int = MAX_SIZE) -> Any:
    """The JSON value of ``raw``; BodyError (located) for anything listed in the module's doc."""
    if len(raw) > max_size:
        raise _error(f"the body has {len(raw)} bytes, at most {max_size} allowed")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line, column = _place(raw, e.start)
        raise _error(f"not UTF-8: byte {raw[e.start]:#04x} at line {line}, column {column} ({e.reason})") from e
    _check_depth(raw)
    hooks = _Hooks()
    try:
        value = json.loads(
            text,
            parse_int=hooks.integer,
            parse_float=hooks.float,
            parse_constant=hooks.constant,
            object_pairs_hook=hooks.object,
        )
    except json.JSONDecodeError as e:
        raise _error(f"not JSON: {e.msg} at line {e.lineno}, column {e.colno}") from e
    if hooks.refused or _SURROGATE_ESCAPE.search(raw):
        _walk(value)
    return value


def _error(message: str, field: str = "") -> BodyError:
    return BodyError(Problem("body", 0, 0, field=field, message=message))


def _place(raw: bytes, offset: int) -> tuple[int, int]:
    line_start = raw.rfind(b"\n", 0, offset) + 1
    return raw.count(b"\n", 0, offset) + 1, len(raw[line_start:offset].decode("utf-8", "replace")) + 1


def _check_depth(raw: bytes) -> None:
    """Refuse nesting deeper than MAX_DEPTH, found without parsing (brackets outside strings)."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return
    brackets = _STRINGS.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if max(accumulate(_DELTA[b] for b in brackets), default=0) <= MAX_DEPTH:
        return
    depth = 0
    for match in _STRING_OR_BRACKET.finditer(raw):  # only for the message: where it happens
        depth += _DELTA.get(match[0][0], 0) if len(match[0]) == 1 else 0
        if depth > MAX_DEPTH:
            line, column = _place(raw, match.start())
            raise _error(f"nesting deeper than {MAX_DEPTH} levels is not allowed (line {line}, column {column})")


def _walk(value: Any) -> None:
    """Report the first refused value, lone surrogate or repeated key, with its field."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if isinstance(item, _Refused):
            raise _error(item.message, field_path(path))
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise _error(f"{shown(item)} has a lone surrogate (\\ud800 to \\udfff)", field_path(path))
        elif isinstance(item, dict):
            if isinstance(item, _Object):
                raise _error(f"key {shown(item.repeated)} is given twice", field_path(path))
            for key, child in item.items():
                if _SURROGATE.search(key):
                    raise _error(f"key {shown(key)} has a lone surrogate (\\ud800 to \\udfff)", field_path(path))
                stack.append((child, (*path, key)))
        elif isinstance(item, list):
            stack.extend((child, (*path, i)) for i, child in enumerate(item))
