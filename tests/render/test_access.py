"""Access rules: allow and deny lists of networks (403), a rate limit per client address (429)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from reconciler.manifest.model import Access, RateLimit
from reconciler.render.renderer import render
from reconciler.resolve import StaticResolver
from tests.render.desired import access_node, refusal, state_of, upstream
from tests.render.live import deploy, get
from tests.services.backends import HttpBackend
from tests.services.nginx import Nginx, free_port


def files(*docs: dict[str, Any]) -> dict[str, str]:
    state = state_of([*docs, access_node("lb", *(d["name"] for d in docs))])
    return dict(render(state, resolver=StaticResolver({}))["lb"].files)


def test_what_access_rules_render() -> None:
    access = {"allow": ["10.0.0.0/8", "2001:db8::/32"], "deny": ["10.1.0.0/16"], "rate_limit": {"rps": 5, "burst": 10}}
    text = files(upstream("admin", "10.0.0.1", access=access))["http/admin.conf"]
    assert text.index("deny 10.1.0.0/16;") < text.index("allow 10.0.0.0/8;") < text.index("deny all;")
    assert "allow 2001:db8::/32;" in text
    assert "limit_req_zone $binary_remote_addr zone=ob_admin:7m rate=5r/s;" in text  # 100,000 clients
    assert "limit_req zone=ob_admin burst=10 nodelay;" in text and "limit_req_status 429;" in text
    deny_only = files(upstream("web", "10.0.0.1", access={"deny": ["192.0.2.7"]}))["http/web.conf"]
    assert "deny 192.0.2.7/32;" in deny_only and "deny all;" not in deny_only


@pytest.mark.parametrize(
    ("access", "field"),
    [
        (Access(allow=("10.0.0.1/8",)), "upstream.access.allow[0]"),
        (Access(deny=("10.0.0.0/8; allow all",)), "upstream.access.deny[0]"),
        (Access(allow=("all",)), "upstream.access.allow[0]"),
        (Access(rate_limit=RateLimit(0)), "upstream.access.rate_limit"),
        (Access(rate_limit=RateLimit("5r/s; x")), "upstream.access.rate_limit"),  # type: ignore[arg-type]
    ],
)
def test_a_value_outside_the_allow_lists_never_reaches_nginx(access: Access, field: str) -> None:
    state = state_of([upstream("web", "10.0.0.1"), access_node("lb", "web")])
    broken = replace(state, upstreams={"web": replace(state.upstreams["web"], access=access)})
    assert refusal(render(broken, resolver=StaticResolver({}))).field == field


@pytest.fixture
def backend() -> Iterator[HttpBackend]:
    with HttpBackend("b1") as b1:
        yield b1


def serve(nginx: Nginx, backend: HttpBackend, access: dict[str, Any]) -> int:
    port = free_port()
    docs = [upstream("web", f"127.0.0.1:{backend.port}", access=access)]
    deploy(nginx, [*docs, access_node(f"127.0.0.1:{port}", "web", listen_address="127.0.0.1")])
    return port


def test_an_allow_list_answers_403_to_other_networks(nginx: Nginx, backend: HttpBackend) -> None:
    port = serve(nginx, backend, {"allow": ["127.0.0.1/32"]})
    assert get(port, "web", source="127.0.0.1").status == 200
    assert get(port, "web", source="127.0.0.2").status == 403  # loopback too, but not allowed
    assert backend.hits == 1


def test_a_deny_list_answers_403_to_its_networks(nginx: Nginx, backend: HttpBackend) -> None:
    port = serve(nginx, backend, {"deny": ["127.0.0.2"], "allow": ["127.0.0.0/8"]})
    assert get(port, "web", source="127.0.0.2").status == 403
    assert get(port, "web", source="127.0.0.3").status == 200


def test_past_the_rate_limit_clients_get_429(nginx: Nginx, backend: HttpBackend) -> None:
    port = serve(nginx, backend, {"rate_limit": {"rps": 1, "burst": 2}})
    statuses = [get(port, "web", source="127.0.0.1").status for _ in range(6)]
    assert statuses[:3] == [200, 200, 200] and statuses[-1] == 429  # one at the rate, two of burst
    assert get(port, "web", source="127.0.0.4").status == 200  # per client address
