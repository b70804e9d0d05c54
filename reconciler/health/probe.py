"""How one check runs: the ``Prober`` starts probes on the serving loop and answers ``Outcome``s.

tcp and plain http probes are small state machines driven by the event loop's own callbacks
(``add_writer``, ``add_reader``, ``call_at``): a non-blocking socket connects, an http probe
sends one request and reads up to the status line, and the socket is closed with a reset (no
TIME_WAIT left behind, as HAProxy's checks do). No task, future or transport is made per
probe: at 5,000 checks a second the coroutine machinery cost more CPU than the checks
themselves (docs/serve.md, *Figures*). https goes through aiohttp (TLS, certificate
verification), in a task.

Every probe runs under the prober's concurrency bound (later ones wait in a queue) and its own
timeout, and ends exactly once: ``done(outcome)`` is called on the loop, never an exception.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import os
import socket
import ssl
import struct
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp

from reconciler.health.checks import CheckSpec, Outcome, Target
from reconciler.resolve import ip_literal

Done = Callable[[Outcome], None]

_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset
_RESOLVED_FOR = 30  # seconds a resolved backend name is reused (aiohttp's ttl_dns_cache)
_STATUS_LINE_MAX = 1024
_NOTHING, _WRITABLE, _READABLE = 0, 1, 2  # what an attempt waits for on its socket


class Prober:
    """Runs probes with bounded concurrency; use ``async with Prober(...)`` on the serving loop."""

    def __init__(self, concurrency: int = 1000) -> None:
        self.concurrency = concurrency
        self.running = 0
        self._waiting: collections.deque[tuple[CheckSpec, Target, Done]] = collections.deque()
        self._attempts: set[_Attempt] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._resolved: dict[tuple[str, int], tuple[float, int, tuple[str, int]]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._verified = ssl.create_default_context()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> Prober:
        self._loop = asyncio.get_running_loop()
        # A new connection per check (like HAProxy): a kept-alive socket would hide a restart.
        connector = aiohttp.TCPConnector(limit=0, force_close=True, ttl_dns_cache=_RESOLVED_FOR)
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False, cookie_jar=DummyJar())
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop every probe under way (their ``done`` is not called) and close the https session."""
        self._waiting.clear()
        for attempt in list(self._attempts):
            attempt.abandon()
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
        if spec.base == "https":
            self._spawn(self._https(spec, target, done, loop.time()))
            return
        known = self._resolved.get((target.host, target.port))
        if known is not None and known[0] > loop.time():
            _Attempt(self, loop, spec, target, done).connect(known[1], known[2])
            return
        literal = ip_literal(target.host)
        if literal is None:
            self._spawn(self._resolve_and_connect(spec, target, done, loop.time()))
            return
        family = socket.AF_INET6 if ":" in literal else socket.AF_INET
        self._resolved[(target.host, target.port)] = (float("inf"), family, (literal, target.port))
        _Attempt(self, loop, spec, target, done).connect(family, (literal, target.port))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve_and_connect(self, spec: CheckSpec, target: Target, done: Done, started: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(spec.timeout):
                infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except TimeoutError:
            self._end(done, Outcome(False, f"no answer within {spec.timeout:g}s", loop.time() - started))
            return
        except OSError as e:
            self._end(done, Outcome(False, _reason(e), loop.time() - started))
            return
        family, address = infos[0][0], (str(infos[0][4][0]), int(infos[0][4][1]))
        self._resolved[(target.host, target.port)] = (loop.time() + _RESOLVED_FOR, family, address)
        _Attempt(self, loop, spec, target, done, started).connect(family, address)

    async def _https(self, spec: CheckSpec, target: Target, done: Done, started: float) -> None:
        loop = asyncio.get_running_loop()
        assert self._session is not None
        tls: ssl.SSLContext | bool = self._verified if spec.verify else False
        try:
            async with asyncio.timeout(spec.timeout):
                async with self._session.request(
                    spec.method, target.url(spec), allow_redirects=False, ssl=tls
                ) as response:
                    detail = "" if spec.accepts(response.status) else f"status {response.status}"
        except TimeoutError:
            detail = f"no answer within {spec.timeout:g}s"
        except (OSError, aiohttp.ClientError, ssl.SSLError) as e:
            detail = _reason(e)
        self._end(done, Outcome(detail == "", detail, loop.time() - started))

    def _end(self, done: Done, outcome: Outcome) -> None:
        self._finished()
        done(outcome)


class _Attempt:
    """One tcp or plain-http probe on a non-blocking socket, driven by loop callbacks."""

    __slots__ = ("buffer", "done", "fd", "loop", "prober", "request", "sock", "spec", "started", "timer", "watching")

    def __init__(
        self,
        prober: Prober,
        loop: asyncio.AbstractEventLoop,
        spec: CheckSpec,
        target: Target,
        done: Done,
        started: float = 0.0,
    ) -> None:
        self.prober, self.loop, self.spec, self.done = prober, loop, spec, done
        self.request = _request(spec, target) if spec.base == "http" else b""
        self.started = started or loop.time()
        self.buffer = b""
        self.watching = _NOTHING
        self.fd = -1
        self.timer: asyncio.TimerHandle | None = None

    def connect(self, family: int, address: tuple[str, int]) -> None:
        try:
            self.sock = sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as e:  # out of file descriptors
            self.prober._end(self.done, Outcome(False, _reason(e), self.loop.time() - self.started))
            return
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        self.fd = sock.fileno()
        self.prober._attempts.add(self)
        code = sock.connect_ex(address)
        if code == errno.EINPROGRESS:
            self.timer = self.loop.call_at(self.started + self.spec.timeout, self._expired)
            self.watching = _WRITABLE
            self.loop.add_writer(self.fd, self._connected)
        elif code == 0:
            self.timer = self.loop.call_at(self.started + self.spec.timeout, self._expired)
            self._connected()
        else:
            self._finish(_strerror(code))

    def _connected(self) -> None:
        if self.watching == _WRITABLE:
            self.watching = _NOTHING
            self.loop.remove_writer(self.fd)
        code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._finish(_strerror(code))
        elif self.spec.base == "tcp":
            self._finish("")
        else:
            try:
                self.sock.send(self.request)  # a few hundred bytes into an empty socket buffer
            except OSError as e:
                self._finish(_reason(e))
                return
            self.watching = _READABLE
            self.loop.add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        try:
            data = self.sock.recv(_STATUS_LINE_MAX)
        except BlockingIOError:
            return
        except OSError as e:
            self._finish(_reason(e))
            return
        if not data:
            self._finish("closed before answering")
            return
        self.buffer += data
        line, found, _ = self.buffer.partition(b"\r\n")
        if not found and len(self.buffer) < _STATUS_LINE_MAX:
            return
        parts = line.split(b" ", 2)
        if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit() and len(parts[1]) == 3:
            status = int(parts[1])
            self._finish("" if self.spec.accepts(status) else f"status {status}")
        else:
            self._finish("not an HTTP answer")

    def _expired(self) -> None:
        self.timer = None
        self._finish(f"no answer within {self.spec.timeout:g}s")

    def _close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.watching == _READABLE:
            self.loop.remove_reader(self.fd)
        elif self.watching == _WRITABLE:
            self.loop.remove_writer(self.fd)
        self.watching = _NOTHING
        self.sock.close()
        self.prober._attempts.discard(self)

    def _finish(self, detail: str) -> None:
        if self.sock.fileno() < 0:
            return  # ended already
        self._close()
        self.prober._end(self.done, Outcome(detail == "", detail, self.loop.time() - self.started))

    def abandon(self) -> None:
        """Stop without an outcome (the prober is closing)."""
        if self.sock.fileno() >= 0:
            self._close()


def _request(spec: CheckSpec, target: Target) -> bytes:
    host = f"[{target.host}]" if ":" in target.host else target.host
    return (
        f"{spec.method} {spec.path} HTTP/1.1\r\nHost: {host}:{target.port}\r\n"
        "User-Agent: obreconcile-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    ).encode()


class DummyJar(aiohttp.DummyCookieJar):
    """Checks keep no cookies."""


def _strerror(code: int) -> str:
    return "connection refused" if code == errno.ECONNREFUSED else os.strerror(code).lower()


def _reason(error: BaseException) -> str:
    if isinstance(error, aiohttp.ClientConnectorError):
        error = error.os_error
    if isinstance(error, OSError) and error.errno == errno.ECONNREFUSED:
        return "connection refused"
    text = str(error) or type(error).__name__
    return text[:200]
