"""plan and apply against real access nodes: each its own sshd (key-only login) and its own nginx.

Assertions look at the nodes themselves (their files, releases, markers, nginx's reloads and
the traffic through them), not only at obreconcile's output.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.conftest import address
from tests.services.backends import HttpBackend
from tests.services.fleet import Fleet, SimulatedNode
from tests.services.sshd import keygen


def _json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    try:
        return json.loads(result.stdout)  # type: ignore[no-any-return]
    except ValueError:
        pytest.fail(f"not JSON (exit {result.returncode}):\n{result.stdout}\n{result.stderr}")


def _node_results(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["access_node"]: r for r in document["access_nodes"]}


def _state(node: SimulatedNode) -> tuple[str, list[str], int, int]:
    """Everything an apply writes on a node: link target, releases, marker mtime, reloads."""
    marker = node.config_dir / ".obreconcile" / "marker.json"
    return (os.readlink(node.config_dir), sorted(os.listdir(node.releases)), marker.stat().st_mtime_ns, node.reloads())


def _hits(node: SimulatedNode, host: str, n: int = 12) -> list[str]:
    return [node.get(host)[1] for _ in range(n)]


def _upstreams(backends: list[HttpBackend], weight: int = 1) -> dict[str, Any]:
    return {
        "web": {"nodes": [{"hostname": address(backends[0]), "weight": weight}, {"hostname": address(backends[1])}]},
        "api": [address(backends[2])],
    }


def _consistent(node: SimulatedNode) -> None:
    """The live files are exactly one release's (the marker's digests), never a mix."""
    import hashlib

    marker = node.marker()
    live = {p: hashlib.sha256(t.encode()).hexdigest() for p, t in node.live_files().items()}
    assert live == marker["digests"], node.name


def test_first_apply_converges_every_node_and_a_second_apply_writes_nothing(
    fleet: Fleet, backends: list[HttpBackend], tmp_path: Path
) -> None:
    manifests = fleet.write_manifests(tmp_path / "m", _upstreams(backends))
    result = fleet.cli("apply", manifests)
    assert result.returncode == 0, result.stdout + result.stderr
    assert {r["status"] for r in _json(result)["access_nodes"]} == {"converged"}
    for node in fleet.nodes:
        assert set(_hits(node, "web.example.com")) == {"b0", "b1"}
        assert set(_hits(node, "api.example.com", 4)) == {"b2"}
        assert node.get("unknown.example.com")[0] == 404
        assert node.served_revision() == node.marker()["revision"]
        assert node.marker()["state"] == "deployed"
        _consistent(node)
    before = {n.name: _state(n) for n in fleet.nodes}
    again = fleet.cli("apply", manifests)
    assert again.returncode == 0, again.stderr
    assert {r["status"] for r in _json(again)["access_nodes"]} == {"unchanged"}
    assert {n.name: _state(n) for n in fleet.nodes} == before  # no write, no reload on any node
    plan = fleet.cli("plan", manifests, extra=["--detailed-exitcode"])
    assert plan.returncode == 0 and _json(plan)["changes"] is False


def test_weight_change_new_and_removed_upstreams_plan_and_converge(
    fleet: Fleet, backends: list[HttpBackend], tmp_path: Path
) -> None:
    manifests = fleet.write_manifests(tmp_path / "m", _upstreams(backends))
    assert fleet.cli("apply", manifests).returncode == 0
    upstreams = _upstreams(backends, weight=5)
    del upstreams["api"]
    upstreams["shop"] = [address(backends[3])]
    fleet.write_manifests(manifests, upstreams)

    plan = fleet.cli("plan", manifests, extra=["--detailed-exitcode"])
    assert plan.returncode == 2, plan.stderr
    document = _json(plan)
    assert {(c["action"], c["name"]) for c in document["store"]["changes"]} == {
        ("add", "shop"),
        ("change", "web"),
        ("remove", "api"),
        *(("change", n.name) for n in fleet.nodes),  # their upstreams lists changed
    }
    node_plan = _node_results(document)[fleet.nodes[0].name]
    objects = {(c["op"], c["object"], c["field"], str(c["old"]), str(c["new"])) for c in node_plan["objects"]}
    assert ("change", "Upstream/web", f"nodes[{address(backends[0])}].weight", "1", "5") in objects
    assert ("add", "Upstream/shop", "", "None", "None") in objects
    assert ("remove", "Upstream/api", "", "None", "None") in objects
    assert {(f["op"], f["path"]) for f in node_plan["files"]} >= {
        ("add", "http/shop.conf"),
        ("remove", "http/api.conf"),
        ("change", "http/web.conf"),
    }

    text = fleet.cli("plan", manifests, output="text")
    assert f"~ Upstream/web nodes[{address(backends[0])}].weight: 1 -> 5" in text.stdout
    assert "+ http/shop.conf" in text.stdout and "- http/api.conf" in text.stdout
    assert "weight=5" in text.stdout  # the unified diff of http/web.conf

    result = fleet.cli("apply", manifests)
    assert result.returncode == 0, result.stdout + result.stderr
    for node in fleet.nodes:
        assert "http/api.conf" not in node.live_files()  # pruned in the same switch
        assert node.get("api.example.com")[0] == 404
        assert set(_hits(node, "shop.example.com", 3)) == {"b3"}
        hits = _hits(node, "web.example.com", 30)
        assert hits.count("b0") > hits.count("b1")  # weight 5 against 1
        _consistent(node)


def test_hand_edit_is_reported_as_drift_and_corrected(
    fleet: Fleet, backends: list[HttpBackend], tmp_path: Path
) -> None:
    manifests = fleet.write_manifests(tmp_path / "m", _upstreams(backends))
    assert fleet.cli("apply", manifests).returncode == 0
    node = fleet.nodes[1]
    edited = node.config_dir / "http" / "web.conf"
    edited.write_text(edited.read_text().replace(address(backends[1]), address(backends[3]), 1))
    (node.config_dir / "http" / "extra.conf").write_text("# added by hand\n")

    plan = _json(fleet.cli("plan", manifests))
    node_plan = _node_results(plan)[node.name]
    assert sorted(node_plan["drift"]) == ["http/extra.conf: added by hand", "http/web.conf: changed by hand"]
    assert {(f["op"], f["path"], f["drift"]) for f in node_plan["files"]} == {
        ("change", "http/web.conf", True),
        ("remove", "http/extra.conf", True),
    }
    assert all(not _node_results(plan)[n.name]["changed"] for n in fleet.nodes if n is not node)

    result = fleet.cli("apply", manifests)
    assert result.returncode == 0, result.stderr
    statuses = {r["access_node"]: r["status"] for r in _json(result)["access_nodes"]}
    assert statuses[node.name] == "converged" and list(statuses.values()).count("unchanged") == 2
    assert "extra.conf" not in str(node.live_files()) and address(backends[3]) not in node.live_files()["http/web.conf"]
    _consistent(node)


def test_a_node_whose_nginx_test_fails_keeps_its_config_and_the_others_converge(
    fleet: Fleet, backends: list[HttpBackend], tmp_path: Path
) -> None:
    manifests = fleet.write_manifests(tmp_path / "m", _upstreams(backends))
    assert fleet.cli("apply", manifests).returncode == 0
    broken = fleet.nodes[1]
    old = (broken.served_revision(), os.readlink(broken.config_dir), broken.reloads())
    broken.write_conf(extra_http="    no_such_directive on;\n")  # node-local breakage
    fleet.write_manifests(manifests, _upstreams(backends, weight=4))

    result = fleet.cli("apply", manifests)
    assert result.returncode == 1
    results = _node_results(_json(result))
    assert results[broken.name]["status"] == "failed" and results[broken.name]["step"] == "test"
    assert 'unknown directive "no_such_directive"' in results[broken.name]["error"]
    assert (broken.served_revision(), os.readlink(broken.config_dir), broken.reloads()) == old
    assert set(_hits(broken, "web.example.com")) == {"b0", "b1"}  # still serving the old release
    for node in fleet.nodes:
        if node is not broken:
            assert results[node.name]["status"] == "converged"
            assert node.served_revision() == node.marker()["revision"] != ""
    text = fleet.cli("apply", manifests, output="text")
    assert f"FAILED {broken.name} at test" in text.stderr


def test_a_node_whose_reload_fails_is_rolled_back_and_serves_the_previous_config(
    fleet: Fleet, backends: list[HttpBackend], tmp_path: Path
) -> None:
    manifests = fleet.write_manifests(tmp_path / "m", _upstreams(backends))
    assert fleet.cli("apply", manifests).returncode == 0
    node = fleet.nodes[2]
    previous = (node.served_revision(), os.readlink(node.config_dir))
    # A tcp upstream on a port that another process holds on this node's address only:
    # `nginx -t` accepts it (it binds nothing); the reload cannot bind and keeps the old config.
    holder = socket.socket()
    holder.bind((node.address, 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        upstreams = _upstreams(backends) | {
            "db": {"listen": {"protocol": "tcp", "port": port}, "nodes": [{"hostname": address(backends[3])}]}
        }
        fleet.write_manifests(manifests, upstreams)
        result = fleet.cli("apply", manifests)
    finally:
        holder.close()
    assert result.returncode == 1
    outcome = _node_results(_json(result))[node.name]
    assert outcome["status"] == "failed" and outcome["step"] == "verify" and outcome["rolled_back"] is True
    assert "bind()" in outcome["error"] and "Address already in use" in outcome["error"]
    assert "rolled back to the previous release and reloaded it" in outcome["error"]
    assert (node.served_revision(), os.readlink(node.config_dir)) == previous
    assert set(_hits(node, "web.example.com")) == {"b0", "b1"}
    for other in fleet.nodes[:2]:
        assert _node_results(_json(result))[other.name]["status"] == "converged"


@pytest.mark.parametrize("fault", ["unreachable", "unknown-host-key", "changed-host-key", "refused-key"])
def test_connection_faults_are_clear_and_leave_other_nodes_alone(
    fleet: Fleet, backends: list[HttpBackend], tmp_path: Path, fault: str
) -> None:
    bad = fleet.nodes[0]
    manifests = fleet.write_manifests(tmp_path / "m", _upstreams(backends))
    path = manifests / "access-nodes.yaml"
    text = path.read_text()
    if fault == "unreachable":
        from tests.services.sshd import free_port

        text = text.replace(f"port: {bad.sshd.port}\n", f"port: {free_port()}\n")
        expected = "connection refused"
    elif fault == "refused-key":
        other = tmp_path / "other_key"
        keygen(other, "not authorised")
        text = text.replace(str(bad.sshd.client_key), str(other))
        expected = "no offered key was accepted"
    elif fault == "unknown-host-key":
        lines = fleet.known_hosts.read_text().splitlines(keepends=True)
        fleet.known_hosts.write_text("".join(line for line in lines if f"]:{bad.sshd.port} " not in line))
        expected = "unknown"
    else:
        fake = tmp_path / "fake_host_key"
        public = keygen(fake, "impostor")
        fleet.known_hosts.write_text(fleet.known_hosts.read_text().replace(bad.sshd.host_public_key, public))
        expected = "changed"
    path.write_text(text)
    result = fleet.cli("apply", manifests, extra=["--connect-timeout", "3"])
    assert result.returncode == 1
    outcome = _node_results(_json(result))[bad.name]
    assert outcome["status"] == "failed" and outcome["step"] == "connect"
    assert expected in outcome["error"].lower(), outcome["error"]
    assert "PRIVATE KEY" not in result.stdout + result.stderr
    assert not bad.config_dir.exists()
    for node in fleet.nodes[1:]:
        assert _node_results(_json(result))[node.name]["status"] == "converged"
        assert set(_hits(node, "api.example.com", 2)) == {"b2"}


def _slow_test_command(node: SimulatedNode, log: Path, seconds: float) -> str:
    """A test_command that records when it runs (to see applies interleave) and takes its time."""
    script = node.prefix / "slow-test.sh"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "start $(date +%s.%N)" >> {log}\n'
        f"sleep {seconds}\n"
        f"{node.nginx_command('-t')}; code=$?\n"
        f'echo "end $(date +%s.%N)" >> {log}\n'
        "exit $code\n"
    )
    script.chmod(0o755)
    return str(script)


def test_two_applies_at_once_never_interleave_on_a_node(
    fleet: Fleet, backends: list[HttpBackend], tmp_path: Path
) -> None:
    logs = {n.name: tmp_path / f"{n.index}.log" for n in fleet.nodes}
    settings = {n.name: {"test_command": _slow_test_command(n, logs[n.name], 0.4)} for n in fleet.nodes}
    first = fleet.write_manifests(tmp_path / "a", _upstreams(backends, weight=2), node_settings=settings)
    second = fleet.write_manifests(tmp_path / "b", _upstreams(backends, weight=3), node_settings=settings)
    # Two CI jobs with their own stores, started together against the same nodes.
    runs = [
        subprocess.Popen(
            fleet.cli_args(
                "--store",
                f"sqlite:///{tmp_path}/{which}.db",
                "--output",
                "json",
                "apply",
                str(m),
                "--known-hosts",
                str(fleet.known_hosts),
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for which, m in (("a", first), ("b", second))
    ]
    outputs = [r.communicate(timeout=120) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], outputs
    for node in fleet.nodes:
        events = [line.split() for line in logs[node.name].read_text().splitlines()]
        assert [e[0] for e in events] == ["start", "end", "start", "end"], events  # one after the other
        assert float(events[1][1]) <= float(events[2][1])
        _consistent(node)
        assert node.served_revision() == node.marker()["revision"]


def test_an_apply_killed_mid_rollout_leaves_each_node_whole_and_the_next_apply_converges(
    fleet: Fleet, backends: list[HttpBackend], tmp_path: Path
) -> None:
    manifests = fleet.write_manifests(tmp_path / "m", _upstreams(backends))
    assert fleet.cli("apply", manifests).returncode == 0
    old_revisions = {n.name: n.served_revision() for n in fleet.nodes}
    settings = {n.name: {"test_command": _slow_test_command(n, tmp_path / f"{n.index}.log", 0.6)} for n in fleet.nodes}
    fleet.write_manifests(manifests, _upstreams(backends, weight=7), node_settings=settings)
    run = subprocess.Popen(
        fleet.cli_args("apply", str(manifests), "--known-hosts", str(fleet.known_hosts), "--forks", "1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not (tmp_path / "1.log").exists() and time.monotonic() < deadline:  # the 2nd node is mid-test
        time.sleep(0.05)
    time.sleep(0.2)
    run.send_signal(signal.SIGKILL)
    run.wait()
    served = {n.name: n.served_revision() for n in fleet.nodes}
    for node in fleet.nodes:
        _consistent(node)  # old or new release, never a mix
        assert served[node.name] in (old_revisions[node.name], node.marker()["revision"])
    assert served[fleet.nodes[2].name] == old_revisions[fleet.nodes[2].name]  # never reached

    result = fleet.cli("apply", manifests)
    assert result.returncode == 0, result.stdout + result.stderr
    for node in fleet.nodes:
        assert node.marker()["state"] == "deployed"
        assert node.served_revision() == node.marker()["revision"] != old_revisions[node.name]
        _consistent(node)


def test_a_saved_plan_is_refused_after_the_desired_state_or_a_node_changed(
    fleet: Fleet, backends: list[HttpBackend], tmp_path: Path
) -> None:
    manifests = fleet.write_manifests(tmp_path / "m", _upstreams(backends))
    assert fleet.cli("apply", manifests).returncode == 0
    fleet.write_manifests(manifests, _upstreams(backends, weight=3))
    saved = tmp_path / "plan.json"
    assert fleet.cli("plan", manifests, extra=["--out", str(saved)]).returncode == 0

    node = fleet.nodes[0]
    hand = node.config_dir / "http" / "web.conf"
    original = hand.read_text()
    hand.write_text(original + "# hand edit\n")
    refused = fleet.cli("apply", saved)
    assert refused.returncode == 1
    assert f"{node.name}: its live configuration changed" in refused.stderr and "nothing was applied" in refused.stderr
    assert all(n.marker()["store_revision"] == 1 for n in fleet.nodes)  # nothing was pushed
    hand.write_text(original)

    other = fleet.write_manifests(tmp_path / "other", _upstreams(backends, weight=9))
    assert fleet.cli("apply", other).returncode == 0  # the store moves on
    refused = fleet.cli("apply", saved)
    assert refused.returncode == 1 and "the store moved since the plan was made" in refused.stderr

    fresh = tmp_path / "fresh.json"
    assert fleet.cli("plan", manifests, extra=["--out", str(fresh)]).returncode == 0
    applied = fleet.cli("apply", fresh)
    assert applied.returncode == 0, applied.stderr
    assert "weight=3" in fleet.nodes[2].live_files()["http/web.conf"]


def test_serial_1_stops_the_rollout_after_the_first_failing_batch(
    fleet: Fleet, backends: list[HttpBackend], tmp_path: Path
) -> None:
    first = fleet.nodes[0]  # nodes are rolled out in the order of their names
    first.write_conf(extra_http="    no_such_directive on;\n")
    manifests = fleet.write_manifests(tmp_path / "m", _upstreams(backends))
    result = fleet.cli("apply", manifests, extra=["--serial", "1"])
    assert result.returncode == 1
    statuses = {r["access_node"]: r["status"] for r in _json(result)["access_nodes"]}
    assert statuses == {first.name: "failed", fleet.nodes[1].name: "skipped", fleet.nodes[2].name: "skipped"}
    assert not fleet.nodes[1].config_dir.exists() and not fleet.nodes[2].config_dir.exists()


def test_limit_converges_only_the_named_nodes_and_an_unknown_name_changes_nothing(
    fleet: Fleet, backends: list[HttpBackend], tmp_path: Path
) -> None:
    manifests = fleet.write_manifests(tmp_path / "m", _upstreams(backends))
    unknown = fleet.cli("apply", manifests, extra=["--limit", "no-such-node:80"])
    assert unknown.returncode == 1
    assert "--limit names unknown access nodes: no-such-node:80" in unknown.stderr
    status = subprocess.run(fleet.cli_args("--output", "json", "status"), capture_output=True, text=True, check=True)
    assert json.loads(status.stdout)["revision"] == 0  # the store was not written either

    target = fleet.nodes[1]
    result = fleet.cli("apply", manifests, extra=["--limit", target.name])
    assert result.returncode == 0, result.stderr
    assert [r["access_node"] for r in _json(result)["access_nodes"]] == [target.name]
    assert target.config_dir.exists()
    assert not fleet.nodes[0].config_dir.exists() and not fleet.nodes[2].config_dir.exists()
    status = json.loads(
        subprocess.run(fleet.cli_args("--output", "json", "status"), capture_output=True, text=True, check=True).stdout
    )
    states = {name: node["state"] for name, node in status["access_nodes"].items()}
    assert states[target.name] == "converged" and states[fleet.nodes[0].name] == "never deployed"


def test_plan_of_an_unreachable_node_exits_1_and_still_plans_the_others(
    fleet: Fleet, backends: list[HttpBackend], tmp_path: Path
) -> None:
    manifests = fleet.write_manifests(tmp_path / "m", _upstreams(backends))
    fleet.nodes[2].sshd.stop()
    result = fleet.cli("plan", manifests, output="text", extra=["--connect-timeout", "2"])
    assert result.returncode == 1
    assert f"{fleet.nodes[2].name}: cannot plan: " in result.stdout and "connection refused" in result.stdout.lower()
    assert f"{fleet.nodes[0].name}: revision (none) -> " in result.stdout
    assert "access nodes: 2 to change, 0 unchanged, 1 could not be planned." in result.stdout


def test_a_push_carrying_an_older_revision_of_the_same_store_is_fenced(
    fleet: Fleet, backends: list[HttpBackend], tmp_path: Path
) -> None:
    import sqlite3

    manifests = fleet.write_manifests(tmp_path / "m", _upstreams(backends, weight=2))
    assert fleet.cli("apply", manifests).returncode == 0
    store_file = tmp_path / "fleet" / "state.db"
    stale = tmp_path / "stale.db"  # a controller that stopped at revision 1 of the same store
    with sqlite3.connect(store_file) as source, sqlite3.connect(stale) as copy:
        source.backup(copy)  # a consistent copy, WAL included
    newer = fleet.write_manifests(tmp_path / "new", _upstreams(backends, weight=3))
    assert fleet.cli("apply", newer).returncode == 0
    live = {n.name: n.served_revision() for n in fleet.nodes}

    late = manifests  # the stale controller still holds revision 1: the same files, nothing to sync
    stale_args = ["--known-hosts", str(fleet.known_hosts)]
    result = subprocess.run(
        fleet.cli_args("--store", f"sqlite:///{stale}", "--output", "json", "apply", str(late), *stale_args),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    for outcome in _json(result)["access_nodes"]:
        assert outcome["status"] == "failed" and outcome["step"] == "plan"
        assert outcome["error"].startswith("fenced: the node runs store revision 2, this push carries 1")
    assert {n.name: n.served_revision() for n in fleet.nodes} == live  # nothing rolled back

    forced = subprocess.run(
        fleet.cli_args("--store", f"sqlite:///{stale}", "--output", "json", "apply", str(late), *stale_args, "--force"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert forced.returncode == 0, forced.stderr
    assert all("weight=2" in n.live_files()["http/web.conf"] for n in fleet.nodes)
