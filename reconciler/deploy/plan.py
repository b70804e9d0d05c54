"""Plan: what apply would change on one access node. A pure function of desired files and facts.

A plan has two views, both typed values (kopf's habit: a diff is data, not text):

- files: ``FileChange(op, path, old_digest, new_digest, drift)`` for every file to add,
  change or remove in the managed directory; ``drift`` marks a live file that differs from
  what obreconcile recorded when it last deployed (a hand edit, a removed file);
- objects: ``Change(op, object, field, old, new)``: upstreams and their nodes, computed from
  the desired model against the model recorded in the node's marker at the last deploy.

Besides changes, a node may need only a reload (its last deploy was switched but never
verified) or be refused (fencing: the push carries an older store revision than the node runs).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from reconciler.deploy.facts import Facts, MarkerState, NodeModel, TlsFileState, tls_references
from reconciler.manifest.model import AccessNode, DesiredState, to_manifest
from reconciler.render.renderer import RefusedUpstream, RenderedAccessNode


class Op(StrEnum):
    ADD = "add"
    CHANGE = "change"
    REMOVE = "remove"


SYMBOL = {Op.ADD: "+", Op.CHANGE: "~", Op.REMOVE: "-"}


class Refusal(StrEnum):
    """Why a node refuses a push (``NodePlan.refused`` says it in words)."""

    NO_NGINX = "no nginx"  # not installed, or not on the PATH of the node's user
    FENCED = "fenced"  # the node runs a newer revision of the same store
    TLS_FILES = "tls files"  # a certificate or key an upstream names is missing or unreadable


EXPIRY_WARNING = 14 * 86400  # seconds: a certificate expiring sooner is a plan warning


@dataclass(frozen=True)
class CertificateExpiry:
    """When a certificate an upstream of the node names expires (serve's expiry metric)."""

    upstream: str
    path: str
    not_after: float  # seconds since the epoch


@dataclass(frozen=True)
class FileChange:
    op: Op
    path: str
    old_digest: str | None
    new_digest: str | None
    drift: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": str(self.op),
            "path": self.path,
            "old_digest": self.old_digest,
            "new_digest": self.new_digest,
            "drift": self.drift,
        }


@dataclass(frozen=True)
class Change:
    """One object-level difference: ``Upstream/api`` ``nodes[app1:8080].weight`` 1 → 5."""

    op: Op
    object: str
    field: str = ""
    old: Any = None
    new: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"op": str(self.op), "object": self.object, "field": self.field, "old": self.old, "new": self.new}


@dataclass(frozen=True)
class StoreRef:
    """The desired-state store a push comes from, and its revision."""

    store_id: str
    revision: int


@dataclass(frozen=True)
class NodePlan:
    access_node: str
    revision: str  # the desired render revision
    live_revision: str | None
    files: tuple[FileChange, ...]
    objects: tuple[Change, ...]
    drift: tuple[str, ...] = ()  # human-readable: what differs from the last deploy
    reload_only: str = ""  # why a reload (and verify) is needed with no file change
    refused: str = ""  # why this push must not happen, in words (empty: it may happen)
    refusal: Refusal | None = None  # ... and which refusal it is
    warnings: tuple[str, ...] = ()
    facts_digest: str = ""
    health: tuple[str, ...] = ()  # what the backends' health changes in the rendering (RenderedAccessNode.health)
    certificates: tuple[CertificateExpiry, ...] = ()
    # upstreams the renderer refused (RenderedAccessNode.refused): their files stay as they are live
    refused_upstreams: tuple[RefusedUpstream, ...] = ()
    # path -> digest the marker records for each kept file live now (the last deploy's record)
    kept: Mapping[str, str] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.files or self.reload_only)

    def to_dict(self) -> dict[str, Any]:
        return {
            "access_node": self.access_node,
            "revision": self.revision,
            "live_revision": self.live_revision,
            "changed": self.changed,
            "files": [f.to_dict() for f in self.files],
            "objects": [c.to_dict() for c in self.objects],
            "drift": list(self.drift),
            "reload_only": self.reload_only,
            "refused": self.refused,
            "warnings": list(self.warnings),
            "facts_digest": self.facts_digest,
            "health": list(self.health),
            "refused_upstreams": [r.to_dict() for r in self.refused_upstreams],
        }


def sha256(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def facts_digest(facts: Facts) -> str:
    """A digest of everything a plan was computed from on the node (for saved plans)."""
    return sha256(json.dumps(facts.to_dict(), sort_keys=True))[:16]


@dataclass
class ModelCache:
    """Each upstream's manifest form, and its JSON, made once per run for all access nodes, and
    the compressed upstreams of the nodes that serve the same ones (facts.encode_model)."""

    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)
    encoded: dict[str, str] = field(default_factory=dict)
    members: dict[tuple[str, ...], bytes] = field(default_factory=dict)


def node_model(state: DesiredState, node: AccessNode, cache: ModelCache | None = None) -> NodeModel:
    """What the access node's files are made of, in manifest form, recorded beside its marker."""
    cache = cache if cache is not None else ModelCache()
    upstreams = {}
    for name in node.upstreams:
        if name in state.upstreams:
            if name not in cache.manifests:
                cache.manifests[name] = to_manifest("Upstream", state.upstreams[name])
            upstreams[name] = cache.manifests[name]
    return NodeModel(to_manifest("AccessNode", node), upstreams, cache.encoded, cache.members)


def plan_node(
    rendered: RenderedAccessNode,
    facts: Facts,
    model: Mapping[str, Any],
    store: StoreRef,
    force: bool = False,
    now: float | None = None,
) -> NodePlan:
    """The plan of one access node: desired files and model against its facts (pure but for
    reading the clock, ``now``, to say how soon a certificate expires)."""
    marker = facts.marker
    rendered = settle(rendered, facts)
    desired = dict(rendered.digests or {})
    recorded = marker.digests if marker else {}
    kept = rendered.kept  # a refused upstream's files: left as they are live, never a change
    files = []
    for path in sorted((set(desired) | set(facts.files)) - kept):
        new, old = desired.get(path), facts.files.get(path)
        if new == old:
            continue
        op = Op.ADD if old is None else Op.REMOVE if new is None else Op.CHANGE
        drifted = marker is not None and recorded.get(path) != old
        files.append(FileChange(op, path, old, new, drifted))
    drift = _drift(facts)
    reload_only = ""
    refusal: tuple[Refusal, str] | None = None
    if not files:
        if facts.link == "":
            reload_only = "config_dir is a plain directory: obreconcile takes it over as a release"
        elif marker is not None and marker.state != MarkerState.DEPLOYED:
            reload_only = "the last deploy was switched but never verified: reload and verify"
        elif marker is None and desired:
            reload_only = "no marker on the node: record this deploy"
        elif marker is not None and marker.revision != rendered.revision:
            reload_only = "the live files match but the marker names another revision: record this deploy"
        elif marker is not None and facts.served is not None and facts.served != marker.revision:
            reload_only = (
                f"nginx serves revision {facts.served}, not the live release's {marker.revision} "
                "(the link was switched without a reload): reload and verify"
            )
    if files or reload_only:
        refusal = _refusal(facts, store, force)
    tls_problems, tls_warnings, certificates = _tls(facts, model, time.time() if now is None else now)
    if refusal is None and (files or reload_only) and tls_problems:
        refusal = Refusal.TLS_FILES, "; ".join(tls_problems)
    return NodePlan(
        access_node=rendered.name,
        revision=rendered.revision,
        live_revision=marker.revision if marker else None,
        files=tuple(files),
        objects=tuple(diff_models(facts.model, model)) if facts.model is not None else (),
        drift=tuple(drift),
        reload_only=reload_only,
        refused=refusal[1] if refusal else "",
        refusal=refusal[0] if refusal else None,
        warnings=tuple(rendered.warnings) + ((facts.marker_problem,) if facts.marker_problem else ()) + tls_warnings,
        facts_digest=facts_digest(facts),
        health=rendered.health,
        certificates=certificates,
        refused_upstreams=rendered.refused,
        kept=kept_digests(rendered, facts),
    )


def settle(rendered: RenderedAccessNode, facts: Facts) -> RenderedAccessNode:
    """``rendered`` settled against the live release: only files whose inputs changed rendered."""
    marker = facts.marker
    return rendered.settle(marker.inputs, marker.digests) if marker else rendered.settle()


def kept_digests(rendered: RenderedAccessNode, facts: Facts) -> dict[str, str]:
    """What the next marker records for the kept files live now: what the last deploy recorded
    (so that a hand edit of one is still drift); a file it never recorded stays unrecorded."""
    recorded = facts.marker.digests if facts.marker else {}
    return {path: recorded[path] for path in sorted(rendered.kept) if path in facts.files and path in recorded}


def _tls(
    facts: Facts, model: Mapping[str, Any], now: float
) -> tuple[list[str], tuple[str, ...], tuple[CertificateExpiry, ...]]:
    """Refusals (a file missing, unreadable, not a certificate), warnings (expiring, expiry
    unknown) and expiries of the certificates and keys the node's upstreams name."""
    problems, warnings, expiries = [], [], []
    for ref in tls_references(model):
        fact = facts.tls.get(ref.path)
        where = f"upstream {ref.upstream}: {ref.field} {ref.path}"
        if fact is None:
            continue  # not observed (an old caller): nginx -t on the node still reads it
        if fact.state is TlsFileState.INVALID:
            problems.append(f"{where} is not a PEM certificate openssl can read")
        elif fact.state.refused:
            problems.append(f"{where} is {fact.state} on the access node")
        elif fact.state is TlsFileState.PRESENT:
            warnings.append(f"{where}: its expiry is unknown (no openssl on the access node)")
        elif fact.not_after is not None:
            expiries.append(CertificateExpiry(ref.upstream, ref.path, fact.not_after))
            left = fact.not_after - now
            if left < 0:
                warnings.append(f"{where} expired {int(-left // 86400)} days ago")
            elif left < EXPIRY_WARNING:
                warnings.append(f"{where} expires in {int(left // 86400)} days")
    return problems, tuple(warnings), tuple(expiries)


def _drift(facts: Facts) -> list[str]:
    marker = facts.marker
    if marker is None:
        return []
    out = []
    for path in sorted(set(marker.digests) | set(facts.files)):
        recorded, live = marker.digests.get(path), facts.files.get(path)
        if recorded == live:
            continue
        if live is None:
            out.append(f"{path}: removed by hand")
        elif recorded is None:
            out.append(f"{path}: added by hand")
        else:
            out.append(f"{path}: changed by hand")
    return out


def _refusal(facts: Facts, store: StoreRef, force: bool) -> tuple[Refusal, str] | None:
    if facts.nginx_version is None:
        return Refusal.NO_NGINX, "nginx is not installed on the access node (or not on the PATH of its user)"
    marker = facts.marker
    if force or marker is None or marker.store_id != store.store_id:
        return None
    if store.revision < marker.store_revision:
        return Refusal.FENCED, (
            f"fenced: the node runs store revision {marker.store_revision}, this push carries {store.revision} "
            "(a stale controller or a late job must not roll it back; --force overrides)"
        )
    return None


# --- object-level view ---------------------------------------------------------------------


def diff_models(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    """Changes from the recorded model to the desired one: access node settings, upstreams, nodes."""
    changes: list[Change] = []
    old_node, new_node = old.get("access_node") or {}, new.get("access_node") or {}
    name = new_node.get("name") or old_node.get("name") or "?"
    if old_node:
        _diff_fields(f"AccessNode/{name}", "", old_node, new_node, changes)
    old_up, new_up = old.get("upstreams") or {}, new.get("upstreams") or {}
    for upstream in sorted(set(old_up) | set(new_up)):
        label = f"Upstream/{upstream}"
        if upstream not in old_up:
            changes.append(Change(Op.ADD, label))
        elif upstream not in new_up:
            changes.append(Change(Op.REMOVE, label))
        else:
            _diff_fields(label, "", old_up[upstream], new_up[upstream], changes)
    return changes


def _keyed(items: list[Any]) -> dict[str, Any] | None:
    """Backends keyed by hostname (ACL rules by group), so a change reads as one node's change."""
    if items and all(isinstance(i, dict) and "hostname" in i for i in items):
        return {i["hostname"]: i for i in items}
    if items and all(isinstance(i, dict) and "group_name" in i for i in items):
        return {i["group_name"]: i for i in items}
    return None


def _diff_fields(label: str, prefix: str, old: Any, new: Any, changes: list[Change]) -> None:
    if old == new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            path = f"{prefix}.{key}" if prefix else key
            if key not in old:
                changes.append(Change(Op.ADD, label, path, None, new[key]))
            elif key not in new:
                changes.append(Change(Op.REMOVE, label, path, old[key], None))
            else:
                _diff_fields(label, path, old[key], new[key], changes)
        return
    if isinstance(old, list) and isinstance(new, list):
        old_keyed, new_keyed = _keyed(old), _keyed(new)
        if (
            (old_keyed is not None and new_keyed is not None)
            or (old_keyed is not None and not new)
            or (new_keyed is not None and not old)
        ):
            old_keyed, new_keyed = old_keyed or {}, new_keyed or {}
            for key in sorted(set(old_keyed) | set(new_keyed)):
                path = f"{prefix}[{key}]"
                if key not in old_keyed:
                    changes.append(Change(Op.ADD, label, path, None, new_keyed[key]))
                elif key not in new_keyed:
                    changes.append(Change(Op.REMOVE, label, path, old_keyed[key], None))
                else:
                    _diff_fields(label, path, old_keyed[key], new_keyed[key], changes)
            return
    changes.append(Change(Op.CHANGE, label, prefix, old, new))
