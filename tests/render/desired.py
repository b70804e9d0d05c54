"""Desired states for render tests, built through the real loader and validator."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from reconciler.errors import ManifestError
from reconciler.manifest.load import load_bytes
from reconciler.manifest.model import DesiredState
from reconciler.manifest.validate import validate

GROUP = {"apiVersion": "openbalancer/v1", "kind": "Group", "name": "ops"}


def state_of(documents: Iterable[Mapping[str, Any]]) -> DesiredState:
    """The validated desired state of manifest ``documents`` (apiVersion and owner filled in)."""
    docs = [GROUP]
    for doc in documents:
        docs.append({"apiVersion": "openbalancer/v1", "owner": "ops", **doc})
    loaded, problems = load_bytes("test.yaml", yaml.safe_dump_all(docs, sort_keys=False).encode())
    state, more = validate(loaded)
    if problems or more or state is None:
        raise ManifestError(problems + more)
    return state


def upstream(name: str, *nodes: Mapping[str, Any] | str, **fields: Any) -> dict[str, Any]:
    """An Upstream document; a node given as a string is ``{"hostname": it}``."""
    listed = [{"hostname": n} if isinstance(n, str) else dict(n) for n in nodes]
    return {"kind": "Upstream", "name": name, "nodes": listed, **fields}


def access_node(name: str, *upstreams: str, **fields: Any) -> dict[str, Any]:
    return {
        "kind": "AccessNode",
        "name": name,
        "upstreams": list(upstreams),
        "connection": {"type": "local"},
        **fields,
    }
