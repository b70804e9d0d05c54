"""Benchmark detection-to-converged latency: a backend is killed, how long until no node routes to it?

    .venv/bin/python -m bench.convergence [--nodes 5] [--trials 50] [--interval 1] [--fall 3] [--rise 2]

A fleet of real access nodes (tests/services/fleet.py: sshd + nginx each, reached over SSH),
one upstream of four HTTP backends with an http check (``--interval``, timeout 1s, rise, fall),
and a real ``obreconcile serve`` (default coalescing window, 1 s). Each trial kills one
backend (its listener and open connections closed) and measures the time until every access
node's live configuration renders it ``down`` and that node's nginx answers the revision of
those files (it was reloaded); then the backend is restarted and the next trial waits until
it is back everywhere. Printed: median, p90, p99 and max over the trials, against the target
p99 <= fall x interval + 1 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.services.backends import RestartableBackend
from tests.services.fleet import ROOT, SimulatedNode, start_fleet
from tests.services.sshd import free_port


def role(node: SimulatedNode, hostname: str) -> str:
    path = node.config_dir / "http" / "web.conf"
    text = path.read_text() if path.exists() else ""
    for line in text.splitlines():
        if line.rstrip().endswith(f"# {hostname}"):
            return "down" if " down;" in line else "enabled"
    return "missing"


def everywhere(nodes: list[SimulatedNode], hostname: str, wanted: str) -> bool:
    """Every node renders ``hostname`` as ``wanted`` and its nginx serves those files."""
    for node in nodes:
        if role(node, hostname) != wanted:
            return False
        marker = node.marker().get("revision")
        if not marker or node.served_revision() != marker:
            return False
    return True


def wait(condition: Any, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise SystemExit(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)
    return time.monotonic() - started


def manifests(
    directory: Path, nodes: list[SimulatedNode], backends: list[RestartableBackend], args: argparse.Namespace
) -> Path:
    api = "openbalancer/v1"
    docs: list[dict[str, Any]] = [
        {"apiVersion": api, "kind": "Group", "name": "ops"},
        {
            "apiVersion": api,
            "kind": "Check",
            "name": "web-http",
            "owner": "ops",
            "base_check": "http",
            "string": "GET / 200",
            "interval": f"{int(args.interval * 1000)}ms",
            "timeout": "1s",
            "rise": args.rise,
            "fall": args.fall,
        },
        {
            "apiVersion": api,
            "kind": "Upstream",
            "name": "web",
            "owner": "ops",
            "checks": ["web-http"],
            "listen": {"server_names": ["web.example.com"]},
            "nodes": [{"hostname": b.hostname} for b in backends],
        },
        *[n.manifest(["web"]) for n in nodes],
    ]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "all.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return directory


def ready(port: int) -> bool:
    """The controller is master and every access node converged (from its /metrics)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return False
    converged = [line for line in text.splitlines() if line.startswith("obreconcile_access_node_converged{")]
    return "obreconcile_master 1.0" in text and bool(converged) and all(c.endswith(" 1.0") for c in converged)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--rise", type=int, default=2)
    parser.add_argument("--fall", type=int, default=3)
    args = parser.parse_args()
    backends = [RestartableBackend(f"b{i}") for i in range(4)]
    with tempfile.TemporaryDirectory(prefix="bench-convergence-") as tmp:
        fleet = start_fleet(Path(tmp) / "fleet", args.nodes)
        serve: subprocess.Popen[bytes] | None = None
        try:
            applied = fleet.cli("apply", manifests(Path(tmp) / "m", fleet.nodes, backends, args))
            if applied.returncode != 0:
                raise SystemExit(applied.stdout + applied.stderr)
            port = free_port()
            log = Path(tmp) / "serve.log"
            with log.open("wb") as out:
                serve = subprocess.Popen(
                    [*fleet.cli_args("serve", "--listen", f"127.0.0.1:{port}", "--known-hosts", fleet.known_hosts)],
                    cwd=ROOT,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            wait(lambda: ready(port), 120, "serve to be master with every node converged")
            time.sleep(2 * args.interval)
            latencies = []
            for trial in range(args.trials):
                backend = backends[trial % len(backends)]
                backend.stop()
                latencies.append(wait(lambda b=backend: everywhere(fleet.nodes, b.hostname, "down"), 60, "down"))
                backend.start()
                wait(lambda b=backend: everywhere(fleet.nodes, b.hostname, "enabled"), 60, "back")
                print(f"trial {trial + 1:3d}: {latencies[-1]:.2f}s", file=sys.stderr)
        finally:
            if serve is not None and serve.poll() is None:
                serve.terminate()
                serve.wait(30)
            fleet.stop()
            for backend in backends:
                backend.stop()
    target = args.fall * args.interval + 1
    print(f"detection-to-converged over {len(latencies)} trials, {args.nodes} access nodes over SSH,")
    print(f"check interval {args.interval:g}s, rise {args.rise}, fall {args.fall}, coalescing window 1s:")
    print(f"  median {statistics.median(latencies):.2f}s  p90 {percentile(latencies, 90):.2f}s  ", end="")
    print(f"p99 {percentile(latencies, 99):.2f}s  max {max(latencies):.2f}s  (target p99 <= {target:g}s)")
    print(f"  machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
