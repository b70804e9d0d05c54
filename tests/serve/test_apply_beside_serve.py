"""A CI `apply` beside a running `serve` changes nothing it should not (one truth for both).

serve keeps a killed backend rendered down (the failover tier in use); an `apply` of the same
manifests must then render byte-identical files (no write, no reload, the dead backend never
tried), and an apply of a real change must land it with the dead backend still down.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.serve.conftest import Backend, Serve, role, serving, wait_for, write_manifests
from tests.services.fleet import Fleet, SimulatedNode


def worker_pids(node: SimulatedNode) -> set[int]:
    """The PIDs of the node's nginx workers (children of its master): a reload replaces them."""
    assert node.process is not None
    master = node.process.pid
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master:
            children.add(int(stat.parent.name))
    return children


def upstream_errors(node: SimulatedNode, backend: Backend) -> int:
    """Lines of the node's error log where nginx tried ``backend`` as an upstream."""
    text = node.error_log.read_text(errors="replace") if node.error_log.is_file() else ""
    return sum(1 for line in text.splitlines() if "upstream" in line and backend.hostname in line)


@contextmanager
def traffic(fleet: Fleet, host: str = "web.example.com") -> Iterator[list[tuple[int, str]]]:
    """Requests through every node, back to back, for as long as the block runs: (status, body)."""
    answers: list[tuple[int, str]] = []
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            for node in fleet.nodes:
                try:
                    answers.append(node.get(host, timeout=2))
                except OSError as e:
                    answers.append((0, str(e)))
            time.sleep(0.01)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield answers
    finally:
        stop.set()
        thread.join(5)


def _upstream(backends: list[Backend], weight: int = 1) -> dict[str, object]:
    """b0, b1 in tier 0 and b2 in tier 1, two servers wanted: b0 dead puts tier 1 in use."""
    nodes = [
        {"hostname": backends[0].hostname},
        {"hostname": backends[1].hostname, "weight": weight},
        {"hostname": backends[2].hostname, "failover": 1},
    ]
    return {"checks": ["fast"], "min_servers": 2, "nodes": nodes}


def _outage(fleet: Fleet, backends: list[Backend], serve: Callable[..., Serve], manifests: Path) -> Serve:
    apply = fleet.cli("apply", manifests)
    assert apply.returncode == 0, apply.stdout + apply.stderr
    controller = serve()
    controller.wait_converged()
    assert [role(n, "web", backends[2].hostname) for n in fleet.nodes] == ["backup", "backup"]
    backends[0].stop()
    wait_for(lambda: all(role(n, "web", backends[0].hostname) == "down" for n in fleet.nodes), 10, "b0 down")
    wait_for(lambda: all(role(n, "web", backends[2].hostname) == "enabled" for n in fleet.nodes), 5, "tier 1")
    wait_for(lambda: serving(fleet), 5, "nginx serving the failover")
    time.sleep(0.5)  # the last probes nginx sent to b0 before the reload are in its log by now
    return controller


def test_an_apply_of_unchanged_manifests_during_an_outage_changes_nothing(
    fleet: Fleet, backends: list[Backend], serve: Callable[..., Serve], tmp_path: Path
) -> None:
    manifests = write_manifests(fleet, tmp_path / "m", {"web": _upstream(backends)})
    controller = _outage(fleet, backends, serve, manifests)
    pids = [worker_pids(n) for n in fleet.nodes]
    reloads = [n.reloads() for n in fleet.nodes]
    errors = [upstream_errors(n, backends[0]) for n in fleet.nodes]
    files = [n.live_files() for n in fleet.nodes]

    plan = fleet.cli("plan", manifests, extra=["--detailed-exitcode"])
    assert plan.returncode == 0, plan.stdout + plan.stderr
    document = json.loads(plan.stdout)
    assert document["health"] == {
        "source": "controller",
        "controller": controller.name,
        "down": [f"web/{backends[0].hostname}"],
    }
    for node in document["access_nodes"]:
        assert node["health"] == [f"upstream web: {backends[0].hostname} down (health); tier 1 in use"]
    text = fleet.cli("plan", manifests, output="text")
    assert f"{backends[0].hostname} down (health)" in text.stdout, text.stdout

    with traffic(fleet) as answers:
        result = fleet.cli("apply", manifests)
        time.sleep(1.5)  # serve would have re-rendered by now had apply changed anything
    assert result.returncode == 0, result.stdout + result.stderr
    applied = json.loads(result.stdout)
    assert applied["summary"] == {"converged": 0, "unchanged": 2, "failed": 0, "skipped": 0}
    assert applied["store"]["writes"] == 0
    assert [worker_pids(n) for n in fleet.nodes] == pids
    assert [n.reloads() for n in fleet.nodes] == reloads
    assert [n.live_files() for n in fleet.nodes] == files
    assert [upstream_errors(n, backends[0]) for n in fleet.nodes] == errors
    assert answers and {status for status, _ in answers} == {200}
    assert {body for _, body in answers} == {"b1", "b2"}


def test_a_real_change_during_an_outage_lands_and_the_dead_backend_stays_down(
    fleet: Fleet, backends: list[Backend], serve: Callable[..., Serve], tmp_path: Path
) -> None:
    manifests = write_manifests(fleet, tmp_path / "m", {"web": _upstream(backends)})
    _outage(fleet, backends, serve, manifests)
    reloads = [n.reloads() for n in fleet.nodes]
    errors = [upstream_errors(n, backends[0]) for n in fleet.nodes]

    write_manifests(fleet, manifests, {"web": _upstream(backends, weight=3)})
    with traffic(fleet) as answers:
        result = fleet.cli("apply", manifests)
        assert result.returncode == 0, result.stdout + result.stderr
        for node in fleet.nodes:  # as apply left it, before serve could touch it
            assert role(node, "web", backends[0].hostname) == "down"
            assert role(node, "web", backends[2].hostname) == "enabled"
            assert "weight=3" in node.live_files()["http/web.conf"]
        time.sleep(1.5)  # serve sees the new revision and renders the same files: no second reload
    assert json.loads(result.stdout)["summary"]["converged"] == 2
    assert [n.reloads() for n in fleet.nodes] == [r + 1 for r in reloads]
    assert [upstream_errors(n, backends[0]) for n in fleet.nodes] == errors
    assert answers and {status for status, _ in answers} == {200}
    assert {body for _, body in answers} == {"b1", "b2"}
