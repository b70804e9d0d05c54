"""`status --detailed-exitcode` gates CI on the fleet (issue 14): `status` exited 0 with a node failed."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.deploy.conftest import address
from tests.services.backends import HttpBackend
from tests.services.fleet import Fleet


def _status(fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(fleet.cli_args("status", *args), capture_output=True, text=True, timeout=60, check=False)


def test_detailed_exitcode_is_2_while_a_node_failed_and_0_once_every_node_converged(
    fleet: Fleet, backends: list[HttpBackend], tmp_path: Path
) -> None:
    nodes = fleet.nodes[:2]
    refuses = {nodes[1].name: {"test_command": "false"}}
    manifests = fleet.write_manifests(
        tmp_path / "m", {"web": [address(backends[0])]}, nodes=nodes, node_settings=refuses
    )
    assert fleet.cli("apply", manifests).returncode == 1
    plain = _status(fleet)
    assert plain.returncode == 0 and f"{nodes[1].name}  failed" in plain.stdout, plain.stdout + plain.stderr
    gated = _status(fleet, "--detailed-exitcode")
    assert gated.returncode == 2, gated.stdout + gated.stderr

    fleet.write_manifests(tmp_path / "m", {"web": [address(backends[0])]}, nodes=nodes)
    assert fleet.cli("apply", manifests).returncode == 0
    gated = _status(fleet, "--detailed-exitcode")
    assert gated.returncode == 0, gated.stdout + gated.stderr
    assert {f"{n.name}  converged" in gated.stdout for n in nodes} == {True}
