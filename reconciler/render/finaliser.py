"""The Jinja2 finaliser: the last check on every value printed into nginx configuration.

The schemas already restrict every rendered field to safe characters (SPEC.md section 1);
this is defence in depth for values that reach ``render`` without validation (API code, a
bug, a user's template). A printed value must be an integer or a string of characters from
an allow-list: no whitespace, no ``; { } ' " $ # \\`` or backtick, no control characters.
A refused value raises :class:`RenderError` naming its place in the template context.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from jinja2 import Undefined, pass_context
from jinja2.runtime import Context

from reconciler.errors import RenderError

SAFE_VALUE = re.compile(r"[A-Za-z0-9._:/\[\]*@+=,~%-]+")


@pass_context
def refuse_unsafe(context: Context, value: Any) -> Any:
    """Return ``value`` unchanged when it is safe to print into nginx configuration."""
    kind = type(value)
    if kind is str:
        if SAFE_VALUE.fullmatch(value):
            return value
    elif kind is int or kind is bool:
        return value
    if isinstance(value, Undefined):
        return value  # StrictUndefined raises when printed
    field = next(_places(context.get_all(), value, ""), "")
    where = f"{field} " if field else ""
    raise RenderError(
        f"template {context.name}: refusing {where}value {value!r}: "
        "only letters, digits and . _ : / [ ] * @ + = , ~ % - may be printed into nginx configuration",
        field=field,
        value=repr(value),
    )


def _places(data: Any, value: Any, path: str, depth: int = 0) -> Iterator[str]:
    """Every path under ``data`` at which ``value`` sits, depth-first."""
    if depth > 8:
        return
    if isinstance(data, Mapping):
        for key, item in data.items():
            if not isinstance(key, str) or callable(item):
                continue
            child = f"{path}.{key}" if path else key
            if type(item) is type(value) and item == value:
                yield child
            yield from _places(item, value, child, depth + 1)
    elif isinstance(data, (list, tuple)):
        for i, item in enumerate(data):
            child = f"{path}[{i}]"
            if type(item) is type(value) and item == value:
                yield child
            yield from _places(item, value, child, depth + 1)
