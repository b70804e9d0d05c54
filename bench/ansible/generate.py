"""The Ansible peers' inputs, generated from the same workload as obreconcile's manifests.

    upstreams = upstream_workload(100, ports, variant=0)   # 100 upstreams x 10 backends
    write_inventory(out / "inventory.yml", [PeerHost(...), ...])
    write_upstream_vars(out / "upstreams-0.yml", upstreams)
    ansible-playbook -i out/inventory.yml -e @out/upstreams-0.yml -f N bench/ansible/playbook.yml
    ansible-playbook -i out/inventory.yml -e @out/upstreams-0.yml -f N bench/ansible/playbook-one.yml

``variant`` changes the first backend's weight of every upstream (1 or 2), so that going from
one variant to the other changes every upstream's file, for every tool; ``one_changed`` gives
one upstream a weight neither variant has (3), so that going to it changes one upstream and
the next changing run again changes all of them. The inventory holds per host its sshd
(address, port, user, key, known_hosts), its nginx paths and commands; bench/apply.py runs the
playbooks with ANSIBLE_CONFIG=bench/ansible/ansible.cfg. ``PeerHost`` and the workload serve
the pyinfra peer too (bench/pyinfra/generate.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PLAYBOOK = Path(__file__).with_name("playbook.yml")  # one file per upstream
PLAYBOOK_ONE = Path(__file__).with_name("playbook-one.yml")  # every upstream in one file
CONFIG = Path(__file__).with_name("ansible.cfg")
TEMPLATES = Path(__file__).with_name("templates")
BACKENDS_PER_UPSTREAM = 10


@dataclass(frozen=True)
class PeerHost:
    """One access node as a peer tool (Ansible, pyinfra) sees it."""

    name: str
    ssh_host: str
    ssh_port: int
    ssh_user: str
    private_key: Path
    known_hosts: Path
    config_dir: Path  # the include directory's parent: files go to config_dir/http/
    listen_address: str
    http_port: int
    test_command: str
    reload_command: str
    # The one-file play's whole-configuration test of a candidate before it replaces the live
    # file: the candidate is copied to candidate_file, which validate_command's nginx.conf
    # includes in place of the live include directory (bench/apply.py writes that nginx.conf).
    candidate_file: str = ""
    validate_command: str = ""


def upstream_workload(count: int, ports: Sequence[int], variant: int = 0) -> list[dict[str, Any]]:
    """``count`` http upstreams, each with a backend per port (127.0.0.1:PORT, nothing listening)."""
    upstreams = []
    for u in range(count):
        name = f"up-{u:05d}"
        servers = [
            {
                "hostname": f"127.0.0.1:{port}",
                "address": f"127.0.0.1:{port}",
                "weight": (1 + variant % 2) if b == 0 else b % 5 + 1,
                "max_fails": 1,
                "fail_timeout": "10s",
            }
            for b, port in enumerate(ports)
        ]
        upstreams.append({"name": name, "server_names": [f"{name}.example.com"], "servers": servers})
    return upstreams


ONE_WEIGHT = 3  # neither variant's first weight (1 or 2)


def one_changed(upstreams: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``upstreams`` with the first upstream's first backend weighted ONE_WEIGHT: one upstream's
    file differs from either variant's."""
    first = dict(upstreams[0])
    first["servers"] = [{**first["servers"][0], "weight": ONE_WEIGHT}, *first["servers"][1:]]
    return [first, *upstreams[1:]]


def write_inventory(path: Path, hosts: Sequence[PeerHost]) -> Path:
    """A YAML inventory: group ``access_nodes`` with every host's connection and nginx settings."""
    inventory = {
        "all": {
            "children": {
                "access_nodes": {
                    "hosts": {h.name: _host_vars(h) for h in hosts},
                    "vars": {"ansible_python_interpreter": "/usr/bin/python3", "ansible_ssh_pipelining": True},
                }
            }
        }
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return path


def _host_vars(host: PeerHost) -> dict[str, Any]:
    candidate = {"candidate_file": host.candidate_file, "nginx_validate_command": host.validate_command}
    return {
        "ansible_host": host.ssh_host,
        "ansible_port": host.ssh_port,
        "ansible_user": host.ssh_user,
        "ansible_ssh_private_key_file": str(host.private_key),
        "ansible_ssh_common_args": f"-o UserKnownHostsFile={host.known_hosts} -o IdentitiesOnly=yes",
        "config_dir": str(host.config_dir),
        "listen_address": host.listen_address,
        "http_port": host.http_port,
        "nginx_test_command": host.test_command,
        "nginx_reload_command": host.reload_command,
        **(candidate if host.validate_command else {}),
    }


def write_upstream_vars(path: Path, upstreams: Sequence[dict[str, Any]]) -> Path:
    """The ``upstreams`` variable the playbook loops over (a vars file for ``-e @FILE``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"upstreams": list(upstreams)}, sort_keys=False))
    return path
