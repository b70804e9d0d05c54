"""The finaliser refuses values unsafe in nginx configuration, even ones that skipped validation."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from reconciler.errors import RenderError
from reconciler.manifest.model import (
    Access,
    AccessNode,
    Backend,
    BackendTls,
    Balancing,
    Connection,
    DesiredState,
    Header,
    HttpProxy,
    Listen,
    Method,
    Retries,
    TcpProxy,
    Tls,
    Upstream,
)
from reconciler.render import render
from reconciler.render.templates import make_environment
from reconciler.resolve import StaticResolver
from tests.render.desired import refusal

INJECTIONS = [
    "a; ssl_engine /tmp/x.so",
    "x}\nserver {",
    "a.example.com;include/etc/passwd",
    "a{",
    "$host",
    "a#b",
    'a"b',
    "a'b",
    "a\\b",
    "a`id`",
    "a\tb",
    "a\x00b",
    "a\rb",
    "",
    "ä.example.com",
]


def state(upstream: Upstream, node: AccessNode | None = None) -> DesiredState:
    """A desired state built directly from model objects: no schema, no validation."""
    node = node or AccessNode("lb", "ops", Connection("local"), upstreams=(upstream.name,))
    return DesiredState(upstreams={upstream.name: upstream}, access_nodes={node.name: node})


def web(*, server_name: str = "web.example.com", hostname: str = "10.0.0.1:80", fail_timeout: str = "10s") -> Upstream:
    return Upstream("web", "ops", Listen("http", (server_name,)), nodes=(Backend(hostname, fail_timeout=fail_timeout),))


@pytest.mark.parametrize("value", INJECTIONS)
def test_an_unsafe_server_name_is_refused_naming_its_field(value: str) -> None:
    refused = refusal(render(state(web(server_name=value)), resolver=StaticResolver({})))
    assert refused.field == "upstream.server_names[0]" and refused.value == repr(value)
    assert "upstream.server_names[0]" in refused.message and repr(value) in refused.message


@pytest.mark.parametrize("value", ["x}\nserver {", "a; ssl_engine /tmp/x.so"])
def test_an_unsafe_backend_hostname_is_refused(value: str) -> None:
    resolver = StaticResolver({}, default=["10.0.0.9"])  # even a resolver that answers everything
    assert refusal(render(state(web(hostname=value)), resolver=resolver)).field == "upstream.servers[0].hostname"


def test_an_unsafe_fail_timeout_is_refused() -> None:
    refused = refusal(render(state(web(fail_timeout="10s; ssl_engine x")), resolver=StaticResolver({})))
    assert refused.field == "upstream.servers[0].fail_timeout" and "upstream.servers[0].fail_timeout" in refused.message


def test_an_unsafe_access_node_value_is_refused() -> None:
    node = AccessNode("lb", "ops", Connection("local"), listen_address="1.2.3.4:80;\nx")
    with pytest.raises(RenderError, match=r"access node lb: .*refusing (listen|access_node\.http_listen) value"):
        render(DesiredState(access_nodes={"lb": node}), resolver=StaticResolver({}))
    named = dataclasses.replace(node, name="lb\n}", listen_address="*")
    with pytest.raises(RenderError, match=r"access_node\.name"):
        render(DesiredState(access_nodes={named.name: named}), resolver=StaticResolver({}))


def test_safe_values_and_integers_pass() -> None:
    template = make_environment().from_string("{{ a }} {{ b }} {{ c }}")
    assert template.render(a="[2001:db8::1]:8080", b=1000, c="*.example.com") == "[2001:db8::1]:8080 1000 *.example.com"


def test_values_a_user_template_computes_are_refused_too(tmp_path: Path) -> None:
    (tmp_path / "http_default.conf.j2").write_text('server { {{ "a b" }} }')
    with pytest.raises(RenderError, match="refusing value 'a b'"):
        render(DesiredState(access_nodes={"lb": AccessNode("lb", "ops", Connection())}), templates=tmp_path)


def test_undefined_variables_are_errors(tmp_path: Path) -> None:
    (tmp_path / "http_default.conf.j2").write_text("{{ nope }}")
    with pytest.raises(RenderError, match="'nope' is undefined"):
        render(DesiredState(access_nodes={"lb": AccessNode("lb", "ops", Connection())}), templates=tmp_path)


def test_a_broken_user_template_is_a_render_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "http_upstream.conf.j2").write_text("line one\n{% if %}\n")
    with pytest.raises(RenderError, match=r"http_upstream\.conf\.j2:2: "):
        render(DesiredState(), templates=tmp_path)


def test_an_error_raised_by_a_user_template_is_a_render_error(tmp_path: Path) -> None:
    (tmp_path / "header.conf.j2").write_text("{{ 1 // 0 }}")
    with pytest.raises(RenderError, match=r"access node lb: template header\.conf\.j2: integer division"):
        render(DesiredState(access_nodes={"lb": AccessNode("lb", "ops", Connection())}), templates=tmp_path)


def _http(**proxy: Any) -> HttpProxy:
    return HttpProxy(**proxy)


def _https(**tls: Any) -> HttpProxy:
    return HttpProxy(
        backend_protocol="https", backend_tls=BackendTls(**{"server_name": "a", "ca_certificate": "/c", **tls})
    )


# Every string field of the edge sections that reaches nginx: a model with the value put there.
EDGE_FIELDS: dict[str, Callable[[str], Upstream]] = {
    "upstream.balancing.key": lambda v: replace(web(), balancing=Balancing(Method.HASH, v)),
    "upstream.balancing.key:cookie": lambda v: replace(web(), balancing=Balancing(Method.HASH, "$cookie_" + v)),
    "upstream.balancing.method": lambda v: replace(web(), balancing=Balancing(v)),  # type: ignore[arg-type]
    "upstream.proxy.connect_timeout": lambda v: replace(web(), proxy=_http(connect_timeout=v)),
    "upstream.proxy.send_timeout": lambda v: replace(web(), proxy=_http(send_timeout=v)),
    "upstream.proxy.read_timeout": lambda v: replace(web(), proxy=_http(read_timeout=v)),
    "upstream.proxy.client_max_body_size": lambda v: replace(web(), proxy=_http(client_max_body_size=v)),
    "upstream.proxy.retries.conditions[0]": lambda v: replace(web(), proxy=_http(retries=Retries((v,)))),  # type: ignore[arg-type]
    "upstream.proxy.retries.timeout": lambda v: replace(web(), proxy=_http(retries=Retries(timeout=v))),
    "upstream.proxy.headers[0].name": lambda v: replace(web(), proxy=_http(headers=(Header(v, "x"),))),
    "upstream.proxy.headers[0].value": lambda v: replace(web(), proxy=_http(headers=(Header("X-A", v),))),
    "upstream.proxy.headers[0].variable": lambda v: replace(web(), proxy=_http(headers=(Header("X-A", None, v),))),
    "upstream.proxy.headers[0].variable:$": lambda v: replace(
        web(), proxy=_http(headers=(Header("X-A", None, "$" + v),))
    ),
    "upstream.proxy.backend_protocol": lambda v: replace(web(), proxy=_http(backend_protocol=v)),
    "upstream.proxy.tls.server_name": lambda v: replace(web(), proxy=_https(server_name=v)),
    "upstream.proxy.tls.ca_certificate": lambda v: replace(web(), proxy=_https(ca_certificate=v)),
    "upstream.access.allow[0]": lambda v: replace(web(), access=Access(allow=(v,))),
    "upstream.access.deny[0]": lambda v: replace(web(), access=Access(deny=(v,))),
    "upstream.tls.certificate": lambda v: replace(web(), tls=Tls(v, "/k.pem")),
    "upstream.tls.key": lambda v: replace(web(), tls=Tls("/c.pem", v)),
    "upstream.path": lambda v: replace(web(), listen=Listen("http", ("web.example.com",), path=v)),
    "upstream.proxy.timeout": lambda v: replace(web(), listen=Listen("tcp", port=5432), proxy=TcpProxy(timeout=v)),
    "upstream.proxy.connect_timeout:tcp": lambda v: replace(
        web(), listen=Listen("tcp", port=5432), proxy=TcpProxy(connect_timeout=v)
    ),
}


# Values that are allowed where they are: the allow-listed hash key and variable, an empty SNI name (none).
ALLOWED_THERE = {
    ("upstream.balancing.key", "$host"),
    ("upstream.proxy.headers[0].variable", "$host"),
    ("upstream.proxy.tls.server_name", ""),
}


@pytest.mark.parametrize(
    ("place", "value"),
    [(p, v) for p in sorted(EDGE_FIELDS) for v in INJECTIONS if (p, v) not in ALLOWED_THERE],
)
def test_an_unsafe_value_in_any_edge_field_never_reaches_nginx(place: str, value: str) -> None:
    refused = refusal(render(state(EDGE_FIELDS[place](value)), resolver=StaticResolver({})))
    field = place.partition(":")[0]
    assert refused.field == field or refused.field.startswith(field.rpartition(".")[0])
