"""Check strings (SPEC.md §3 grammar) and real probes: tcp, http, https against loopback servers."""

from __future__ import annotations

import asyncio
import socket

import pytest

from reconciler.health.checks import (
    BASE_SPECS,
    CheckSpec,
    CheckStringError,
    Prober,
    Target,
    checks_of,
    parse_request,
    spec_of,
)
from reconciler.manifest.model import Check, DesiredState, Listen, Upstream
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
    custom = Check("fast", "ops", "http", "GET /h 200", "200ms", "100ms", 2, 2)
    upstream = Upstream("web", "ops", Listen(), checks=("fast", "tcp"))
    specs = checks_of(upstream, DesiredState(checks={"fast": custom}))
    assert specs == [CheckSpec("fast", "http", 0.2, 0.1, 2, 2, "GET", "/h", ((200, 200),)), BASE_SPECS["tcp"]]
    assert BASE_SPECS["http"].interval == 5.0 and BASE_SPECS["http"].fall == 3
    with pytest.raises(CheckStringError):
        spec_of(Check("bad", "ops", "tcp", "GET /"))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _probe(spec: CheckSpec, port: int) -> tuple[bool, str]:
    async with Prober(10) as prober:
        outcome = await prober.probe(spec, Target("127.0.0.1", port))
    return outcome.passed, outcome.detail


def test_probes_against_real_servers() -> None:
    with HttpBackend("b") as backend:
        assert asyncio.run(_probe(CheckSpec("t", "tcp", timeout=1), backend.port)) == (True, "")
        assert asyncio.run(_probe(CheckSpec("h", "http", timeout=1), backend.port)) == (True, "")
        wrong = CheckSpec("h", "http", timeout=1, statuses=((500, 599),))
        assert asyncio.run(_probe(wrong, backend.port)) == (False, "status 200")
        # an https check against a plain http server fails (no TLS handshake), never raises
        passed, detail = asyncio.run(_probe(CheckSpec("s", "https", timeout=1), backend.port))
        assert not passed and detail
    closed = _closed_port()
    assert asyncio.run(_probe(CheckSpec("t", "tcp", timeout=1), closed)) == (False, "connection refused")
    assert asyncio.run(_probe(CheckSpec("h", "http", timeout=1), closed))[0] is False


def test_a_silent_server_times_out() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # accepts connections, never answers
        port = listener.getsockname()[1]
        passed, detail = asyncio.run(_probe(CheckSpec("h", "http", timeout=0.3), port))
    assert not passed and "0.3s" in detail


def test_slots_bound_concurrency_and_survive_cancellation() -> None:
    from reconciler.health.checks import Slots

    async def scenario() -> tuple[int, int]:
        slots = Slots(3)
        running = peak = 0

        async def one() -> None:
            nonlocal running, peak
            async with slots:
                running += 1
                peak = max(peak, running)
                await asyncio.sleep(0.01)
                running -= 1

        tasks = [asyncio.create_task(one()) for _ in range(20)]
        await asyncio.sleep(0)
        tasks[10].cancel()  # a waiter cancelled in the queue
        await asyncio.gather(*tasks, return_exceptions=True)
        return peak, slots.free

    assert asyncio.run(scenario()) == (3, 3)
