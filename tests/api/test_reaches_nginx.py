"""An API change reaches nginx on real access nodes, and `plan` of the Git manifests shows it.

Git manifests -> apply (fleet of sshd + nginx nodes) -> API drains a backend with
force_status down -> `obreconcile converge` (one pass from the store, as cron or serve does)
-> nginx no longer sends traffic there -> `plan` of the manifests reports the drift from Git
-> `apply` of the manifests puts Git's state back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from reconciler.api.app import create_app
from reconciler.api.view import StoreView
from reconciler.store import open_store
from tests.api.server import FAST_HASHER, RunningServer
from tests.deploy.conftest import address
from tests.services.backends import HttpBackend
from tests.services.fleet import Fleet
from tests.services.fleet_fixtures import fleet_under_test


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    yield from fleet_under_test(tmp_path, 2)


@pytest.fixture
def backends() -> Iterator[list[HttpBackend]]:
    started = [HttpBackend(f"b{i}") for i in range(2)]
    try:
        yield started
    finally:
        for backend in started:
            backend.stop()


def test_api_drain_reaches_nginx_and_plan_shows_drift(
    fleet: Fleet, backends: list[HttpBackend], tmp_path: Path
) -> None:
    b0, b1 = (address(b) for b in backends)
    manifests = fleet.write_manifests(tmp_path / "m", {"web": [b0, b1]})
    alice = {
        "apiVersion": "openbalancer/v1",
        "kind": "User",
        "name": "alice",
        "password_hash": FAST_HASHER.hash("alice-password"),
        "groups": ["ops"],
    }
    (manifests / "users.yaml").write_text(yaml.safe_dump(alice))
    applied = fleet.cli("apply", manifests)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    for node in fleet.nodes:
        assert {node.get("web.example.com")[1] for _ in range(8)} == {"b0", "b1"}

    store = open_store(fleet.store)
    server = RunningServer(create_app(store, StoreView(store)))
    try:
        token = server.login("alice", "alice-password")
        r = server.call("PATCH", f"/upstream/web/node/{b0}", token, {"force_status": "down"})
        assert r.status_code == 200, r.text
        assert store.audit()[-1].provenance.origin == "alice"
    finally:
        server.stop()
        store.close()

    converged = fleet.cli("converge")
    assert converged.returncode == 0, converged.stdout + converged.stderr
    for node in fleet.nodes:
        assert {node.get("web.example.com")[1] for _ in range(8)} == {"b1"}

    plan = fleet.cli("plan", manifests, "--detailed-exitcode")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    document = json.loads(plan.stdout)
    want = {"object": "Upstream/web", "field": f"nodes[{b0}].force_status", "old": "down", "new": "normal"}
    for node in document["access_nodes"]:
        assert any(want.items() <= change.items() for change in node["objects"]), node["objects"]
    changes = document["store"]["changes"]
    assert [(c["action"], c["kind"], c["name"]) for c in changes] == [("takeover", "Upstream", "web")]

    restored = fleet.cli("apply", manifests)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    for node in fleet.nodes:
        assert {node.get("web.example.com")[1] for _ in range(8)} == {"b0", "b1"}
