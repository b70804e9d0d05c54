"""serve settles its pushes against the access node's own nginx.conf the way apply does (issue 14).

One rule, one code path (``apply_node``): an nginx.conf that sets the server name hash
directives gets a ``_default.conf`` without them from serve as from apply (byte for byte: an
apply beside serve changes nothing), and a value lowered below what the names need is found by
serve's drift check and refused with the value needed, the node left on its last release.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.serve.conftest import Backend, Serve, serving, wait_for, write_manifests
from tests.services.fleet import Fleet, SimulatedNode


def named(count: int, backend: Backend) -> dict[str, Any]:
    """Upstreams with ``count`` server names in all, a hundred each (the schema's most)."""
    return {
        f"n{i}": {
            "listen": {"server_names": [f"h{i}-{j}.example.com" for j in range(100)]},
            "nodes": [{"hostname": backend.hostname}],
        }
        for i in range(count // 100)
    }


def set_hash(node: SimulatedNode, max_size: int) -> None:
    node.write_conf(f"    server_names_hash_bucket_size 128;\n    server_names_hash_max_size {max_size};\n")
    subprocess.run(node.nginx_command("-s", "reload").split(), check=True, capture_output=True, timeout=30)


def test_serve_and_apply_settle_alike_and_serve_refuses_a_value_lowered_below_the_need(
    fleet: Fleet, backends: list[Backend], serve: Callable[..., Serve], tmp_path: Path
) -> None:
    sets, neither = fleet.nodes
    set_hash(sets, 2048)
    manifests = write_manifests(fleet, tmp_path / "m", named(1000, backends[0]))
    first = fleet.cli("apply", manifests)
    assert first.returncode == 0, first.stdout + first.stderr
    default = (sets.config_dir / "http" / "_default.conf").read_text()
    assert "server_names_hash" not in default
    assert "server_names_hash_max_size 1024;" in (neither.config_dir / "http" / "_default.conf").read_text()
    files = [n.live_files() for n in fleet.nodes]
    reloads = [n.reloads() for n in fleet.nodes]

    controller = serve("--drift-interval", "1")
    controller.wait_converged()  # serve rendered and settled the same files: nothing to push
    wait_for(lambda: serving(fleet), 10, "nginx serving the pushed revision")
    assert [n.live_files() for n in fleet.nodes] == files
    assert [n.reloads() for n in fleet.nodes] == reloads

    again = fleet.cli("apply", manifests)
    assert again.returncode == 0, again.stdout + again.stderr
    assert {r["status"] for r in json.loads(again.stdout)["access_nodes"]} == {"unchanged"}
    assert [n.live_files() for n in fleet.nodes] == files
    assert [n.reloads() for n in fleet.nodes] == reloads

    set_hash(sets, 512)  # the operator lowers it: serve's next drift check reads it again
    line = sets.conf.read_text().splitlines().index("    server_names_hash_max_size 512;") + 1
    expected = (
        f"nginx.conf sets server_names_hash_max_size 512 ({sets.conf}:{line}); "
        "1,000 server names need at least 1024: raise it or remove it"
    )

    def refused() -> bool:
        nodes = {n["name"]: n for n in controller.status().get("nodes", [])}
        return expected in nodes.get(sets.name, {}).get("error", "")

    wait_for(refused, 20, lambda: f"serve to refuse {sets.name}\n{controller.tail()}")
    assert [n.live_files() for n in fleet.nodes] == files  # left on its last release
    assert sets.reloads() == reloads[0] + 1  # set_hash's own
