"""Benchmark detection-to-converged latency: a backend is killed, how long until no node routes to it?

    .venv/bin/python -m bench.convergence [--nodes 5] [--trials 50] [--interval 1] [--fall 3] [--rise 2]
        [--upstreams N] [--floor-every K] [--timeout SECONDS] [--profile FILE]

A fleet of real access nodes (tests/services/fleet.py: sshd + nginx each, reached over SSH),
one upstream ``web`` of four HTTP backends with an http check (``--interval``, timeout 1s,
rise, fall), and a real ``obreconcile serve`` (default coalescing window, 1 s). Each trial
kills one backend of ``web`` (its listener and open connections closed) and measures the time
until every access node's live configuration renders it ``down`` and that node's nginx answers
the revision of those files (it was reloaded); then the backend is restarted and the next
trial waits until it is back everywhere. Printed: median, p90, p99 and max over the trials,
against the target p99 <= fall x interval + 1 s.

``--upstreams N`` (issue 18: serve at 10,000 upstreams x 5 access nodes) adds N http upstreams
of 10 backends each (127.0.0.1:PORT, nothing listening, no checks: bench/ansible/generate.py's
workload), every one on every access node beside ``web``. Then the floor is measured beside
the trials, interleaved (before the first trial and after every ``--floor-every`` K trials,
when every node is back): on every node at once, over a reused connection of obreconcile's own
SSH transport (serve keeps its connections open), the node's ``nginx -t && nginx -s reload``
of the configuration it runs, until that node's nginx master has started new workers (the
reload has parsed the configuration and serves it). The target becomes p99 <= fall x interval
+ 1 s + the floor's median (the strict reading: fall x interval is already detection's worst
case; the floor's p99 is printed beside it as information). Per trial the bench also prints
serve's CPU and the nodes' CPU (sshd, nginx and their children, from /proc) over the trial.

``--profile FILE`` records serve with ``py-spy record`` (CPU samples, no idle ones) from the
first trial to the last and prints where serve's CPU went. The bench prints the load average
before and after: the machine is shared. The bench is not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from bench.ansible.generate import BACKENDS_PER_UPSTREAM, upstream_workload
from bench.apply import PY_SPY, children, nginx_floor_command, nginx_workers, process_cpu
from reconciler.deploy.layout import MARKER
from reconciler.transport import ConnectionPool, SSHSettings, Transport, open_transport
from tests.services.backends import RestartableBackend
from tests.services.fleet import ROOT, Fleet, SimulatedNode, start_fleet
from tests.services.sshd import free_port, free_ports

SPY_RATE = 100
Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def role(node: SimulatedNode, hostname: str) -> str:
    path = node.config_dir / "http" / "web.conf"
    text = path.read_text() if path.exists() else ""
    for line in text.splitlines():
        if line.rstrip().endswith(f"# {hostname}"):
            return "down" if " down;" in line else "enabled"
    return "missing"


class Markers:
    """Each node's marker revision, parsed again only when the live marker file changed (at
    10,000 upstreams it holds 10,000 digests: parsing it every poll would load the machine)."""

    def __init__(self) -> None:
        self._seen: dict[int, tuple[tuple[int, int, int], str]] = {}

    def revision(self, node: SimulatedNode) -> str:
        path = node.config_dir / MARKER
        try:
            stat = path.stat()
        except OSError:
            return ""
        key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        seen = self._seen.get(node.index)
        if seen is None or seen[0] != key:
            try:
                revision = str(json.loads(path.read_bytes()).get("revision") or "")
            except (OSError, ValueError):
                return ""  # being replaced: the next poll reads it
            seen = self._seen[node.index] = (key, revision)
        return seen[1]


def everywhere(nodes: list[SimulatedNode], hostname: str, wanted: str, markers: Markers) -> bool:
    """Every node renders ``hostname`` as ``wanted`` and its nginx serves those files."""
    for node in nodes:
        if role(node, hostname) != wanted:
            return False
        marker = markers.revision(node)
        if not marker or node.served_revision() != marker:
            return False
    return True


def wait(condition: Callable[[], bool], timeout: float, what: str, poll: float = 0.01) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise SystemExit(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)
    return time.monotonic() - started


def manifests(
    directory: Path, nodes: list[SimulatedNode], backends: list[RestartableBackend], args: argparse.Namespace
) -> Path:
    api = "openbalancer/v1"
    extra = upstream_workload(args.upstreams, free_ports(BACKENDS_PER_UPSTREAM))
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
        *[
            {
                "apiVersion": api,
                "kind": "Upstream",
                "name": u["name"],
                "owner": "ops",
                "listen": {"server_names": u["server_names"]},
                "nodes": [{"hostname": s["hostname"], "weight": s["weight"]} for s in u["servers"]],
            }
            for u in extra
        ],
        *[n.manifest(["web", *(u["name"] for u in extra)]) for n in nodes],
    ]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "all.yaml").write_text(yaml.dump_all(docs, Dumper=Dumper, sort_keys=False))
    return directory


def ready(port: int) -> bool:
    """The controller is master and every access node converged (from its /metrics)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    except OSError:
        return False
    converged = [line for line in text.splitlines() if line.startswith("obreconcile_access_node_converged{")]
    return "obreconcile_master 1.0" in text and bool(converged) and all(c.endswith(" 1.0") for c in converged)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def spread(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):.2f}s  p90 {percentile(values, 90):.2f}s  "
        f"p99 {percentile(values, 99):.2f}s  max {max(values):.2f}s"
    )


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# -- the floor: nginx -t and a reload of the same configuration on every node -----------------


def tree_cpu(pids: list[int]) -> float:
    """CPU seconds of ``pids`` and every live descendant, each with the children it reaped: every
    process of the tree counted once (serve's connections stay open, so the per-connection sshd
    that reaps a push's nginx -t is alive and the listener has not reaped it)."""
    total, todo = 0.0, list(pids)
    while todo:
        pid = todo.pop()
        total += process_cpu(pid)
        todo.extend(children(pid))
    return total


class Floor:
    """``nginx -t && nginx -s reload`` on every node at once, over obreconcile's SSH transport on
    connections opened once (as serve holds them); a node's time ends when its nginx master has
    started workers that were not there before (the reload parsed the configuration)."""

    def __init__(self, fleet: Fleet) -> None:
        self.nodes = fleet.nodes
        self.pool = ConnectionPool()
        settings = SSHSettings(known_hosts=fleet.known_hosts, allow_agent=False)
        self.transports: dict[int, Transport] = {
            n.index: open_transport(n.sshd.access_node(n.name), settings, pool=self.pool) for n in self.nodes
        }
        self.samples: list[float] = []
        self.nodes_cpu: list[float] = []

    def _one(self, node: SimulatedNode, started: float) -> float:
        before = nginx_workers(node)
        self.transports[node.index].run(nginx_floor_command(node), check=True, timeout=600)
        while not nginx_workers(node) - before:
            if time.perf_counter() - started > 600:
                raise SystemExit(f"{node.name}: nginx started no new worker within 600 s of the floor's reload")
            time.sleep(0.005)
        return time.perf_counter() - started

    def measure(self, node_pids: list[int]) -> float:
        cpu = tree_cpu(node_pids)
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=len(self.nodes)) as pool:
            wall = max(pool.map(lambda n: self._one(n, started), self.nodes))
        time.sleep(0.3)  # the old workers exit, sshd reaps the session
        self.samples.append(wall)
        self.nodes_cpu.append(tree_cpu(node_pids) - cpu)
        return wall

    def close(self) -> None:
        self.pool.close()


# -- profile ----------------------------------------------------------------------------------


def print_profile(path: Path, seconds: float) -> None:
    """Where serve's CPU went, from py-spy's raw stacks (CPU samples only, every thread)."""
    inclusive: dict[str, int] = {}
    leaf: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = stack.split(";")
        seen: set[str] = set()
        for frame in frames:
            name, _, where = frame.partition(" (")
            where = where.rstrip(")")
            if "reconciler/" in where:
                short = f"{name} ({where.split('reconciler/')[-1].split(':')[0]})"
                if short not in seen:
                    seen.add(short)
                    inclusive[short] = inclusive.get(short, 0) + samples
        name, _, where = frames[-1].partition(" (")
        where = where.rstrip(")").split("/")[-1]
        leaf[f"{name} ({where})"] = leaf.get(f"{name} ({where})", 0) + samples
    print(f"-- serve's CPU, py-spy over {seconds:.0f}s of trials: {total / SPY_RATE:.1f} CPU-seconds sampled --")
    print("  inclusive, by obreconcile function:")
    for name, samples in sorted(inclusive.items(), key=lambda item: -item[1])[:30]:
        print(f"    {samples / SPY_RATE:7.2f}s  {100 * samples / max(total, 1):5.1f}%  {name}")
    print("  self (leaf frames):")
    for name, samples in sorted(leaf.items(), key=lambda item: -item[1])[:15]:
        print(f"    {samples / SPY_RATE:7.2f}s  {100 * samples / max(total, 1):5.1f}%  {name}")


# -- the run ----------------------------------------------------------------------------------


def interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    # SIGTERM, and SIGINT even when started in the background (which ignores it), stop the run
    # through its cleanup: serve, every sshd and nginx, by PID
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--rise", type=int, default=2)
    parser.add_argument("--fall", type=int, default=3)
    parser.add_argument(
        "--upstreams", type=int, default=0, help="more http upstreams (10 backends each, unchecked) on every node"
    )
    parser.add_argument(
        "--floor-every", type=int, default=1, help="with --upstreams: measure the floor after every K trials"
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds to wait for a trial's state (60; 600 with --upstreams)"
    )
    parser.add_argument(
        "--profile", type=Path, default=None, help="record serve with py-spy during the trials (raw stacks to FILE)"
    )
    parser.add_argument(
        "--verify-timeout",
        type=float,
        default=None,
        help="apply's and serve's --verify-timeout (default 10, theirs; 300 with --upstreams: 5 nginx parsing "
        "10,000 upstreams at once on 2 cores take longer than 10 s to reload)",
    )
    args = parser.parse_args()
    timeout = args.timeout or (600.0 if args.upstreams else 60.0)
    verify = ["--verify-timeout", str(args.verify_timeout or (300.0 if args.upstreams else 10.0))]
    if args.profile is not None and not PY_SPY.exists():
        parser.error(f"{PY_SPY} is missing: make setup (the bench extra is in requirements.lock)")
    print(f"{os.cpu_count()} CPUs; load average before: {load_average()}", flush=True)
    backends = [RestartableBackend(f"b{i}") for i in range(4)]
    latencies: list[float] = []
    trial_cpu: list[tuple[float, float]] = []  # (serve, nodes) CPU seconds per trial
    floor: Floor | None = None
    spy: subprocess.Popen[bytes] | None = None
    spied = 0.0
    markers = Markers()
    with tempfile.TemporaryDirectory(prefix="bench-convergence-") as tmp:
        fleet = start_fleet(Path(tmp) / "fleet", args.nodes)
        serve: subprocess.Popen[bytes] | None = None
        try:
            started = time.monotonic()
            applied = fleet.cli(
                "apply", manifests(Path(tmp) / "m", fleet.nodes, backends, args), extra=verify, timeout=1800
            )
            if applied.returncode != 0:
                raise SystemExit(applied.stdout + applied.stderr)
            print(f"first apply ({args.upstreams + 1} upstreams): {time.monotonic() - started:.1f}s", file=sys.stderr)
            port = free_port()
            log = Path(tmp) / "serve.log"
            with log.open("wb") as out:
                serve = subprocess.Popen(
                    [
                        *fleet.cli_args("serve", "--listen", f"127.0.0.1:{port}", "--known-hosts", fleet.known_hosts),
                        *verify,
                    ],
                    cwd=ROOT,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            waited = wait(lambda: ready(port), timeout, "serve to be master with every node converged", poll=0.5)
            print(f"serve ready after {waited:.1f}s", file=sys.stderr)
            time.sleep(2 * args.interval)
            node_pids = [p.pid for n in fleet.nodes for p in (n.sshd.process, n.process) if p is not None]
            if args.upstreams:
                floor = Floor(fleet)
                floor.measure(node_pids)  # its connections' first use: not counted
                floor.samples.clear()
                floor.nodes_cpu.clear()
                print(f"floor: {floor.measure(node_pids):.2f}s", file=sys.stderr)
            if args.profile is not None:
                command = [str(PY_SPY), "record", "--rate", str(SPY_RATE), "--format", "raw", "-o", str(args.profile)]
                spy = subprocess.Popen(
                    [*command, "--pid", str(serve.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
                spied = time.monotonic()
            for trial in range(args.trials):
                backend = backends[trial % len(backends)]
                cpu = process_cpu(serve.pid, children=False), tree_cpu(node_pids)
                backend.stop()
                latencies.append(
                    wait(partial(everywhere, fleet.nodes, backend.hostname, "down", markers), timeout, "down")
                )
                trial_cpu.append((process_cpu(serve.pid, children=False) - cpu[0], tree_cpu(node_pids) - cpu[1]))
                backend.start()
                wait(partial(everywhere, fleet.nodes, backend.hostname, "enabled", markers), timeout, "back")
                line = f"trial {trial + 1:3d}: {latencies[-1]:.2f}s (serve CPU {trial_cpu[-1][0]:.2f}s, nodes' {trial_cpu[-1][1]:.2f}s)"
                if floor is not None and (trial + 1) % args.floor_every == 0:
                    line += f"; floor {floor.measure(node_pids):.2f}s (nodes' CPU {floor.nodes_cpu[-1]:.2f}s)"
                print(f"{line}; load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
        finally:
            if spy is not None:
                spied = time.monotonic() - spied
                spy.send_signal(signal.SIGINT)  # py-spy writes its file when interrupted
                spy.wait(60)
            if floor is not None:
                floor.close()
            if serve is not None and serve.poll() is None:
                serve.terminate()
                try:
                    serve.wait(60)
                except subprocess.TimeoutExpired:
                    serve.kill()
                    serve.wait()
            fleet.stop()
            for backend in backends:
                backend.stop()
    target = args.fall * args.interval + 1
    print(f"detection-to-converged over {len(latencies)} trials, {args.nodes} access nodes over SSH,")
    print(f"check interval {args.interval:g}s, rise {args.rise}, fall {args.fall}, coalescing window 1s", end="")
    print(
        f", {args.upstreams} more upstreams x {BACKENDS_PER_UPSTREAM} backends on every node:"
        if args.upstreams
        else ":"
    )
    if floor is None:
        print(f"  {spread(latencies)}  (target p99 <= {target:g}s)")
    else:
        strict, loose = target + statistics.median(floor.samples), target + percentile(floor.samples, 99)
        p99 = percentile(latencies, 99)
        print(f"  {spread(latencies)}")
        print(f"  serve CPU per trial: median {statistics.median(c[0] for c in trial_cpu):.2f}s; ", end="")
        print(f"nodes' CPU per trial: median {statistics.median(c[1] for c in trial_cpu):.2f}s")
        print(f"  floor (nginx -t + reload on every node, {len(floor.samples)} samples): {spread(floor.samples)}")
        print(f"  floor nodes' CPU: median {statistics.median(floor.nodes_cpu):.2f}s")
        print(
            f"  target p99 <= fall x interval + 1s + floor median = {strict:.2f}s: {'PASS' if p99 <= strict else 'FAIL'}"
        )
        print(f"  (information: + floor p99 instead = {loose:.2f}s: {'PASS' if p99 <= loose else 'FAIL'})")
    print(f"  machine: {os.cpu_count()} CPUs, load average after: {load_average()}")
    if args.profile is not None and args.profile.exists():
        print_profile(args.profile, spied)


if __name__ == "__main__":
    main()
