"""Health checks: what each check of an upstream is (parsed once), and how one probe runs.

SPEC.md §3: base checks ``tcp`` (connect within the timeout, ``string`` empty), ``http`` and
``https`` (``string`` is ``METHOD PATH [STATUS…]``, default ``GET / 200-399``; https does not
verify certificates unless the string ends with `` verify``). An upstream's ``checks`` name
custom Check objects or the base checks themselves (interval 5s, timeout 2s, rise 2, fall 3).

``CheckSpec`` is the parsed form; ``Prober`` runs probes on the event loop it is used from:
tcp with ``asyncio.open_connection``, http(s) with one aiohttp session, every probe under
one semaphore (bounded concurrency) and its own timeout. A probe never raises: it answers
an ``Outcome`` (passed or not, a short detail, seconds taken).
"""

from __future__ import annotations

import asyncio
import collections
import errno
import re
import socket
import ssl
import struct
import time
from dataclasses import dataclass

import aiohttp

from reconciler.manifest.model import (
    BASE_CHECKS,
    DEFAULT_HTTP_CHECK,
    Backend,
    Check,
    DesiredState,
    Upstream,
    duration_seconds,
)
from reconciler.resolve import ip_literal

_REQUEST = re.compile(r"^([A-Z]{1,16}) (/[!-~]{0,1000})((?: [1-5][0-9]{2}(?:-[1-5][0-9]{2})?){0,16})( verify)?$")


_RESET = struct.pack("ii", 1, 0)


class CheckStringError(ValueError):
    """A check string that does not follow SPEC.md §3's grammar."""


@dataclass(frozen=True)
class CheckSpec:
    """One check, parsed: what to send, what counts as a pass, and how often."""

    name: str
    base: str  # tcp | http | https
    interval: float = 5.0
    timeout: float = 2.0
    rise: int = 2
    fall: int = 3
    method: str = "GET"
    path: str = "/"
    statuses: tuple[tuple[int, int], ...] = ((200, 399),)
    verify: bool = False

    def accepts(self, status: int) -> bool:
        return any(low <= status <= high for low, high in self.statuses)


def parse_request(base: str, string: str) -> tuple[str, str, tuple[tuple[int, int], ...], bool]:
    """(method, path, status ranges, verify) of an http(s) check string; CheckStringError if bad."""
    text = string or DEFAULT_HTTP_CHECK
    match = _REQUEST.fullmatch(text)
    if match is None:
        raise CheckStringError(f"{base} check string {string!r} is not 'METHOD PATH [STATUS...]'")
    method, path, codes, verify = match.groups()
    if verify and base != "https":
        raise CheckStringError(f"{base} check string {string!r}: only https checks take 'verify'")
    statuses = []
    for code in codes.split():
        low, _, high = code.partition("-")
        first, last = int(low), int(high or low)
        if first > last:
            raise CheckStringError(f"{base} check string {string!r}: empty status range {code}")
        statuses.append((first, last))
    return method, path, tuple(statuses) or ((200, 399),), bool(verify)


def spec_of(check: Check) -> CheckSpec:
    """The parsed form of a custom check (CheckStringError when its string is not valid)."""
    base = check.base_check
    times = duration_seconds(check.interval), duration_seconds(check.timeout)
    if base == "tcp":
        if check.string:
            raise CheckStringError(f"check {check.name}: a tcp check takes no string")
        return CheckSpec(check.name, base, *times, check.rise, check.fall)
    method, path, statuses, verify = parse_request(base, check.string)
    return CheckSpec(check.name, base, *times, check.rise, check.fall, method, path, statuses, verify)


BASE_SPECS = {name: CheckSpec(name, name) for name in BASE_CHECKS}


def checks_of(upstream: Upstream, state: DesiredState) -> list[CheckSpec]:
    """The checks of an upstream, parsed; a name that is neither custom nor base is skipped."""
    specs = []
    for name in upstream.checks:
        custom = state.checks.get(name)
        if custom is not None:
            specs.append(spec_of(custom))
        elif name in BASE_SPECS:
            specs.append(BASE_SPECS[name])
    return specs


@dataclass(frozen=True)
class Outcome:
    passed: bool
    detail: str
    seconds: float


@dataclass(frozen=True)
class Target:
    """Where a probe goes: the backend's host (an address or a name) and port."""

    host: str
    port: int

    @classmethod
    def of(cls, backend: Backend) -> Target:
        host, port = backend.address
        return cls(host, port)

    def url(self, spec: CheckSpec) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if spec.base == 'https' else 'http'}://{host}:{self.port}{spec.path}"


class Slots:
    """A semaphore that wakes its next waiter in O(1).

    asyncio.Semaphore (3.11) scans its whole queue of waiters on every release: with a
    thousand checks waiting, that scan cost more than the checks themselves.
    """

    def __init__(self, size: int) -> None:
        self.free = size
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def __aenter__(self) -> None:
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # the slot is handed over by __aexit__
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed a slot just as we were cancelled: pass it on
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._release()

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1


class Prober:
    """Runs probes with bounded concurrency; use ``async with Prober(...)`` on the serving loop."""

    def __init__(self, concurrency: int = 1000) -> None:
        self.concurrency = concurrency
        self._slots = Slots(concurrency)
        self._session: aiohttp.ClientSession | None = None
        self._verified = ssl.create_default_context()

    async def __aenter__(self) -> Prober:
        # A new connection per check (like HAProxy): a kept-alive socket would hide a restart.
        connector = aiohttp.TCPConnector(limit=0, force_close=True, ttl_dns_cache=30)
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False, cookie_jar=DummyJar())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def probe(self, spec: CheckSpec, target: Target) -> Outcome:
        async with self._slots:
            started = time.perf_counter()
            try:
                async with asyncio.timeout(spec.timeout):
                    if spec.base == "tcp":
                        detail = await self._tcp(target)
                    else:
                        detail = await self._http(spec, target)
            except TimeoutError:
                detail = f"no answer within {spec.timeout:g}s"
            except (OSError, aiohttp.ClientError, ssl.SSLError) as e:
                detail = _reason(e)
            return Outcome(detail == "", detail, time.perf_counter() - started)

    async def _tcp(self, target: Target) -> str:
        """Connect and close: a bare non-blocking socket (a stream would cost several times more)."""
        loop = asyncio.get_running_loop()
        literal = ip_literal(target.host)
        if literal is None:
            infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
            family, address = infos[0][0], infos[0][4]
        else:
            family = socket.AF_INET6 if ":" in literal else socket.AF_INET
            address = (literal, target.port)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)  # close with RST: no TIME_WAIT
            await loop.sock_connect(sock, address)
        finally:
            sock.close()
        return ""

    async def _http(self, spec: CheckSpec, target: Target) -> str:
        if spec.base == "http":
            status = await _plain_http_status(spec, target)
            return "" if spec.accepts(status) else f"status {status}"
        assert self._session is not None, "use the Prober in an async with block"
        tls: ssl.SSLContext | bool = (self._verified if spec.verify else False) if spec.base == "https" else True
        async with self._session.request(spec.method, target.url(spec), allow_redirects=False, ssl=tls) as response:
            if spec.accepts(response.status):
                return ""
            return f"status {response.status}"


class _StatusLine(asyncio.Protocol):
    """Send one request, read up to the status line, hang up."""

    def __init__(self, request: bytes, answer: asyncio.Future[int]) -> None:
        self.request, self.answer, self.buffer = request, answer, b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        line, found, _ = self.buffer.partition(b"\r\n")
        if not found and len(self.buffer) < 1024:
            return
        parts = line.split(b" ", 2)
        if not self.answer.done():
            if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit() and len(parts[1]) == 3:
                self.answer.set_result(int(parts[1]))
            else:
                self.answer.set_exception(ConnectionError("not an HTTP answer"))
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc or ConnectionResetError("closed before answering"))


async def _plain_http_status(spec: CheckSpec, target: Target) -> int:
    """The status of one plain-HTTP request.

    aiohttp's client costs about 0.6 ms of CPU per request (measured: bench/health.py); a
    request line, a Host header and the status line is all an http check needs, and costs a
    fraction of that, so that 5,000 checks a second fit in less than one core.
    """
    loop = asyncio.get_running_loop()
    host = f"[{target.host}]" if ":" in target.host else target.host
    request = (
        f"{spec.method} {spec.path} HTTP/1.1\r\nHost: {host}:{target.port}\r\n"
        "User-Agent: obreconcile-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    ).encode()
    answer: asyncio.Future[int] = loop.create_future()
    answer.add_done_callback(_retrieved)  # an answer after a timeout is nobody's: never log it
    transport, _ = await loop.create_connection(lambda: _StatusLine(request, answer), target.host, target.port)
    try:
        return await answer
    finally:
        transport.abort()


def _retrieved(future: asyncio.Future[int]) -> None:
    if not future.cancelled():
        future.exception()


class DummyJar(aiohttp.DummyCookieJar):
    """Checks keep no cookies."""


def _reason(error: BaseException) -> str:
    if isinstance(error, aiohttp.ClientConnectorError):
        error = error.os_error
    if isinstance(error, OSError) and error.errno == errno.ECONNREFUSED:
        return "connection refused"
    text = str(error) or type(error).__name__
    return text[:200]
