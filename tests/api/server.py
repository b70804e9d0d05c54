"""A real API server for tests: create_app under web.AppRunner on 127.0.0.1:0 in a thread."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Mapping
from typing import Any

import requests
from aiohttp import web
from argon2 import PasswordHasher, Type

from reconciler.manifest.model import API_VERSION
from reconciler.store import Delete, Provenance, Put, Snapshot, Store

# OWASP's minimum (m=19456, t=2): valid for the manifests and quick for tests.
FAST_HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1, type=Type.ID)
GIT = Provenance("manifest", "tests.yaml", 1_700_000_000.0)


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RunningServer:
    """The app served by a real aiohttp runner in its own thread and loop; ``stop`` ends both."""

    def __init__(self, app: web.Application, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner = web.AppRunner(app)
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = requests.Session()

    async def _start(self) -> int:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        return int(self.runner.addresses[0][1])

    def stop(self) -> None:
        self.http.close()
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()

    def call(self, method: str, path: str, token: str | None = None, body: Any = None, **kw: Any) -> requests.Response:
        headers = {"X-Auth-Token": token} if token else {}
        return self.http.request(method, self.url + path, json=body, headers=headers, timeout=30, **kw)

    def login(self, user: str, password: str) -> str:
        r = self.call("POST", "/auth", body={"user_name": user, "password": password})
        assert r.status_code == 200, r.text
        return str(r.json()["token"])


def doc(kind: str, name: str, **fields: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": kind, "name": name, **fields}


def seed(store: Store, docs: list[dict[str, Any]]) -> int:
    return store.commit([Put(d["kind"], d["name"], d, GIT) for d in docs])


def restore(store: Store, before: Snapshot) -> None:
    """Put the store's objects back as they were in ``before`` (after an allowed write)."""
    now = store.snapshot()
    ops: list[Put | Delete] = []
    for key, obj in before.objects.items():
        if key not in now.objects or now.objects[key].body != obj.body:
            ops.append(Put(obj.kind, obj.name, obj.body, obj.provenance))
    ops.extend(Delete(k, n, GIT) for (k, n) in now.objects if (k, n) not in before.objects)
    if ops:
        store.commit(ops)


def bodies(store: Store) -> Mapping[tuple[str, str], Any]:
    return {k: o.body for k, o in store.snapshot().objects.items()}
