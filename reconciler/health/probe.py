"""How one check runs: the ``Prober`` starts probes on the serving loop and answers ``Outcome``s.

tcp and plain http probes run as socket state machines (``reconciler/health/sockets.py``): no
task, future or transport is made per probe, since at 5,000 checks a second the coroutine
machinery cost more CPU than the checks themselves (docs/serve.md, *Figures*). Backend names
are resolved in a thread by the renderer's resolver (cached 30 s; a name that stops resolving
is checked at its last known address, the one nginx is given); https goes through aiohttp
(TLS, certificate verification), in a task.

Every probe runs under the prober's concurrency bound (later ones wait in a queue) and its own
timeout, and ends exactly once: ``done(outcome)`` is called on the loop, never an exception.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import ssl
from collections.abc import Coroutine
from typing import Any

import aiohttp

from reconciler.health.checks import CheckSpec, Outcome, Target
from reconciler.health.sockets import EXPECT_WITHIN, Done, SocketProbes, reason
from reconciler.manifest.model import BaseCheck
from reconciler.resolve import Resolver, SystemResolver, ip_literal

_RESOLVED_FOR = 30  # seconds a resolved backend name is reused (aiohttp's ttl_dns_cache)


class Prober:
    """Runs probes with bounded concurrency; use ``async with Prober(...)`` on the serving loop."""

    def __init__(self, concurrency: int = 1000, resolver: Resolver | None = None) -> None:
        self.concurrency = concurrency
        self.resolver: Resolver = resolver if resolver is not None else SystemResolver()
        self.running = 0
        self._waiting: collections.deque[tuple[CheckSpec, Target, Done]] = collections.deque()
        self._sockets: SocketProbes | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._resolved: dict[tuple[str, int], tuple[float, int, tuple[str, int]]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._verified = ssl.create_default_context()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> Prober:
        self._loop = asyncio.get_running_loop()
        self._sockets = SocketProbes(self._loop, self._end)
        # A new connection per check (like HAProxy): a kept-alive socket would hide a restart.
        connector = aiohttp.TCPConnector(limit=0, force_close=True, ttl_dns_cache=_RESOLVED_FOR)
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False, cookie_jar=DummyJar())
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop every probe under way (their ``done`` is not called) and close the https session."""
        self._waiting.clear()
        if self._sockets is not None:
            self._sockets.close()
            self._sockets = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def probe(self, spec: CheckSpec, target: Target) -> Outcome:
        """Run one probe and wait for its outcome."""
        answer: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()

        def done(outcome: Outcome) -> None:
            if not answer.done():  # the waiter may have been cancelled
                answer.set_result(outcome)

        self.start(spec, target, done)
        return await answer

    def start(self, spec: CheckSpec, target: Target, done: Done) -> None:
        """Start one probe now, or when a slot frees; ``done(outcome)`` follows on the loop."""
        if self.running >= self.concurrency:
            self._waiting.append((spec, target, done))
            return
        self.running += 1
        self._begin(spec, target, done)

    def _finished(self) -> None:
        """A probe ended: its slot goes to the next waiting one."""
        if self._waiting:
            self._begin(*self._waiting.popleft())
        else:
            self.running -= 1

    def _begin(self, spec: CheckSpec, target: Target, done: Done) -> None:
        loop = self._loop
        assert loop is not None, "use the Prober in an async with block"
        if spec.base == BaseCheck.HTTPS:
            self._spawn(self._https(spec, target, done, loop.time()))
            return
        now = loop.time()
        known = self._resolved.get((target.host, target.port))
        if known is None or known[0] <= now:
            literal = ip_literal(target.host)
            if literal is None:
                self._spawn(self._resolve_and_connect(spec, target, done, now))
                return
            family = socket.AF_INET6 if ":" in literal else socket.AF_INET
            known = self._resolved[(target.host, target.port)] = (float("inf"), family, (literal, target.port))
        self._connect(spec, target, known[1], known[2], done, now)

    def _connect(
        self, spec: CheckSpec, target: Target, family: int, address: tuple[str, int], done: Done, started: float
    ) -> None:
        assert self._sockets is not None, "use the Prober in an async with block"
        request = _request(spec, target) if spec.base == BaseCheck.HTTP else b""
        self._sockets.connect(spec, family, address, request, done, started)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve_and_connect(self, spec: CheckSpec, target: Target, done: Done, started: float) -> None:
        """Resolve a backend name with the renderer's resolver (same cache, same last known
        addresses: a name that stops resolving is still checked at the address it is rendered
        with), then probe it."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(spec.timeout):
                resolution = await asyncio.to_thread(self.resolver.resolve, target.host)
        except TimeoutError:
            self._end(done, Outcome(False, f"no answer within {spec.timeout:g}s", loop.time() - started))
            return
        if not resolution.addresses:
            self._end(done, Outcome(False, resolution.error or "does not resolve", loop.time() - started))
            return
        address = resolution.addresses[0]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        if not resolution.error:  # a last known address is asked for again next time
            self._resolved[(target.host, target.port)] = (loop.time() + _RESOLVED_FOR, family, (address, target.port))
        self._connect(spec, target, family, (address, target.port), done, started)

    async def _https(self, spec: CheckSpec, target: Target, done: Done, started: float) -> None:
        loop = asyncio.get_running_loop()
        assert self._session is not None
        tls: ssl.SSLContext | bool = self._verified if spec.verify else False
        try:
            async with asyncio.timeout(spec.timeout):
                headers = {"Host": spec.host} if spec.host else None
                async with self._session.request(
                    spec.method, target.url(spec), allow_redirects=False, ssl=tls, headers=headers
                ) as response:
                    detail = "" if spec.accepts(response.status) else f"status {response.status}"
                    if not detail and spec.expect:
                        body = await response.content.read(EXPECT_WITHIN)
                        detail = "" if spec.expect in body else missing_text(spec)
        except TimeoutError:
            detail = f"no answer within {spec.timeout:g}s"
        except (OSError, aiohttp.ClientError, ssl.SSLError) as e:
            detail = _reason(e)
        self._end(done, Outcome(detail == "", detail, loop.time() - started))

    def _end(self, done: Done, outcome: Outcome) -> None:
        self._finished()
        done(outcome)


def missing_text(spec: CheckSpec) -> str:
    return f"body lacks {spec.expect.decode()!r}"


def _request(spec: CheckSpec, target: Target) -> bytes:
    host = f"[{target.host}]" if ":" in target.host else target.host
    return (
        f"{spec.method} {spec.path} HTTP/1.1\r\nHost: {spec.host or f'{host}:{target.port}'}\r\n"
        "User-Agent: obreconcile-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    ).encode()


class DummyJar(aiohttp.DummyCookieJar):
    """Checks keep no cookies."""


def _reason(error: BaseException) -> str:
    if isinstance(error, aiohttp.ClientConnectorError):
        error = error.os_error
    return reason(error)
