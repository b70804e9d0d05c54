"""Check strings (SPEC.md §3 grammar) and real probes: tcp, http, https against loopback servers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

import pytest

from reconciler.health.checks import (
    BASE_SPECS,
    CheckSpec,
    CheckStringError,
    Outcome,
    Target,
    checks_of,
    parse_request,
    spec_of,
)
from reconciler.health.probe import Prober
from reconciler.manifest.model import BaseCheck, Check, DesiredState, Listen, Upstream
from reconciler.resolve import Resolution
from tests.services.backends import HttpBackend


@pytest.mark.parametrize(
    ("base", "string", "expected"),
    [
        ("http", "", ("GET", "/", ((200, 399),), False)),
        ("http", "GET /healthz 200", ("GET", "/healthz", ((200, 200),), False)),
        ("http", "HEAD /a?b=c 200 301-302", ("HEAD", "/a?b=c", ((200, 200), (301, 302)), False)),
        ("https", "GET / verify", ("GET", "/", ((200, 399),), True)),
        ("https", "GET /x 204 verify", ("GET", "/x", ((204, 204),), True)),
    ],
)
def test_check_strings_parse(base: str, string: str, expected: tuple[object, ...]) -> None:
    assert parse_request(base, string) == expected


@pytest.mark.parametrize(
    ("base", "string"),
    [
        ("http", "get / 200"),
        ("http", "GET healthz"),
        ("http", "GET / 600"),
        ("http", "GET / 399-200"),
        ("http", "GET / verify"),
        ("http", "GET /a b"),
        ("https", "GET / 200 verify extra"),
        ("http", "GET / 200\n"),
    ],
)
def test_bad_check_strings_are_refused(base: str, string: str) -> None:
    with pytest.raises(CheckStringError):
        parse_request(base, string)


def test_custom_and_base_checks_of_an_upstream() -> None:
    custom = Check("fast", "ops", BaseCheck.HTTP, "GET /h 200", "200ms", "100ms", 2, 2)
    upstream = Upstream("web", "ops", Listen(), checks=("fast", "tcp"))
    specs = checks_of(upstream, DesiredState(checks={"fast": custom}))
    assert specs == [CheckSpec("fast", BaseCheck.HTTP, 0.2, 0.1, 2, 2, "GET", "/h", ((200, 200),)), BASE_SPECS["tcp"]]
    assert BASE_SPECS["http"].interval == 5.0 and BASE_SPECS["http"].fall == 3
    with pytest.raises(CheckStringError):
        spec_of(Check("bad", "ops", BaseCheck.TCP, "GET /"))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _probe(spec: CheckSpec, port: int) -> tuple[bool, str]:
    return await _probe_target(spec, Target("127.0.0.1", port))


async def _probe_target(spec: CheckSpec, target: Target) -> tuple[bool, str]:
    async with Prober(10) as prober:
        outcome = await prober.probe(spec, target)
    return outcome.passed, outcome.detail


def test_probes_against_real_servers() -> None:
    with HttpBackend("b") as backend:
        assert asyncio.run(_probe(CheckSpec("t", BaseCheck.TCP, timeout=1), backend.port)) == (True, "")
        assert asyncio.run(_probe(CheckSpec("h", BaseCheck.HTTP, timeout=1), backend.port)) == (True, "")
        wrong = CheckSpec("h", BaseCheck.HTTP, timeout=1, statuses=((500, 599),))
        assert asyncio.run(_probe(wrong, backend.port)) == (False, "status 200")
        # an https check against a plain http server fails (no TLS handshake), never raises
        passed, detail = asyncio.run(_probe(CheckSpec("s", BaseCheck.HTTPS, timeout=1), backend.port))
        assert not passed and detail
    closed = _closed_port()
    assert asyncio.run(_probe(CheckSpec("t", BaseCheck.TCP, timeout=1), closed)) == (False, "connection refused")
    assert asyncio.run(_probe(CheckSpec("h", BaseCheck.HTTP, timeout=1), closed))[0] is False


def test_a_silent_server_times_out() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # accepts connections, never answers
        port = listener.getsockname()[1]
        passed, detail = asyncio.run(_probe(CheckSpec("h", BaseCheck.HTTP, timeout=0.3), port))
    assert not passed and "0.3s" in detail


def test_the_prober_bounds_concurrency_and_every_probe_ends_once() -> None:
    """With 3 slots, 3 silent servers hold them: the other probes wait, then each ends exactly once."""

    async def scenario(ports: list[int]) -> tuple[list[int], list[Outcome], int]:
        outcomes: list[Outcome] = []
        async with Prober(3) as prober:
            seen = []
            for port in ports:
                prober.start(CheckSpec("h", BaseCheck.HTTP, timeout=0.3), Target("127.0.0.1", port), outcomes.append)
                seen.append(prober.running)
            await asyncio.sleep(0.1)
            assert outcomes == []  # the silent ones hold every slot
            while len(outcomes) < len(ports):
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.1)
            return seen, outcomes, prober.running

    listeners = [socket.socket() for _ in range(5)]
    try:
        for listener in listeners:
            listener.bind(("127.0.0.1", 0))
            listener.listen(8)  # accepts, never answers
        ports = [s.getsockname()[1] for s in listeners]
        seen, outcomes, running = asyncio.run(scenario(ports))
    finally:
        for listener in listeners:
            listener.close()
    assert seen == [1, 2, 3, 3, 3]
    assert len(outcomes) == 5 and all(not o.passed and "0.3s" in o.detail for o in outcomes)
    assert running == 0


def test_a_name_is_resolved_and_a_bad_name_fails() -> None:
    with HttpBackend("b") as backend:
        assert asyncio.run(_probe_target(CheckSpec("t", BaseCheck.HTTP, timeout=2), Target("localhost", backend.port)))[0]
    passed, detail = asyncio.run(_probe_target(CheckSpec("t", BaseCheck.TCP, timeout=2), Target("no-such-host.invalid", 80)))
    assert not passed and detail


def test_a_server_that_hangs_up_or_talks_nonsense_fails() -> None:
    def answering(answer: bytes) -> Callable[[socket.socket], object]:
        def behaviour(connection: socket.socket) -> object:
            connection.recv(4096)
            connection.sendall(answer)
            return None

        return behaviour

    for answer, expected in ((b"", "closed before answering"), (b"SSH-2.0-OpenSSH\r\n", "not an HTTP answer")):
        with _one_shot_server(answering(answer)) as (port, _):
            assert asyncio.run(_probe(CheckSpec("h", BaseCheck.HTTP, timeout=1), port)) == (False, expected)


@contextlib.contextmanager
def _one_shot_server(behaviour: Callable[[socket.socket], object]) -> Iterator[tuple[int, list[object]]]:
    """(port, seen): a listener that runs ``behaviour`` on its first connection and closes it;
    what ``behaviour`` returns (or raises) lands in ``seen`` by the end of the block."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    seen: list[object] = []

    def once() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.settimeout(5)
            try:
                seen.append(behaviour(connection))
            except OSError as e:
                seen.append(e)

    thread = threading.Thread(target=once, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], seen
    finally:
        thread.join(5)
        listener.close()


async def _probe_and_linger(spec: CheckSpec, port: int, linger: float) -> tuple[bool, str, float]:
    """Probe, then keep the prober open ``linger`` seconds (as serve does): (passed, detail, seconds)."""
    async with Prober(10) as prober:
        started = time.monotonic()
        outcome = await prober.probe(spec, Target("127.0.0.1", port))
        took = time.monotonic() - started
        await asyncio.sleep(linger)
    return outcome.passed, outcome.detail, took


def test_an_http_check_closes_in_order_after_the_server_does() -> None:
    """Headers first, the body 500 ms later: the check has its answer at the status line, yet
    the server can still send its body and sees an orderly close (no reset in its logs)."""

    def slow_body(connection: socket.socket) -> object:
        connection.recv(4096)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n")
        time.sleep(0.5)
        connection.sendall(b"ok")
        connection.shutdown(socket.SHUT_WR)
        return connection.recv(10)  # b"" on an orderly close; ConnectionResetError on a reset

    with _one_shot_server(slow_body) as (port, seen):
        passed, detail, took = asyncio.run(_probe_and_linger(CheckSpec("h", BaseCheck.HTTP, timeout=2), port, 1.0))
    assert (passed, detail) == (True, "") and took < 0.4
    assert seen == [b""]


def test_an_http_check_answers_at_once_when_the_server_keeps_the_connection() -> None:
    """A server that ignores Connection: close: the outcome still comes at the status line,
    and the connection is hung up at the check's timeout."""

    def keep_open(connection: socket.socket) -> object:
        connection.recv(4096)
        connection.sendall(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")
        started = time.monotonic()
        try:
            connection.recv(10)
        except ConnectionResetError:
            return round(time.monotonic() - started, 1)
        return "closed without a reset"

    with _one_shot_server(keep_open) as (port, seen):
        passed, detail, took = asyncio.run(_probe_and_linger(CheckSpec("h", BaseCheck.HTTP, timeout=0.5), port, 0.8))
    assert (passed, detail) == (False, "status 503")
    assert took < 0.3
    assert len(seen) == 1 and isinstance(seen[0], float) and 0.3 <= seen[0] <= 0.8, seen


class _OutageResolver:
    """DNS is down: one name still has its last known address, the other never had one."""

    def resolve(self, host: str) -> Resolution:
        known = ("127.0.0.1",) if host == "known.invalid" else ()
        return Resolution(known, "does not resolve: [Errno -2] Name or service not known")

    def remember(self, addresses: Mapping[str, Sequence[str]]) -> None: ...

    def learned(self) -> dict[str, tuple[str, ...]]:
        return {}


def test_a_name_that_does_not_resolve_is_checked_at_its_last_known_address() -> None:
    async def scenario(port: int) -> list[tuple[bool, str]]:
        async with Prober(10, _OutageResolver()) as prober:
            spec = CheckSpec("h", BaseCheck.HTTP, timeout=2)
            outcomes = [await prober.probe(spec, Target(host, port)) for host in ("known.invalid", "never.invalid")]
        return [(o.passed, o.detail) for o in outcomes]

    with HttpBackend("b") as backend:
        known, never = asyncio.run(scenario(backend.port))
    assert known == (True, "")
    assert never == (False, "does not resolve: [Errno -2] Name or service not known")
