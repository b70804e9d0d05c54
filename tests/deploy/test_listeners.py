"""Verify every listener (issue 14): a tcp upstream must accept connections after the reload.

Seen on real nginx: with no `stream` include in the access node's nginx.conf, apply said
`ok ... converged` for a tcp upstream nothing listened for (verify probed only the http
default server). Now verify connects to every tcp upstream's port on the node; one that
accepts nothing fails the node with the include line to add, and the node is rolled back.
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any

from tests.deploy.conftest import address
from tests.services.backends import EchoBackend, HttpBackend
from tests.services.fleet import Fleet, SimulatedNode
from tests.services.sshd import free_port


def _echo(host: str, port: int) -> bytes:
    with socket.create_connection((host, port), timeout=5) as connection:
        connection.sendall(b"ping\n")
        return connection.recv(16)


def _reload(node: SimulatedNode) -> None:
    subprocess.run(node.nginx_command("-s", "reload").split(), check=True, capture_output=True, timeout=30)


def test_a_tcp_upstream_nothing_listens_for_fails_the_node_naming_the_stream_include(
    fleet: Fleet, backends: list[HttpBackend], tmp_path: Path
) -> None:
    with_stream, without = fleet.nodes[:2]
    include = f"    include {without.config_dir}/stream/*.conf;\n"
    without.conf.write_text(without.conf.read_text().replace(include, ""))
    _reload(without)
    manifests = fleet.write_manifests(tmp_path / "m", {"web": [address(backends[0])]}, nodes=[with_stream, without])
    first = fleet.cli("apply", manifests)
    assert first.returncode == 0, first.stdout + first.stderr
    before = without.served_revision()

    echo = EchoBackend()
    try:
        port = free_port()
        db = {"listen": {"protocol": "tcp", "port": port}, "nodes": [{"hostname": f"127.0.0.1:{echo.port}"}]}
        upstreams: dict[str, Any] = {"web": [address(backends[0])], "db": db}
        fleet.write_manifests(tmp_path / "m", upstreams, nodes=[with_stream, without])
        result = fleet.cli("apply", manifests)
        assert result.returncode == 1, result.stdout + result.stderr
        nodes = {r["access_node"]: r for r in json.loads(result.stdout)["access_nodes"]}
        assert nodes[with_stream.name]["status"] == "converged"
        assert _echo(with_stream.address, port) == b"ping\n"
        failed = nodes[without.name]
        assert (failed["status"], failed["step"], failed["rolled_back"]) == ("failed", "verify", True), failed
        assert f"nothing accepts connections on {without.address}:{port} (tcp upstreams)" in failed["error"]
        assert f"`stream {{ include {without.config_dir}/stream/*.conf; }}`" in failed["error"], failed["error"]
        assert without.served_revision() == before  # rolled back, files and nginx
        assert without.marker()["revision"] == before

        without.conf.write_text(without.conf.read_text().replace("stream {\n", "stream {\n" + include))
        _reload(without)
        again = fleet.cli("apply", manifests)
        assert again.returncode == 0, again.stdout + again.stderr
        assert _echo(without.address, port) == b"ping\n"
    finally:
        echo.stop()
