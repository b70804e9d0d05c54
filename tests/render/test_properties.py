"""Hypothesis: for arbitrary valid models, rendering succeeds, is deterministic, and nginx -t accepts it."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.manifest.model import HEADER_VARIABLES, STREAM_METHODS, Method, RetryCondition
from reconciler.render.renderer import render
from reconciler.resolve import StaticResolver
from tests.render.desired import access_node, state_of, upstream
from tests.services.nginx import Nginx, include_http, include_stream
from tests.services.pki import TestCA

RESOLVER = StaticResolver({"app.internal": ["10.1.1.1"], "multi.internal": ["10.1.1.2", "fd00::2", "10.1.1.3"]})
LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True)
PORT = st.integers(1, 65535)


@st.composite
def hostnames(draw: st.DrawFn) -> str:
    host = draw(
        st.one_of(
            st.sampled_from(["app.internal", "multi.internal", "gone.internal"]),
            st.ip_addresses(v=4).map(str),
            st.ip_addresses(v=6).map(lambda ip: f"[{ip}]"),
        )
    )
    port = draw(st.none() | PORT)
    return host if port is None else f"{host}:{port}"


@st.composite
def backends(draw: st.DrawFn) -> dict[str, Any]:
    node: dict[str, Any] = {"hostname": draw(hostnames())}
    for key, strategy in {
        "weight": st.integers(1, 1000),
        "max_fails": st.integers(0, 1000),
        "fail_timeout": st.from_regex(r"[0-9]{1,6}(ms|s|m|h|d)?", fullmatch=True),
        "force_status": st.sampled_from(["up", "down", "normal", "u", "d", "n"]),
        "failover": st.integers(0, 100),
    }.items():
        if draw(st.booleans()):
            node[key] = draw(strategy)
    return node


HASH_KEYS = st.sampled_from(["$remote_addr", "$request_uri", "$host"]) | st.from_regex(
    r"\$cookie_[A-Za-z0-9_]{1,64}", fullmatch=True
)


@st.composite
def balancings(draw: st.DrawFn, tcp: bool) -> dict[str, Any]:
    methods = [m for m in Method if not (tcp and m not in STREAM_METHODS)]
    method = draw(st.sampled_from(methods))
    out: dict[str, Any] = {} if method is Method.ROUND_ROBIN and draw(st.booleans()) else {"method": method.value}
    if method is Method.HASH:
        out["key"] = "$remote_addr" if tcp else draw(HASH_KEYS)
        if draw(st.booleans()):
            out["consistent"] = draw(st.booleans())
    return out


DURATION = st.from_regex(r"[1-9][0-9]{0,2}(ms|s|m)?", fullmatch=True)
CA_PLACEHOLDER = "/ca-placeholder.pem"  # replaced by real files before nginx -t reads them
CERT_PLACEHOLDER = "/cert-placeholder.pem"
KEY_PLACEHOLDER = "/key-placeholder.pem"


def _optional(draw: st.DrawFn, out: dict[str, Any], key: str, strategy: st.SearchStrategy[Any]) -> None:
    if draw(st.booleans()):
        out[key] = draw(strategy)


@st.composite
def headers(draw: st.DrawFn) -> list[dict[str, Any]]:
    names = draw(st.lists(st.from_regex(r"X-[A-Za-z0-9-]{1,20}", fullmatch=True), max_size=3, unique_by=str.lower))
    out = []
    for name in names:
        if draw(st.booleans()):
            out.append({"name": name, "variable": draw(st.sampled_from(sorted(HEADER_VARIABLES)))})
        else:
            out.append(
                {"name": name, "value": draw(st.from_regex(r"[A-Za-z0-9._:/\[\]*@+=,~%-]{1,40}", fullmatch=True))}
            )
    return out


@st.composite
def proxies(draw: st.DrawFn, tcp: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _optional(draw, out, "connect_timeout", DURATION)
    if tcp:
        _optional(draw, out, "timeout", DURATION)
        _optional(draw, out, "proxy_protocol", st.booleans())
        return out
    for key in ("send_timeout", "read_timeout"):
        _optional(draw, out, key, DURATION)
    _optional(draw, out, "client_max_body_size", st.from_regex(r"[0-9]{1,4}[kmg]?", fullmatch=True))
    _optional(draw, out, "buffering", st.booleans())
    _optional(draw, out, "websockets", st.booleans())
    _optional(draw, out, "keepalive", st.integers(0, 10000))
    _optional(draw, out, "headers", headers())
    if draw(st.booleans()):
        retries: dict[str, Any] = {}
        conditions = [c.value for c in RetryCondition if c is not RetryCondition.OFF]
        _optional(
            draw,
            retries,
            "conditions",
            st.just(["off"]) | st.lists(st.sampled_from(conditions), min_size=1, unique=True),
        )
        _optional(draw, retries, "tries", st.integers(0, 100))
        _optional(draw, retries, "timeout", st.just("0") | DURATION)
        out["retries"] = retries
    if draw(st.booleans()):
        out["backend_protocol"] = "https"
        if draw(st.booleans()):
            out["backend_tls"] = {"server_name": "api.internal", "ca_certificate": CA_PLACEHOLDER}
        else:
            out["backend_tls"] = {"verify": False}
            _optional(draw, out["backend_tls"], "server_name", st.just("api.internal"))
    return out


@st.composite
def networks(draw: st.DrawFn) -> str:
    address = draw(st.ip_addresses(v=4) | st.ip_addresses(v=6))
    prefix = draw(st.integers(0, address.max_prefixlen))
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


@st.composite
def accesses(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _optional(draw, out, "allow", st.lists(networks(), max_size=4, unique=True))
    _optional(draw, out, "deny", st.lists(networks(), max_size=4, unique=True))
    if draw(st.booleans()):
        limit: dict[str, Any] = {"rps": draw(st.integers(1, 100000))}
        _optional(draw, limit, "burst", st.integers(0, 100000))
        _optional(draw, limit, "clients", st.integers(1000, 10000000))
        out["rate_limit"] = limit
    return out


def _address_key(node: dict[str, Any]) -> str:
    hostname = str(node["hostname"])
    return hostname if hostname.rpartition(":")[2].isdigit() and not hostname.endswith("]") else hostname + ":80"


@st.composite
def fleets(draw: st.DrawFn) -> tuple[list[dict[str, Any]], dict[str, dict[str, bool]]]:
    http_port = draw(PORT)
    names = draw(st.lists(LABEL, min_size=1, max_size=4, unique=True))
    ports = draw(st.lists(PORT.filter(lambda p: p != http_port), min_size=5, max_size=5, unique=True))
    tcp_ports, https_port = iter(ports[:4]), ports[4]
    tls: dict[str, Any] | None = None  # one for every http upstream: names shared by path share it
    if draw(st.booleans()):
        tls = {"certificate": CERT_PLACEHOLDER, "key": KEY_PLACEHOLDER}
        _optional(draw, tls, "redirect_http", st.booleans())
        if draw(st.booleans()):
            hsts: dict[str, Any] = {}
            _optional(draw, hsts, "max_age", st.integers(0, 63072000))
            _optional(draw, hsts, "include_subdomains", st.booleans())
            tls["hsts"] = hsts
    docs: list[dict[str, Any]] = []
    health: dict[str, dict[str, bool]] = {}
    http_names: list[str] = []
    for name in names:
        nodes = draw(st.lists(backends(), max_size=5, unique_by=_address_key))
        usable = sum(1 for n in nodes if n.get("force_status", "normal") not in ("down", "d"))
        if nodes and not usable:
            nodes[0]["force_status"] = "up"
            usable = 1
        fields: dict[str, Any] = {"min_servers": draw(st.integers(1, max(usable, 1)))}
        tcp = draw(st.booleans())
        balancing = draw(balancings(tcp))
        if balancing:
            fields["balancing"] = balancing
        proxy = draw(proxies(tcp))
        if proxy:
            fields["proxy"] = proxy
        if not Method(balancing.get("method", "round_robin")).takes_backup:
            for n in nodes:
                n.pop("failover", None)  # nginx has no backup servers with these methods
        if tcp:
            fields["listen"] = {"protocol": "tcp", "port": next(tcp_ports)}
        elif draw(st.booleans()) and http_names:  # a route: another upstream's names, a path of its own
            shared = draw(st.lists(st.sampled_from(http_names), min_size=1, max_size=3, unique=True))
            fields["listen"] = {"server_names": shared, "path": f"/{name}/v1/" if draw(st.booleans()) else f"/{name}/"}
            if draw(st.booleans()):
                fields["listen"]["strip_path"] = draw(st.booleans())
        elif draw(st.booleans()):
            labels = draw(st.lists(LABEL, min_size=1, max_size=3, unique=True))
            shapes = ["{}.{}.test", "*.{}.{}.test", "{}.{}.*"]
            picks = [draw(st.sampled_from(shapes)) for _ in labels]
            fields["listen"] = {"server_names": [p.format(label, name) for label, p in zip(labels, picks, strict=True)]}
        if not tcp and tls is not None:
            fields["tls"] = tls
        if not tcp and (access := draw(accesses())):
            fields["access"] = access
        if not tcp:
            http_names.extend(fields.get("listen", {}).get("server_names", [name]))
        docs.append(upstream(name, *nodes, **fields))
        health[name] = {n["hostname"]: draw(st.booleans()) for n in nodes}
    address = draw(st.sampled_from(["*", "127.0.0.1", "[::1]"]))
    node_fields: dict[str, Any] = {"listen_address": address, "https_port": https_port}
    _optional(draw, node_fields, "http2", st.booleans())
    docs.append(access_node(f"lb.test:{http_port}", *names, **node_fields))
    return docs, health


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, str]:
    """Real files for the placeholders: nginx -t reads certificates, keys and CA bundles."""
    ca = TestCA(tmp_path / "pki")
    cert, key = ca.issue("site", ["site.test"])
    return {CA_PLACEHOLDER: str(ca.certificate), CERT_PLACEHOLDER: str(cert), KEY_PLACEHOLDER: str(key)}


def with_files(text: str, files: dict[str, str]) -> str:
    for placeholder, path in files.items():
        text = text.replace(placeholder, path)
    return text


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fleets())
def test_valid_models_render_deterministically_and_nginx_accepts_them(
    nginx: Nginx, pki: dict[str, str], fleet: tuple[list[dict[str, Any]], dict[str, dict[str, bool]]]
) -> None:
    docs, health = fleet
    state = state_of(docs)  # the generated model is valid
    first = render(state, resolver=RESOLVER, health=health)
    assert first == render(state_of(list(reversed(docs))), resolver=RESOLVER, health=health)
    (node,) = first.values()
    config_dir = nginx.install({path: with_files(text, pki) for path, text in node.files.items()})
    nginx.configure(http=include_http(config_dir), stream=include_stream(config_dir))
    nginx.test()
