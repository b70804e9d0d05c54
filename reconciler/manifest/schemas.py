"""The JSON Schemas of schemas/, loaded once into a registry, two validators per kind.

- ``fast_validator_for``: jsonschema-rs (Rust), which only answers valid or not; it checks
  10,000 upstreams in a tenth of a second, where python-jsonschema takes about 40 s.
- ``validator_for``: python-jsonschema, run only on documents the fast one refused, for
  errors with their paths and the schema's descriptions.

Patterns are evaluated with Python's ``re`` by jsonschema, where ``$`` also matches before a
final newline: a pattern ending in ``$`` is compiled with ``\\Z`` instead, so "web\\n" is
refused by ``^[a-z0-9]...$`` exactly as an ECMA-262 engine (an editor) refuses it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from typing import TYPE_CHECKING, Any

import jsonschema_rs

from reconciler.resources import schema_dir

if TYPE_CHECKING:  # python-jsonschema is imported when a document is refused (see validator_for)
    from jsonschema import ValidationError
    from referencing import Registry

SCHEMA_FILES = {
    "Upstream": "upstream.schema.json",
    "Check": "check.schema.json",
    "AccessNode": "accessnode.schema.json",
    "Group": "group.schema.json",
    "User": "user.schema.json",
}
BASE_URI = "https://openbalancer.dev/schemas/v1/"


@cache
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A schema pattern as Python must run it: a final ``$`` means the very end."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    from jsonschema import ValidationError

    if validator.is_type(instance, "string") and not compile_pattern(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


@cache
def _manifest_validator() -> Any:
    """Draft 2020-12 with ``_pattern``; imported on first use (most runs never refuse anything)."""
    from jsonschema import Draft202012Validator, validators

    return validators.extend(Draft202012Validator, {"pattern": _pattern})


@cache
def schemas() -> dict[str, dict[str, Any]]:
    """Every schema document by file name."""
    return {p.name: json.loads(p.read_text("utf-8")) for p in sorted(schema_dir().glob("*.schema.json"))}


@cache
def registry() -> Registry:
    from referencing import Registry, Resource

    resources = [(doc["$id"], Resource.from_contents(doc)) for doc in schemas().values()]
    return Registry().with_resources(resources)


@cache
def validator_for(kind: str) -> Any:
    """A validator of one kind's documents (raises KeyError for an unknown kind)."""
    schema = schemas()[SCHEMA_FILES[kind]]
    return _manifest_validator()(schema, registry=registry())


@cache
def fast_validator_for(kind: str) -> Any:
    """A jsonschema-rs validator of one kind's documents: ``is_valid(document) -> bool``.

    Rust's regex engine has ECMA-262's ``$`` (end of text only) and no catastrophic
    backtracking, so it agrees with ``validator_for`` on every pattern here.
    """
    resources = [(doc["$id"], doc) for doc in schemas().values()]
    schema = schemas()[SCHEMA_FILES[kind]]
    return jsonschema_rs.validator_for(schema, registry=jsonschema_rs.Registry(resources))
