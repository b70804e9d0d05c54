"""`converge` for cron, rise/fall state kept across restarts, and a failing node retried apart."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from reconciler.store import open_store
from tests.serve.conftest import Backend, Serve, apply, role, wait_for, web_upstream, write_manifests
from tests.services.fleet import Fleet


def test_converge_runs_each_check_once_into_the_stored_rise_fall_state(
    fleet: Fleet, backends: list[Backend], tmp_path: Path
) -> None:
    apply(fleet, write_manifests(fleet, tmp_path / "m", {"web": web_upstream(backends[:2])}))
    backends[0].stop()
    first = fleet.cli("converge")
    assert first.returncode == 0, first.stdout + first.stderr
    document = json.loads(first.stdout)
    assert document["health"]["backends"]["web"][backends[0].hostname] is True  # 1 failure of fall 2
    assert all(role(n, "web", backends[0].hostname) == "enabled" for n in fleet.nodes)
    with open_store(fleet.store) as store:
        record = store.health_records()[("web", backends[0].hostname, "fast")]
    assert (record.status, record.consecutive) == ("up", -1)

    second = fleet.cli("converge", output="text")
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"down: web/{backends[0].hostname}" in second.stdout
    assert all(role(n, "web", backends[0].hostname) == "down" for n in fleet.nodes)
    reloads = [n.reloads() for n in fleet.nodes]
    third = fleet.cli("converge")
    assert {r["status"] for r in json.loads(third.stdout)["access_nodes"]} == {"unchanged"}
    assert [n.reloads() for n in fleet.nodes] == reloads


def test_a_restarted_controller_keeps_the_rise_fall_state(
    fleet: Fleet, backends: list[Backend], serve: Callable[..., Serve], tmp_path: Path
) -> None:
    apply(fleet, write_manifests(fleet, tmp_path / "m", {"web": web_upstream(backends[:2])}))
    first = serve()
    first.wait_converged()
    backends[0].stop()
    wait_for(lambda: all(role(n, "web", backends[0].hostname) == "down" for n in fleet.nodes), 10, "b0 down")
    assert first.stop() == 0
    reloads = [n.reloads() for n in fleet.nodes]
    second = serve(admin=False)
    second.wait_converged("convergence after the restart")
    time.sleep(1.0)  # the dead backend is down from the start: never rendered up, no reload
    assert all(role(n, "web", backends[0].hostname) == "down" for n in fleet.nodes)
    assert [n.reloads() for n in fleet.nodes] == reloads


def test_a_failing_node_is_retried_with_backoff_without_holding_back_the_others(
    fleet: Fleet, backends: list[Backend], serve: Callable[..., Serve], tmp_path: Path
) -> None:
    apply(fleet, write_manifests(fleet, tmp_path / "m", {"web": web_upstream(backends[:2])}))
    controller = serve()
    controller.wait_converged()
    broken, healthy = fleet.nodes
    broken.write_conf(extra_http="    not_a_directive on;\n")  # its nginx -t now fails
    backends[0].stop()
    wait_for(lambda: role(healthy, "web", backends[0].hostname) == "down", 10, "the healthy node converged")
    wait_for(lambda: "push: " + broken.name + " failed" in controller.tail(), 10, "the broken node's failure")
    assert role(broken, "web", backends[0].hostname) == "enabled"  # left untouched
    status = controller.status()
    if status:
        assert status["access_nodes"]["failed"] == 1
    broken.write_conf()
    wait_for(lambda: role(broken, "web", backends[0].hostname) == "down", 12, "the retry converged it")
    assert "retrying in 2.0s" in controller.tail(200)


def test_a_name_that_stops_resolving_keeps_the_address_in_the_store(
    fleet: Fleet, backends: list[Backend], tmp_path: Path
) -> None:
    """SPEC.md §2: a name that does not resolve keeps its last known address, also in a new
    process: apply renders, and converge checks and renders, it at the address an earlier run
    recorded in the store; apply records the names it resolved."""
    gone = f"app-gone.invalid:{backends[1].port}"  # .invalid never resolves (RFC 6761)
    local = f"localhost:{backends[2].port}"
    nodes = [{"hostname": backends[0].hostname}, {"hostname": gone}, {"hostname": local}]
    manifests = write_manifests(fleet, tmp_path / "m", {"web": {"checks": ["fast"], "nodes": nodes}})
    first = fleet.cli("apply", manifests)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "app-gone.invalid" in first.stdout + first.stderr  # reported
    assert all(role(n, "web", gone) is None for n in fleet.nodes)  # never resolved: left out
    with open_store(fleet.store) as store:
        assert "127.0.0.1" in store.known_addresses()["localhost"]  # what apply resolved is recorded
        assert "app-gone.invalid" not in store.known_addresses()
        store.record_addresses({"app-gone.invalid": ["127.0.0.1"]})  # as a run before the DNS outage learned

    second = fleet.cli("apply", manifests)
    assert second.returncode == 0, second.stdout + second.stderr
    for node in fleet.nodes:
        assert f"server 127.0.0.1:{backends[1].port} " in node.live_files()["http/web.conf"]
        assert role(node, "web", gone) == "enabled"
    third = fleet.cli("converge")
    assert third.returncode == 0, third.stdout + third.stderr
    assert json.loads(third.stdout)["health"]["backends"]["web"][gone] is True  # checked at that address
    assert all(role(n, "web", gone) == "enabled" for n in fleet.nodes)
