"""Coexist with the operator's nginx.conf (issue 14): the server name hash directives.

Seen on real nginx: past 512 server names the rendered ``http/_default.conf`` sets
``server_names_hash_max_size`` and ``server_names_hash_bucket_size``, so an nginx.conf that sets
them already (common on hosts with many virtual hosts) failed ``nginx -t`` with
``"server_names_hash_max_size" directive is duplicate`` on every apply. Now the access node's
own configuration is read (only when the render sets one of them) and what it sets is left out;
a value too small for the names refuses that node's push with the value needed.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.deploy.apply import ApplySettings, NodeStatus, apply_node
from reconciler.deploy.plan import StoreRef, node_model
from reconciler.manifest.validate import load_desired_state
from reconciler.render.renderer import Renderer
from reconciler.transport.base import CommandResult
from reconciler.transport.held import HeldCommand
from reconciler.transport.local import LocalTransport
from tests.deploy.conftest import address
from tests.services.backends import HttpBackend
from tests.services.fleet import Fleet, SimulatedNode
from tests.services.fleet_fixtures import fleet_under_test

NAMES_PER_UPSTREAM = 100  # the schema's most server names of one upstream


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Fleet]:
    """Two access nodes, each its own sshd and nginx."""
    yield from fleet_under_test(tmp_path, 2)


def named(count: int, backend: HttpBackend) -> dict[str, Any]:
    """Upstreams with ``count`` server names in all (``h<i>-<j>.example.com``), one backend each."""
    return {
        f"n{i}": {
            "listen": {"server_names": [f"h{i}-{j}.example.com" for j in range(NAMES_PER_UPSTREAM)]},
            "nodes": [{"hostname": address(backend)}],
        }
        for i in range(count // NAMES_PER_UPSTREAM)
    }


def set_hash(node: SimulatedNode, max_size: int | None, bucket_size: int | None) -> int:
    """Write the node's nginx.conf with these hash directives in http {} and reload nginx; the
    line ``server_names_hash_max_size`` is on (0: not set)."""
    lines = [f"    server_names_hash_bucket_size {bucket_size};\n"] if bucket_size else []
    lines += [f"    server_names_hash_max_size {max_size};\n"] if max_size else []
    node.write_conf("".join(lines))
    subprocess.run(node.nginx_command("-s", "reload").split(), check=True, capture_output=True, timeout=30)
    text = node.conf.read_text().splitlines()
    return next((i + 1 for i, line in enumerate(text) if "server_names_hash_max_size" in line), 0)


def by_node(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    return {r["access_node"]: r for r in json.loads(result.stdout)["access_nodes"]}


def nginx_test(node: SimulatedNode) -> subprocess.CompletedProcess[str]:
    return subprocess.run(node.nginx_command("-t").split(), capture_output=True, text=True, timeout=60, check=False)


def assert_serves(node: SimulatedNode, names: int, backend: HttpBackend) -> None:
    """nginx -t passes without a hash warning and the first, a middle and the last name answer."""
    tested = nginx_test(node)
    assert tested.returncode == 0 and "server_names_hash" not in tested.stderr, tested.stderr
    last = names // NAMES_PER_UPSTREAM - 1
    for host in ("h0-0.example.com", f"h{last // 2}-57.example.com", f"h{last}-99.example.com"):
        assert node.get(host) == (200, backend.identity), host
    assert node.get("unknown.example.com")[0] == 404


def default_conf(node: SimulatedNode) -> str:
    return (node.config_dir / "http" / "_default.conf").read_text()


def record(node: SimulatedNode) -> dict[str, Any]:
    return dict(json.loads((node.config_dir / ".obreconcile" / "operator.json").read_text()))


@pytest.mark.parametrize("names", [1000, pytest.param(10_000, marks=pytest.mark.slow)])
def test_an_nginx_conf_that_sets_both_hash_directives_converges(
    pair: Fleet, backends: list[HttpBackend], tmp_path: Path, names: int
) -> None:
    sets, neither = pair.nodes
    line = set_hash(sets, 16384, 128)
    manifests = pair.write_manifests(tmp_path / "m", named(names, backends[0]))
    result = pair.cli("apply", manifests, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert {n: r["status"] for n, r in by_node(result).items()} == {sets.name: "converged", neither.name: "converged"}
    assert "server_names_hash" not in default_conf(sets)
    assert "server_names_hash_bucket_size 128;" in default_conf(neither)  # today's behaviour
    assert f"server_names_hash_max_size {1024 if names == 1000 else 16384};" in default_conf(neither)
    assert record(sets)["settings"]["server_names_hash_max_size"] == ["16384", str(sets.conf), line]
    assert record(neither)["settings"] == {}  # read, and recorded: it sets neither
    for node in pair.nodes:
        assert_serves(node, names, backends[0])

    reloads = [n.reloads() for n in pair.nodes]
    again = pair.cli("apply", manifests, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert {r["status"] for r in by_node(again).values()} == {"unchanged"}
    assert [n.reloads() for n in pair.nodes] == reloads


def test_values_too_small_refuse_that_node_with_the_value_needed_and_follow_the_operators_edits(
    pair: Fleet, backends: list[HttpBackend], tmp_path: Path
) -> None:
    small, other = pair.nodes
    line = set_hash(small, 512, None)
    manifests = pair.write_manifests(tmp_path / "m", named(1000, backends[0]))
    result = pair.cli("apply", manifests, output="text")
    assert result.returncode == 1, result.stdout + result.stderr
    expected = (
        f"nginx.conf sets server_names_hash_max_size 512 ({small.conf}:{line}); "
        "1,000 server names need at least 1024: raise it or remove it"
    )
    assert f"FAILED {small.name} at plan: {expected}" in result.stdout, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert not small.config_dir.exists() and not small.releases.exists()  # untouched
    assert small.reloads() == 1  # set_hash's own
    assert_serves(other, 1000, backends[0])

    plan = pair.cli("plan", manifests)
    assert plan.returncode == 1 and expected in plan.stdout, plan.stdout + plan.stderr

    set_hash(small, 1024, None)  # raised: the operator's value stays, obreconcile sets the bucket
    raised = pair.cli("apply", manifests)
    assert raised.returncode == 0, raised.stdout + raised.stderr
    assert "server_names_hash_max_size" not in default_conf(small)
    assert "server_names_hash_bucket_size 128;" in default_conf(small)
    assert_serves(small, 1000, backends[0])

    set_hash(small, None, None)  # removed: the record is stale, obreconcile sets both again
    removed = pair.cli("apply", manifests)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert by_node(removed)[small.name]["status"] == "converged"
    assert "server_names_hash_max_size 1024;" in default_conf(small)
    assert record(small)["settings"] == {}
    assert_serves(small, 1000, backends[0])


class Counting(LocalTransport):
    """A local transport (the test fleet's files are on this machine) counting round trips."""

    def __init__(self) -> None:
        super().__init__("counting")
        self.trips: list[str] = []

    def _execute(self, line: str, input: bytes | None, timeout: float | None) -> CommandResult:
        self.trips.append("run")
        return super()._execute(line, input, timeout)

    def _hold(self, line: str) -> HeldCommand:
        self.trips.append("hold")
        return super()._hold(line)


def test_a_no_op_apply_reads_the_operators_configuration_only_after_it_changed(
    pair: Fleet, backends: list[HttpBackend], tmp_path: Path
) -> None:
    node = pair.nodes[0]
    set_hash(node, 16384, 128)
    manifests = pair.write_manifests(tmp_path / "m", named(1000, backends[0]), nodes=[node])
    first = pair.cli("apply", manifests)
    assert first.returncode == 0, first.stdout + first.stderr
    state = load_desired_state([manifests])
    access_node = state.access_nodes[node.name]
    renderer = Renderer()

    def no_op() -> list[str]:
        transport = Counting()
        rendered = renderer.render_access_node(state, access_node)
        model = node_model(state, access_node)
        result = apply_node(access_node, rendered, model, transport, StoreRef("other", 1), ApplySettings())
        assert result.status == NodeStatus.UNCHANGED, result
        return transport.trips

    assert no_op() == ["hold"]  # the lock, with the facts and the record's check: one round trip
    node.conf.write_text(node.conf.read_text() + "# edited\n")
    assert no_op() == ["hold", "run", "run"]  # nginx.conf read again (no include), the record rewritten
    assert no_op() == ["hold"]
