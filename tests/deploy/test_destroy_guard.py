"""The destroy guard (issue 14): a wrong or empty manifests path never prunes the store.

Seen on real nginx: `obreconcile apply emptydir` removed every Group, Check, Upstream and
AccessNode (exit 0, "5 objects written") and left the access nodes' nginx serving files nothing
owned any more. Now an empty path is an error, and a sync that removes every object, an
AccessNode or most of the store is refused with the list unless --allow-destroy.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.store import open_store, sync_manifests
from reconciler.store.sync import DestroyReason, plan_sync
from tests.deploy.conftest import address
from tests.services.backends import HttpBackend
from tests.services.fleet import Fleet, SimulatedNode
from tests.store.desired import fleet as desired_fleet
from tests.store.desired import without_upstream


def _json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    try:
        return json.loads(result.stdout)  # type: ignore[no-any-return]
    except ValueError:
        pytest.fail(f"not JSON (exit {result.returncode}):\n{result.stdout}\n{result.stderr}")


def _revision(nodes: Fleet) -> int:
    with open_store(nodes.store) as store:
        return store.revision()


def _node_state(node: SimulatedNode) -> tuple[str, dict[str, str], int]:
    return node.served_revision(), node.live_files(), node.reloads()


def _applied(nodes: Fleet, manifests: Path) -> None:
    result = nodes.cli("apply", manifests)
    assert result.returncode == 0, result.stdout + result.stderr


def _without_node(manifests: Path, name: str) -> None:
    path = manifests / "access-nodes.yaml"
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d["name"] != name]
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def test_apply_of_an_empty_directory_is_an_error_and_prunes_nothing(
    fleet: Fleet,
    backends: list[HttpBackend],
    tmp_path: Path,
) -> None:
    manifests = fleet.write_manifests(tmp_path / "m", {"web": [address(backends[0])]})
    _applied(fleet, manifests)
    revision, before = _revision(fleet), [_node_state(n) for n in fleet.nodes]
    empty = tmp_path / "emptydir"
    empty.mkdir()
    for command in ("apply", "plan", "validate"):
        result = fleet.cli(command, empty, output="text") if command != "validate" else _validate(fleet, empty)
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert f"{empty}:0:0: directory holds no manifest files (*.yaml, *.yml)" in result.stdout + result.stderr
        assert "Traceback" not in result.stderr
    assert _revision(fleet) == revision
    assert [_node_state(n) for n in fleet.nodes] == before


def _validate(nodes: Fleet, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(nodes.cli_args("validate", path), capture_output=True, text=True, timeout=60, check=False)


def _status(nodes: Fleet) -> dict[str, Any]:
    """`obreconcile status` as JSON (it takes no --known-hosts)."""
    result = subprocess.run(
        nodes.cli_args("--output", "json", "status"), capture_output=True, text=True, timeout=60, check=False
    )
    return _json(result)


def test_removing_an_access_node_is_refused_then_allowed_and_reported_orphaned(
    fleet: Fleet,
    backends: list[HttpBackend],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    manifests = fleet.write_manifests(tmp_path / "m", {"web": [address(backends[0])]})
    _applied(fleet, manifests)
    gone = fleet.nodes[2]
    revision, before = _revision(fleet), _node_state(gone)
    _without_node(manifests, gone.name)

    refused = fleet.cli("apply", manifests, output="text")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "refusing to remove 1 of 5 objects (1 AccessNode) from the store" in refused.stderr
    assert f"AccessNode/{gone.name}" in refused.stderr and "--allow-destroy" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert _revision(fleet) == revision  # nothing written: not the store, not a node
    assert _node_state(gone) == before

    monkeypatch.setenv("FORCE_COLOR", "1")  # rich colours a terminal's output: ask for it here
    monkeypatch.setenv("COLUMNS", "200")
    plan = fleet.cli("plan", manifests, output="text")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "destroy" in plan.stdout and "\x1b[1;31mdestroy" in plan.stdout  # bold red
    assert "removes 1 of 5 objects (1 AccessNode); apply refuses it without --allow-destroy" in plan.stdout
    assert "orphaned: its nginx keeps serving its last files" in plan.stdout
    document = _json(fleet.cli("plan", manifests))
    assert document["store"]["destroy"] == {
        "reasons": ["access_node"],
        "removed": [f"AccessNode/{gone.name}"],
        "count": 1,
        "stored": 5,
    }

    allowed = fleet.cli("apply", manifests, "--allow-destroy")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert [r["access_node"] for r in _json(allowed)["access_nodes"]] == [n.name for n in fleet.nodes[:2]]
    assert _node_state(gone) == before  # left serving, untouched
    assert gone.get("web.example.com") == (200, "b0")
    status = _status(fleet)
    assert status["access_nodes"][gone.name]["state"] == "orphaned"
    assert {status["access_nodes"][n.name]["state"] for n in fleet.nodes[:2]} == {"converged"}


def test_a_path_holding_other_manifests_is_refused_as_removing_everything(
    fleet: Fleet,
    backends: list[HttpBackend],
    tmp_path: Path,
) -> None:
    manifests = fleet.write_manifests(tmp_path / "m", {"web": [address(backends[0])]})
    _applied(fleet, manifests)
    other = tmp_path / "other"
    other.mkdir()
    (other / "group.yaml").write_text("apiVersion: openbalancer/v1\nkind: Group\nname: someone-else\n")
    refused = fleet.cli("apply", other, output="text")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "refusing to remove 5 of 5 objects (every object in the store, 3 AccessNodes) from the store" in (
        refused.stderr
    )
    revision = _revision(fleet)
    assert fleet.cli("apply", other).returncode == 1 and _revision(fleet) == revision
    assert {_status(fleet)["access_nodes"][n.name]["state"] for n in fleet.nodes} == {"converged"}


def test_the_share_rule_counts_removals_against_the_store(tmp_path: Path) -> None:
    """More than half of the objects and more than ten: a destroy; ten or fewer: a clean-up."""
    with open_store(f"sqlite:///{tmp_path / 'state.db'}") as store:
        state = desired_fleet(upstreams=20, access_nodes=1)  # 20 upstreams, 1 node, 2 groups: 23
        sync_manifests(store, state)
        for name in [f"u{i:05d}" for i in range(10)]:
            state = without_upstream(state, name)
        assert plan_sync(store, state).destroy is None  # 10 of 23 removed
        state = without_upstream(state, "u00010")
        assert plan_sync(store, state).destroy is None  # 11 of 23: not more than half
        for name in [f"u{i:05d}" for i in range(11, 13)]:
            state = without_upstream(state, name)
        destroy = plan_sync(store, state).destroy  # 13 of 23
        assert destroy is not None and destroy.reasons == (DestroyReason.SHARE,)
        assert len(destroy.removed) == 13 and destroy.stored == 23
