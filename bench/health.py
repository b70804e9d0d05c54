"""Benchmark the health loop: 5,000 backends across 500 upstreams checked every second.

    .venv/bin/python -m bench.health [--upstreams 500] [--per-upstream 10] [--ports 100] [--seconds 20]

A real ``obreconcile serve`` (SQLite store, no access nodes: only the checks run) checks
every backend of every upstream once a second: half the upstreams with a tcp check, half with
an http check (``GET / 200``). The backends are ``--ports`` loopback listeners of one asyncio
responder process (a separate process); each upstream has ``--per-upstream`` of them, so every
(upstream, backend, check) is its own check and its own connection, as in production.

Printed, over ``--seconds`` after a warm-up: the sustained check rate (from the controller's
``obreconcile_checks_total``), failed checks, the CPU the controller used (utime + stime of its
process, in cores) and the responder's. Target (issue 6): the full 5,000 checks/s with under one core.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from reconciler.store import Provenance, Put, open_store
from tests.services.sshd import free_port

ROOT = Path(__file__).resolve().parents[1]
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


async def _respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        data = await asyncio.wait_for(reader.read(4096), 2)
        if data:
            writer.write(RESPONSE)
            await writer.drain()
    except (OSError, TimeoutError):
        pass
    finally:
        writer.close()


async def responder(count: int) -> None:
    """Listen on ``count`` free ports of 127.0.0.1 (printed); answer HTTP 200 (tcp checks just connect)."""
    servers = [await asyncio.start_server(_respond, "127.0.0.1", 0, backlog=1024) for _ in range(count)]
    print(" ".join(str(s.sockets[0].getsockname()[1]) for s in servers), flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def write_store(url: str, upstreams: int, per_upstream: int, ports: list[int]) -> None:
    who = Provenance("manifest", "bench/health.py")
    api = "openbalancer/v1"
    ops = [Put("Group", "ops", {"apiVersion": api, "kind": "Group", "name": "ops"}, who)]
    for kind, body in (("tcp-1s", {"base_check": "tcp"}), ("http-1s", {"base_check": "http", "string": "GET / 200"})):
        check = {"apiVersion": api, "kind": "Check", "name": kind, "owner": "ops", "interval": "1s", "timeout": "1s"}
        ops.append(Put("Check", kind, {**check, **body}, who))
    for i in range(upstreams):
        nodes = [{"hostname": f"127.0.0.1:{ports[(i * per_upstream + j) % len(ports)]}"} for j in range(per_upstream)]
        body = {
            "apiVersion": api,
            "kind": "Upstream",
            "name": f"u{i:04d}",
            "owner": "ops",
            "checks": ["tcp-1s" if i % 2 == 0 else "http-1s"],
            "nodes": nodes,
        }
        ops.append(Put("Upstream", f"u{i:04d}", body, who))
    with open_store(url) as store:
        store.commit(ops)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstreams", type=int, default=500)
    parser.add_argument("--per-upstream", type=int, default=10)
    parser.add_argument("--ports", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    args = parser.parse_args()
    if args.ports < args.per_upstream:
        parser.error("--ports must be at least --per-upstream (hostnames are unique in an upstream)")
    with tempfile.TemporaryDirectory(prefix="bench-health-") as tmp:
        store = f"sqlite:///{tmp}/state.db"
        backends = subprocess.Popen(
            [sys.executable, "-m", "bench.health", "--respond", str(args.ports)], cwd=ROOT, stdout=subprocess.PIPE
        )
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        serve = None
        try:
            assert backends.stdout is not None
            ports = [int(p) for p in backends.stdout.readline().split()]
            write_store(store, args.upstreams, args.per_upstream, ports)
            with open(f"{tmp}/serve.log", "wb") as log:
                serve = subprocess.Popen(
                    [sys.executable, "-m", "reconciler", "--store", store, "serve", "--listen", f"127.0.0.1:{port}"],
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
            start, (run0, failed0) = time.monotonic(), checks_total(url)
            cpu0, backend_cpu0 = cpu_seconds(serve.pid), cpu_seconds(backends.pid)
            time.sleep(args.seconds)
            elapsed, (run1, failed1) = time.monotonic() - start, checks_total(url)
            cpu = (cpu_seconds(serve.pid) - cpu0) / elapsed
            backend_cpu = (cpu_seconds(backends.pid) - backend_cpu0) / elapsed
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
    print(f"controller CPU:    {cpu:.2f} cores (target < 1); {per_check * 1e6:.0f} us per check")
    print(f"projected:         {per_check * total:.2f} cores at {total:,} checks/s (CPU per check x rate)")
    print(f"responder CPU:     {backend_cpu:.2f} cores ({args.ports} loopback listeners, another process)")
    print(f"machine:           {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--respond":
        asyncio.run(responder(int(sys.argv[2])))
    else:
        main()
