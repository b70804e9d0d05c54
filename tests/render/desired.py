"""Desired states for render tests, built through the real loader and validator."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from reconciler.errors import ManifestError
from reconciler.manifest.load import load_bytes
from reconciler.manifest.model import DesiredState
from reconciler.manifest.validate import validate
from reconciler.render.renderer import RefusedUpstream, RenderedAccessNode

GROUP = {"apiVersion": "openbalancer/v1", "kind": "Group", "name": "ops"}


def state_of(documents: Iterable[Mapping[str, Any]], validated: bool = True) -> DesiredState:
    """The validated desired state of manifest ``documents`` (apiVersion and owner filled in).

    ``validated=False`` builds the model directly (for large generated states that are valid
    by construction: schema validation of thousands of backends is slow).
    """
    docs = [GROUP]
    for doc in documents:
        docs.append({"apiVersion": "openbalancer/v1", "owner": "ops", **doc})
    if not validated:
        return DesiredState.from_documents(docs)
    text = yaml.dump_all(docs, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False)
    loaded, problems = load_bytes("test.yaml", text.encode())
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


def large_fleet(upstreams: int = 300, nodes: int = 10, access_nodes: int = 5) -> DesiredState:
    """A generated fleet: every tenth upstream tcp, failover tiers, forced states, names and IPs."""
    docs: list[dict[str, Any]] = []
    for u in range(upstreams):
        backends = []
        for n in range(nodes):
            host = f"app{n}.svc{u}.internal" if n % 3 == 0 else f"10.{u // 250}.{u % 250}.{n + 1}"
            backend: dict[str, Any] = {"hostname": f"{host}:{8000 + n}", "weight": n % 5 + 1, "failover": n // 4}
            if n == 1:
                backend["force_status"] = "down"
            if n == 2:
                backend.update(force_status="up", max_fails=0, fail_timeout="500ms")
            backends.append(backend)
        listen = {"protocol": "tcp", "port": 10_000 + u} if u % 10 == 9 else {"server_names": [f"s{u}.example.com"]}
        docs.append(upstream(f"svc-{u:04d}", *backends, listen=listen, min_servers=2))
    for a in range(access_nodes):
        served = [f"svc-{u:04d}" for u in range(upstreams) if u % access_nodes != a]
        docs.append(access_node(f"lb{a}.example.com:{8080 + a}", *served))
    return state_of(docs, validated=False)


def refusal(out: Mapping[str, RenderedAccessNode], node: str = "lb") -> RefusedUpstream:
    """The one upstream the renderer refused on access node ``node`` of a render's ``out``:
    none of the paths it keeps is rendered (so nothing of it reaches nginx)."""
    rendered = out[node]
    assert len(rendered.refused) == 1, rendered.refused
    refused = rendered.refused[0]
    assert refused.paths and not set(refused.paths) & set(rendered.files), (refused, list(rendered.files))
    return refused
