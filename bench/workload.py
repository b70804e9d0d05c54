"""Generate a large, valid manifest workload for the benchmarks.

    python -m bench.workload DIR [--upstreams 10000] [--nodes 10] [--access-nodes 50]

Layout: one file per team (100 upstreams each, with the team's Group and Check), and one
file with every access node; each upstream is served by two access nodes. Importable:
``write_workload(directory, upstreams, nodes, access_nodes) -> list[Path]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

UPSTREAMS_PER_TEAM = 100


def _team_file(team: int, first: int, count: int, nodes: int) -> str:
    out = [
        f"apiVersion: openbalancer/v1\nkind: Group\nname: team-{team:03d}\nglobal_permissions: [GLOBAL_RO]\n",
        f"apiVersion: openbalancer/v1\nkind: Check\nname: check-{team:03d}\nowner: team-{team:03d}\n"
        'base_check: http\nstring: "GET /healthz 200"\ninterval: 2s\n',
    ]
    for u in range(first, first + count):
        lines = [
            "apiVersion: openbalancer/v1",
            "kind: Upstream",
            f"name: up-{u:05d}",
            f"owner: team-{team:03d}",
            "min_servers: 2",
            f"checks: [check-{team:03d}]",
            "listen:",
            "  protocol: http",
            f"  server_names: [up-{u:05d}.example.com, www.up-{u:05d}.example.com]",
            "nodes:",
        ]
        for n in range(nodes):
            lines += [
                f"  - hostname: 10.{u // 256 % 256}.{u % 256}.{n + 1}:8080",
                f"    weight: {n % 5 + 1}",
                "    max_fails: 3",
                "    fail_timeout: 10s",
                f"    failover: {1 if n >= nodes - 2 else 0}",
            ]
        lines += ["acl:", f"  - group_name: team-{(team + 1) % 100:03d}", "    rule: READ"]
        out.append("\n".join(lines) + "\n")
    return "---\n".join(out)


def _access_nodes_file(upstreams: int, access_nodes: int) -> str:
    docs = []
    for a in range(access_nodes):
        served = [f"up-{u:05d}" for u in range(upstreams) if u % access_nodes in (a, (a + 1) % access_nodes)]
        docs.append(
            "apiVersion: openbalancer/v1\nkind: AccessNode\n"
            f"name: lb{a:03d}.example.com:80\nowner: team-000\n"
            f"upstreams: [{', '.join(served)}]\n"
            f"connection:\n  type: ssh\n  host: 127.0.0.1\n  port: {2200 + a}\n"
        )
    return "---\n".join(docs)


def write_workload(directory: Path, upstreams: int = 10_000, nodes: int = 10, access_nodes: int = 50) -> list[Path]:
    """Write the workload's manifest files into ``directory``; return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for team, first in enumerate(range(0, upstreams, UPSTREAMS_PER_TEAM)):
        path = directory / f"team-{team:03d}.yaml"
        path.write_text(_team_file(team, first, min(UPSTREAMS_PER_TEAM, upstreams - first), nodes))
        files.append(path)
    teams = len(files)
    for team in range(teams, 100):  # ACLs name the next team: make sure it exists
        path = directory / f"team-{team:03d}.yaml"
        path.write_text(f"apiVersion: openbalancer/v1\nkind: Group\nname: team-{team:03d}\n")
        files.append(path)
    path = directory / "access-nodes.yaml"
    path.write_text(_access_nodes_file(upstreams, access_nodes))
    files.append(path)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--upstreams", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--access-nodes", type=int, default=50)
    args = parser.parse_args()
    files = write_workload(args.directory, args.upstreams, args.nodes, args.access_nodes)
    print(f"wrote {len(files)} files to {args.directory}")


if __name__ == "__main__":
    main()
