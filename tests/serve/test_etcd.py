"""Several controllers on one etcd store: election, takeover, fencing of a paused master, etcd outages.

Controllers are `serve` processes with a 2 s master lease; every one is stopped by PID at the end.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler.serve.push import TEST_PUSH_DELAY
from reconciler.store import Provenance, Put, open_store
from tests.serve.conftest import Backend, Serve, apply, role, serving, wait_for, write_manifests
from tests.services.etcd import EtcdServer, EtcdStartError, start_etcd
from tests.services.fleet import Fleet

TTL = 2


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    try:
        server = start_etcd(tmp_path / "etcd")
    except EtcdStartError as e:
        pytest.fail(str(e))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def on_etcd(fleet: Fleet, etcd: EtcdServer, backends: list[Backend], tmp_path: Path) -> Fleet:
    """The fleet's store is etcd; the manifests (web: b0, b1, b2 with the fast check) applied."""
    fleet.store = etcd.url("ctl")
    body = {"checks": ["fast"], "nodes": [{"hostname": b.hostname} for b in backends[:3]]}
    apply(fleet, write_manifests(fleet, tmp_path / "m", {"web": body}))
    return fleet


def _master(controllers: list[Serve]) -> Serve | None:
    masters = [c for c in controllers if c.process.poll() is None and c.is_master()]
    return masters[0] if len(masters) == 1 else None


def _change_weight(fleet: Fleet, hostname: str, weight: int) -> int:
    with open_store(fleet.store) as store:
        stored = store.get("Upstream", "web")
        assert stored is not None
        body = dict(stored.body)
        body["nodes"] = [{**n, "weight": weight} if n["hostname"] == hostname else n for n in body["nodes"]]
        return store.commit([Put("Upstream", "web", body, Provenance("api", "alice"), expect=stored.revision)])


def _store_revisions(fleet: Fleet) -> list[int]:
    return [int(n.marker().get("store_revision", 0)) for n in fleet.nodes]


def test_three_controllers_one_master_and_a_takeover_after_sigkill(
    on_etcd: Fleet, backends: list[Backend], serve: Callable[..., Serve]
) -> None:
    fleet = on_etcd
    controllers = [serve("--lease-ttl", str(TTL), admin=i == 0) for i in range(3)]
    master = wait_for(lambda: _master(controllers), 40, "one master")
    wait_for(master.converged, 30, "convergence")
    status = master.status()
    assert status["master_node"] == master.name and status["etcd_health"]["healthy"]
    names = {c.name for c in controllers}
    nodes = wait_for(
        lambda: {n["host_name"] for n in _management(master)} == names and _management(master), 10, "registrations"
    )
    assert [n["host_name"] for n in nodes if n["master"]] == [master.name]

    master.process.kill()  # SIGKILL: no lease release
    killed = time.monotonic()
    others = [c for c in controllers if c is not master]
    successor = wait_for(lambda: _master(others), TTL + 2 + 1, "a new master")
    assert time.monotonic() - killed <= TTL + 2
    backends[0].stop()  # convergence continues under the new master
    wait_for(lambda: all(role(n, "web", backends[0].hostname) == "down" for n in fleet.nodes), 10, "b0 down")
    assert successor.stop() == 0


def _management(controller: Serve) -> list[dict[str, object]]:
    import json

    headers = {"X-Auth-Token": controller.token()} if controller.token() else None
    try:
        code, body = controller.get("/management/node", headers)
    except OSError:
        return []
    document = json.loads(body) if code == 200 else []
    return document if isinstance(document, list) else document.get("management_nodes", document.get("items", []))


def test_a_paused_master_cannot_roll_nodes_back(
    on_etcd: Fleet, backends: list[Backend], serve: Callable[..., Serve]
) -> None:
    fleet = on_etcd
    old = serve("--lease-ttl", str(TTL), env={TEST_PUSH_DELAY: "2.5"})
    old.wait_converged()
    others = [serve("--lease-ttl", str(TTL), admin=False) for _ in range(2)]
    wait_for(lambda: all(c.metrics() for c in others), 40, "the other controllers")
    revision = _change_weight(fleet, backends[1].hostname, 5)
    wait_for(lambda: f"at store revision {revision} in 2.5s" in old.tail(100), 10, "the old master's push")
    old.signal(signal.SIGSTOP)  # paused between its master check and its push
    new = wait_for(lambda: _master(others), TTL + 3, "a new master")
    newer = _change_weight(fleet, backends[1].hostname, 7)
    wait_for(lambda: _store_revisions(fleet) == [newer] * len(fleet.nodes) and serving(fleet), 10, "new master's push")
    live = [n.marker()["revision"] for n in fleet.nodes]
    old.signal(signal.SIGCONT)
    wait_for(lambda: old.tail(200).count("fenced") >= len(fleet.nodes), 10, lambda: f"fencing\n{old.tail()}")
    assert _store_revisions(fleet) == [newer] * len(fleet.nodes)
    assert [n.marker()["revision"] for n in fleet.nodes] == live
    assert "weight=7" in fleet.nodes[0].live_files()["http/web.conf"]
    wait_for(lambda: not old.is_master(), 5, "the old master to step down")
    assert _master([*others, old]) is new


def test_controllers_keep_the_config_while_etcd_is_down_and_resume_after(
    on_etcd: Fleet, etcd: EtcdServer, backends: list[Backend], serve: Callable[..., Serve]
) -> None:
    fleet = on_etcd
    controllers = [serve("--lease-ttl", str(TTL), admin=i == 0) for i in range(2)]
    master = wait_for(lambda: _master(controllers), 40, "one master")
    wait_for(master.converged, 30, "convergence")
    live = [n.marker()["revision"] for n in fleet.nodes]
    reloads = [n.reloads() for n in fleet.nodes]
    wait_for(lambda: controllers[0].status().get("etcd_health", {}).get("healthy"), 30, "/status of the first")
    token = controllers[0].token()
    etcd.stop()
    wait_for(
        lambda: all("obreconcile_store_healthy 0.0" in c.metrics() for c in controllers), 10, "unhealthy store reported"
    )

    # /status still answers a token checked before the outage, and says the store is unhealthy
    def unhealthy_status() -> bool:
        code, body = controllers[0].get("/status", {"X-Auth-Token": token})
        assert code == 200, body
        return json.loads(body)["etcd_health"]["healthy"] is False

    wait_for(unhealthy_status, 5, "/status to say the store is unhealthy")
    assert controllers[0].get("/status", {"X-Auth-Token": "x" * 43})[0] == 503
    backends[2].stop()  # no master can be sure of its lease: nothing is pushed
    time.sleep(TTL + 1)
    assert [n.marker()["revision"] for n in fleet.nodes] == live
    assert [n.reloads() for n in fleet.nodes] == reloads
    assert all(n.get("web.example.com")[0] == 200 for n in fleet.nodes)
    assert all(c.process.poll() is None for c in controllers)

    restarted = subprocess.Popen(etcd.process.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    etcd.process = restarted
    wait_for(etcd.healthy, 15, "etcd back")
    wait_for(lambda: _master(controllers), 15, "a master again")
    wait_for(lambda: all("obreconcile_store_healthy 1.0" in c.metrics() for c in controllers), 10, "healthy store")
    wait_for(lambda: all(role(n, "web", backends[2].hostname) == "down" for n in fleet.nodes), 15, "b2 down")
