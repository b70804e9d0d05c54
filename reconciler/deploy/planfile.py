"""A saved plan (``plan --out plan.json``) and the checks ``apply plan.json`` makes before it acts.

The file holds the manifests the plan was made from (so that apply needs no checkout), the
store it was made against (id and revision), and per access node the digest of the facts it
saw and the revision it rendered. ``apply plan.json`` refuses, before anything changes, when
the store moved, when a node's facts or rendered revision differ; the node's facts are checked
again under its lock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from reconciler import __version__
from reconciler.deploy.fleet import NodePlanResult
from reconciler.errors import ManifestError, PlanError
from reconciler.manifest.load import load_bytes
from reconciler.manifest.model import KINDS, DesiredState, Source, to_manifest
from reconciler.manifest.validate import validate

FORMAT = 1


@dataclass(frozen=True)
class SavedPlan:
    store_id: str
    store_revision: int
    prune_api: bool
    limit: tuple[str, ...]
    manifests: DesiredState
    nodes: dict[str, dict[str, Any]]  # access node -> {"facts_digest", "revision", "changed"}

    def expected_facts(self) -> dict[str, str]:
        return {name: str(n["facts_digest"]) for name, n in self.nodes.items()}


def write_saved_plan(
    path: Path,
    manifests: DesiredState,
    store_id: str,
    store_revision: int,
    prune_api: bool,
    limit: tuple[str, ...],
    results: list[NodePlanResult],
) -> None:
    documents = []
    for kind in KINDS:
        for obj in manifests.of_kind(kind).values():
            documents.append(
                {"source": {"file": obj.source.file, "line": obj.source.line}, "body": to_manifest(kind, obj)}
            )
    document = {
        "format": FORMAT,
        "obreconcile": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "store": {"id": store_id, "revision": store_revision},
        "prune_api": prune_api,
        "limit": list(limit),
        "manifests": documents,
        "access_nodes": {
            r.access_node: {"facts_digest": r.plan.facts_digest, "revision": r.plan.revision, "changed": r.plan.changed}
            for r in results
            if r.plan is not None
        },
    }
    path.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")


def read_saved_plan(path: Path) -> SavedPlan:
    try:
        document = json.loads(path.read_text())
        if document.get("format") != FORMAT:
            raise PlanError(f"{path}: not a plan of this obreconcile (format {document.get('format')!r})")
        bodies = [d["body"] for d in document["manifests"]]
        sources = [Source(str(d["source"]["file"]), int(d["source"]["line"])) for d in document["manifests"]]
        store = document["store"]
        saved = (str(store["id"]), int(store["revision"]), bool(document["prune_api"]), tuple(document["limit"]))
        nodes = dict(document["access_nodes"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PlanError(f"{path}: cannot read the saved plan: {e}") from e
    return SavedPlan(*saved, _revalidated(path, bodies, sources), nodes)


def _revalidated(path: Path, bodies: list[dict[str, Any]], sources: list[Source]) -> DesiredState:
    """The plan's manifests validated again (a plan file is input like any other)."""
    docs, problems = load_bytes(str(path), yaml.safe_dump_all(bodies, sort_keys=False).encode())
    state, more = validate(docs) if not problems else (None, [])
    if state is None:
        raise ManifestError(problems + more)
    by_name = {(b["kind"], b["name"]): s for b, s in zip(bodies, sources, strict=True)}
    return DesiredState.from_kinds(
        {
            kind: {name: replace(obj, source=by_name[(kind, name)]) for name, obj in state.of_kind(kind).items()}
            for kind in KINDS
        }
    )
