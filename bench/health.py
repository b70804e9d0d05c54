"""Benchmark the health loop: 5,000 backends across 500 upstreams checked every second.

    .venv/bin/python -m bench.health [--upstreams 500] [--per-upstream 10] [--ports 100] [--seconds 20]

A real ``obreconcile serve`` (SQLite store, no access nodes: only the checks run) checks
every backend of every upstream once a second: half the upstreams with a tcp check, half with
an http check (``GET / 200``). The backends are ``--ports`` loopback ports of one nginx (one
worker, ``return 200``); each upstream has ``--per-upstream`` of them, so every (upstream,
backend, check) is its own check and its own connection, as in production.

Printed, over ``--seconds`` after a warm-up: the sustained check rate (from the controller's
``obreconcile_checks_total``), failed checks, the CPU the controller used (utime + stime of its
process, in cores) and the responder's. Target (issue 6): the full 5,000 checks/s with under one core.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from reconciler.store import Provenance, Put, open_store
from tests.services.fleet import NGINX
from tests.services.sshd import free_port

ROOT = Path(__file__).resolve().parents[1]
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


def start_responder(directory: Path, count: int) -> tuple[subprocess.Popen[bytes], list[int]]:
    """An nginx answering 200 on ``count`` free ports of 127.0.0.1 (one worker): the backends."""
    for _ in range(5):
        ports = sorted({free_port() for _ in range(count)})
        if len(ports) < count:
            continue
        listens = "".join(f"        listen 127.0.0.1:{p} backlog=4096;\n" for p in ports)
        (directory / "logs").mkdir(parents=True, exist_ok=True)
        conf = directory / "nginx.conf"
        conf.write_text(
            f"worker_processes 1;\npid {directory}/nginx.pid;\nerror_log {directory}/logs/error.log;\n"
            "events { worker_connections 8192; }\n"
            f"http {{\n    access_log off;\n    client_body_temp_path {directory}/tmp;\n"
            f"    server {{\n{listens}        location / {{ return 200 ok; }}\n    }}\n}}\n"
        )
        process = subprocess.Popen(
            [NGINX, "-p", str(directory), "-c", str(conf), "-e", f"{directory}/logs/error.log", "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", ports[-1]), timeout=0.2).close()
                return process, ports
            except OSError:
                time.sleep(0.05)
        process.kill()
        process.wait()
    raise SystemExit(f"nginx did not start as the responder: {(directory / 'logs' / 'error.log').read_text()[-2000:]}")


def cpu_seconds(pid: int, children: bool = False) -> tuple[float, float]:
    """(user, system) CPU seconds of a process (and of its children: nginx's worker)."""
    pids = [pid]
    if children:
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    user = system = 0.0
    for p in pids:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        user += int(fields[11]) / os.sysconf("SC_CLK_TCK")
        system += int(fields[12]) / os.sysconf("SC_CLK_TCK")
    return user, system


def checks_total(url: str) -> tuple[float, float]:
    """(checks run, checks failed) from /metrics."""
    text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    run = failed = 0.0
    for line in text.splitlines():
        match = re.match(r'obreconcile_checks_total\{base_check="\w+",result="(\w+)"\} (\S+)', line)
        if match:
            run += float(match[2])
            failed += float(match[2]) if match[1] == "fail" else 0
    return run, failed


def timed_checks_total(url: str) -> tuple[float, tuple[float, float]]:
    """When the counters were read (the middle of the /metrics request: with 5,000 backends
    its answer takes a while to build, and timing its end would stretch the window), and them."""
    before = time.monotonic()
    totals = checks_total(url)
    return (before + time.monotonic()) / 2, totals


def write_store(url: str, upstreams: int, per_upstream: int, ports: list[int]) -> None:
    who = Provenance("manifest", "bench/health.py")
    api = "openbalancer/v1"
    ops = [Put("Group", "ops", {"apiVersion": api, "kind": "Group", "name": "ops"}, who)]
    for kind, body in (("tcp-1s", {"base_check": "tcp"}), ("http-1s", {"base_check": "http", "string": "GET / 200"})):
        check = {"apiVersion": api, "kind": "Check", "name": kind, "owner": "ops", "interval": "1s", "timeout": "1s"}
        ops.append(Put("Check", kind, {**check, **body}, who))
    for i in range(upstreams):
        nodes = [{"hostname": f"127.0.0.1:{ports[(i * per_upstream + j) % len(ports)]}"} for j in range(per_upstream)]
        upstream: dict[str, Any] = {
            "apiVersion": api,
            "kind": "Upstream",
            "name": f"u{i:04d}",
            "owner": "ops",
            "checks": ["tcp-1s" if i % 2 == 0 else "http-1s"],
            "nodes": nodes,
        }
        ops.append(Put("Upstream", f"u{i:04d}", upstream, who))
    with open_store(url) as store:
        store.commit(ops)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstreams", type=int, default=500)
    parser.add_argument("--per-upstream", type=int, default=10)
    parser.add_argument("--ports", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=1000, help="serve --check-concurrency")
    args = parser.parse_args()
    if args.ports < args.per_upstream:
        parser.error("--ports must be at least --per-upstream (hostnames are unique in an upstream)")
    with tempfile.TemporaryDirectory(prefix="bench-health-") as tmp:
        store = f"sqlite:///{tmp}/state.db"
        backends, ports = start_responder(Path(tmp) / "responder", args.ports)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        serve = None
        try:
            write_store(store, args.upstreams, args.per_upstream, ports)
            with open(f"{tmp}/serve.log", "wb") as log:
                serve = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "reconciler",
                        "--store",
                        store,
                        "serve",
                        "--listen",
                        f"127.0.0.1:{port}",
                        "--check-concurrency",
                        str(args.concurrency),
                    ],
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            deadline = time.monotonic() + 30
            while True:
                try:
                    checks_total(url)
                    break
                except OSError:
                    if time.monotonic() > deadline or serve.poll() is not None:
                        raise SystemExit(Path(f"{tmp}/serve.log").read_text()[-3000:]) from None
                    time.sleep(0.2)
            time.sleep(args.warmup)
            start, (run0, failed0) = timed_checks_total(url)
            cpu0, backend_cpu0 = cpu_seconds(serve.pid), cpu_seconds(backends.pid, children=True)
            time.sleep(args.seconds)
            end, (run1, failed1) = timed_checks_total(url)
            elapsed = end - start
            cpu1, backend_cpu1 = cpu_seconds(serve.pid), cpu_seconds(backends.pid, children=True)
            user, system = ((b - a) / elapsed for a, b in zip(cpu0, cpu1, strict=True))
            cpu = user + system
            backend_cpu = sum(backend_cpu1) - sum(backend_cpu0)
            backend_cpu /= elapsed
        finally:
            for process in (serve, backends):
                if process is not None and process.poll() is None:
                    process.terminate()
                    process.wait(30)
    total = args.upstreams * args.per_upstream
    print(
        f"checks configured: {total} ({args.upstreams} upstreams x {args.per_upstream}, half tcp, half http; 1s interval)"
    )
    print(f"sustained rate:    {(run1 - run0) / elapsed:,.0f} checks/s over {elapsed:.1f}s (target {total:,}/s)")
    print(f"failed checks:     {failed1 - failed0:,.0f}")
    rate = (run1 - run0) / elapsed
    per_check = cpu / rate if rate else float("nan")
    print(
        f"controller CPU:    {cpu:.2f} cores (user {user:.2f}, kernel {system:.2f}; target < 1); {per_check * 1e6:.0f} us per check"
    )
    print(f"projected:         {per_check * total:.2f} cores at {total:,} checks/s (CPU per check x rate)")
    print(f"responder CPU:     {backend_cpu:.2f} cores (one nginx worker on {args.ports} loopback ports)")
    print(f"machine:           {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
