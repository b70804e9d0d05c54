"""Bench: authenticated GET /status and GET /upstream/ with 1,000 upstreams, measured with wrk.

One server process (this one): create_app over a SQLite store of 1,000 upstreams, served by
aiohttp on 127.0.0.1, while a background task makes 1,000 TCP health checks per second in the
same event loop (a simulation of the health loop: real connects to a local listener). /status
answers from a view that caches the store-derived status for a second, as the controller's
in-memory view does. wrk: 1 thread, 32 connections, 10 s per path.

    .venv/bin/python -m bench.api [--upstreams 1000] [--seconds 10] [--checks 1000]
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


class CachedView(StoreView):
    """StoreView with status() cached for one second (the controller keeps it in memory)."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self._status: tuple[float, dict[str, Any]] | None = None

    def status(self) -> dict[str, Any]:
        if self._status is None or time.monotonic() - self._status[0] > 1.0:
            self._status = (time.monotonic(), super().status())
        return self._status[1]


def seed(store: Store, upstreams: int) -> None:
    who = Provenance("manifest", "bench.yaml")
    docs: list[dict[str, Any]] = [
        {"apiVersion": API_VERSION, "kind": "Group", "name": "ops", "global_permissions": ["GLOBAL_RO"]},
        {
            "apiVersion": API_VERSION,
            "kind": "User",
            "name": "bench",
            "password_hash": FAST_HASHER.hash("bench-password"),
            "groups": ["ops"],
        },
    ]
    for i in range(upstreams):
        nodes = [{"hostname": f"10.{i // 250}.{i % 250}.{n}:8080"} for n in range(1, 4)]
        docs.append(
            {"apiVersion": API_VERSION, "kind": "Upstream", "name": f"app{i:04d}", "owner": "ops", "nodes": nodes}
        )
    store.commit([Put(d["kind"], d["name"], d, who) for d in docs])


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


def serve(store: Store, checks: int, ready: threading.Event, state: dict[str, Any]) -> None:
    async def main() -> None:
        listener = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        counter = [0, 0]
        state["counter"] = counter
        task = asyncio.create_task(health_load(listener.sockets[0].getsockname()[1], checks, counter))
        runner = web.AppRunner(create_app(store, CachedView(store), cache_seconds=1.0), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        state["port"] = runner.addresses[0][1]
        state["stop"] = asyncio.Event()
        ready.set()
        await state["stop"].wait()
        task.cancel()
        await runner.cleanup()
        listener.close()

    state["loop"] = asyncio.new_event_loop()
    state["loop"].run_until_complete(main())


def run_wrk(url: str, token: str, seconds: int) -> tuple[float, str]:
    out = subprocess.run(
        ["wrk", "-t1", "-c32", f"-d{seconds}s", "--latency", "-H", f"X-Auth-Token: {token}", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    if "Non-2xx" in out:
        raise SystemExit(f"wrk saw errors:\n{out}")
    return rps, p99


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstreams", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--checks", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{Path(tmp) / 'state.db'}")
        seed(store, args.upstreams)
        ready, state = threading.Event(), {}
        thread = threading.Thread(target=serve, args=(store, args.checks, ready, state), daemon=True)
        thread.start()
        ready.wait(30)
        url = f"http://127.0.0.1:{state['port']}"
        token = requests.post(url + "/auth", json={"user_name": "bench", "password": "bench-password"}, timeout=10)
        token.raise_for_status()
        tok = token.json()["token"]
        for path in ("/status", "/upstream/"):
            before, t0 = state["counter"][0], time.monotonic()
            rps, p99 = run_wrk(url + path, tok, args.seconds)
            checks = (state["counter"][0] - before) / (time.monotonic() - t0)
            print(
                f"GET {path:<11} {args.upstreams} upstreams: {rps:8.0f} req/s  p99 {p99:>8}  health checks {checks:6.0f}/s"
            )
        state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(30)
        store.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
