"""Bench: authenticated GET /status and GET /upstream/ with 1,000 upstreams, measured with wrk.

One server process (this one): create_app over a SQLite store of 1,000 upstreams, served by
aiohttp on 127.0.0.1, with the real controller (reconciler.serve.controller.Controller) running its
health loop in the same event loop: each upstream has one backend and a tcp check every
second, so 1,000 checks per second (real connects to a listener in another process). The
controller is the API's view, as in ``serve``. ``--simulate``: no controller; a task makes
the TCP connects and /status comes from a cached StoreView. wrk: 1 thread, 32 connections.

    .venv/bin/python -m bench.api [--upstreams 1000] [--seconds 10] [--simulate] [--cache-seconds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests
from aiohttp import web

from reconciler.api.app import create_app
from reconciler.api.view import StoreView
from reconciler.manifest.model import API_VERSION
from reconciler.store import Provenance, Put, Store, open_store
from tests.api.server import FAST_HASHER

LISTENER = """
import asyncio
async def main():
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


class CachedView(StoreView):
    """StoreView with status() cached for one second (--simulate only)."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self._status: tuple[float, dict[str, Any]] | None = None

    def status(self) -> dict[str, Any]:
        if self._status is None or time.monotonic() - self._status[0] > 1.0:
            self._status = (time.monotonic(), super().status())
        return self._status[1]


def seed(store: Store, upstreams: int, backend_port: int) -> None:
    who = Provenance("manifest", "bench.yaml")
    check = {"name": "tcp-1s", "owner": "ops", "base_check": "tcp", "interval": "1s", "timeout": "1s"}
    docs: list[dict[str, Any]] = [
        {"kind": "Group", "name": "ops", "global_permissions": ["GLOBAL_RO"]},
        {"kind": "User", "name": "bench", "password_hash": FAST_HASHER.hash("bench-password"), "groups": ["ops"]},
        {"kind": "Check", **check},
    ]
    for i in range(upstreams):
        nodes = [{"hostname": f"127.0.0.1:{backend_port}"}]
        docs.append({"kind": "Upstream", "name": f"app{i:04d}", "owner": "ops", "nodes": nodes, "checks": ["tcp-1s"]})
    store.commit([Put(d["kind"], d["name"], {"apiVersion": API_VERSION, **d}, who) for d in docs])


async def health_load(port: int, per_second: int, counter: list[int]) -> None:
    """``per_second`` TCP connects per second to 127.0.0.1:port, in batches every 10 ms."""
    batch = max(1, per_second // 100)
    while True:
        started = time.monotonic()
        for _ in range(batch):
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
                writer.close()
                counter[0] += 1
            except (OSError, TimeoutError):
                counter[1] += 1
        await asyncio.sleep(max(0.0, 0.01 - (time.monotonic() - started)))


def checks_done(view: Any, counter: list[int]) -> int:
    """Checks run so far: the controller's obreconcile_checks_total, or the simulation's count."""
    if counter:
        return counter[0]
    text = view.metrics().decode()
    return int(sum(float(m) for m in re.findall(r"^obreconcile_checks_total\{[^}]*\} (\S+)$", text, re.M)))


def serve(store: Store, args: argparse.Namespace, port: int, ready: threading.Event, state: dict[str, Any]) -> None:
    async def run() -> None:
        counter: list[int] = []
        stop = asyncio.Event()
        view: Any
        if args.simulate:
            counter[:] = [0, 0]
            view = CachedView(store)
            task = asyncio.create_task(health_load(port, args.upstreams, counter))
        else:
            from reconciler.serve.controller import Controller, ServeSettings

            view = Controller(store, ServeSettings(host_name="bench", check_concurrency=1000))
            task = asyncio.create_task(view.run(stop))
        runner = web.AppRunner(create_app(store, view, cache_seconds=args.cache_seconds), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        state.update(view=view, counter=counter, port=runner.addresses[0][1], stop=stop)
        ready.set()
        await stop.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner.cleanup()

    state["loop"] = asyncio.new_event_loop()
    state["loop"].run_until_complete(run())


def run_wrk(url: str, token: str, seconds: int) -> tuple[float, str]:
    out = subprocess.run(
        ["wrk", "-t1", "-c32", f"-d{seconds}s", "--latency", "-H", f"X-Auth-Token: {token}", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"wrk saw errors:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    return rps, p99


def measure(store: Store, args: argparse.Namespace, backend_port: int) -> None:
    ready, state = threading.Event(), dict[str, Any]()
    thread = threading.Thread(target=serve, args=(store, args, backend_port, ready, state), daemon=True)
    thread.start()
    ready.wait(30)
    url = f"http://127.0.0.1:{state['port']}"
    r = requests.post(url + "/auth", json={"user_name": "bench", "password": "bench-password"}, timeout=10)
    r.raise_for_status()
    token = r.json()["token"]
    time.sleep(3)  # the health loop spreads its first checks over one interval
    mode = "simulated checks" if args.simulate else "controller health loop"
    for path in ("/status", "/upstream/"):
        before, t0 = checks_done(state["view"], state["counter"]), time.monotonic()
        rps, p99 = run_wrk(url + path, token, args.seconds)
        rate = (checks_done(state["view"], state["counter"]) - before) / (time.monotonic() - t0)
        print(
            f"GET {path:<11} {args.upstreams} upstreams: {rps:8.0f} req/s  p99 {p99:>8}  {mode}: {rate:6.0f} checks/s"
        )
    state["loop"].call_soon_threadsafe(state["stop"].set)
    thread.join(60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstreams", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--simulate", action="store_true", help="no controller: simulated TCP checks")
    parser.add_argument("--cache-seconds", type=float, default=1.0, help="create_app's cache_seconds")
    args = parser.parse_args()
    listener = subprocess.Popen([sys.executable, "-c", LISTENER], stdout=subprocess.PIPE, text=True)
    try:
        backend_port = int(listener.stdout.readline())  # type: ignore[union-attr]
        with tempfile.TemporaryDirectory() as tmp:
            store = open_store(f"sqlite:///{Path(tmp) / 'state.db'}")
            seed(store, args.upstreams, backend_port)
            measure(store, args, backend_port)
            store.close()
    finally:
        listener.terminate()
        listener.wait(10)


if __name__ == "__main__":
    main()
