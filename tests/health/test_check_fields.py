"""A check's Host header and expected body text, against real servers; unknown methods refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from reconciler.health.checks import CheckSpec, CheckStringError, Target, parse_request, spec_of
from reconciler.health.probe import Prober
from reconciler.manifest.model import BaseCheck, Check
from tests.services.backends import HttpBackend
from tests.services.pki import TestCA


def probe(spec: CheckSpec, port: int) -> tuple[bool, str]:
    async def run() -> tuple[bool, str]:
        async with Prober(10) as prober:
            outcome = await prober.probe(spec, Target("127.0.0.1", port))
        return outcome.passed, outcome.detail

    return asyncio.run(run())


def test_a_check_names_the_host_it_asks_for() -> None:
    with HttpBackend("b1") as backend:
        spec = spec_of(Check("c", "ops", BaseCheck.HTTP, "GET /healthz 200", host="api.example.com"))
        assert probe(spec, backend.port) == (True, "")
        assert backend.last_headers["Host"] == "api.example.com"
        assert probe(spec_of(Check("c", "ops", BaseCheck.HTTP)), backend.port) == (True, "")
        assert backend.last_headers["Host"] == f"127.0.0.1:{backend.port}"  # the default


@pytest.mark.parametrize("base", [BaseCheck.HTTP, BaseCheck.HTTPS])
def test_a_check_can_expect_a_text_in_the_body(base: BaseCheck, tmp_path: Path) -> None:
    tls = TestCA(tmp_path / "pki").issue("b", ["127.0.0.1"]) if base is BaseCheck.HTTPS else None
    with HttpBackend("status: ready", tls=tls) as backend:
        found = spec_of(Check("c", "ops", base, "GET / 200", expect="ready"))
        assert probe(found, backend.port) == (True, "")
        missing = spec_of(Check("c", "ops", base, "GET / 200", expect="draining"))
        assert probe(missing, backend.port) == (False, "body lacks 'draining'")
        wrong_status = spec_of(Check("c", "ops", base, "GET / 500", expect="ready"))
        assert probe(wrong_status, backend.port) == (False, "status 200")


@pytest.mark.parametrize("method", ["FETCH", "GETS", "CONNECT", "TRACE", "get"])
def test_unknown_methods_are_refused(method: str) -> None:
    with pytest.raises(CheckStringError):
        parse_request("http", f"{method} /healthz 200")


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"])
def test_known_methods_parse(method: str) -> None:
    assert parse_request("http", f"{method} /healthz 200")[0] == method
