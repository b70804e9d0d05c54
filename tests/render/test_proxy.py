"""Proxy settings: defaults render what was rendered before, each setting reaches nginx, real traffic."""

from __future__ import annotations

import asyncio
import http.client
import re
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from reconciler.manifest.model import BackendTls, Header, HttpProxy, Retries
from reconciler.render.renderer import render
from reconciler.resolve import StaticResolver
from tests.render.desired import access_node, refusal, state_of, upstream
from tests.render.live import deploy, get
from tests.services.backends import EchoBackend, HttpBackend, WebSocketEcho
from tests.services.nginx import Nginx, free_port, include_http, include_stream
from tests.services.pki import TestCA


def files(*docs: dict[str, Any]) -> dict[str, str]:
    state = state_of([*docs, access_node("lb", *(d["name"] for d in docs))])
    return dict(render(state, resolver=StaticResolver({}))["lb"].files)


def location(text: str) -> list[str]:
    body = text[text.index("    location / {") :]
    return [line.strip() for line in body.splitlines()[1:] if line.strip() != "}"]


def test_the_defaults_render_what_was_rendered_before() -> None:
    plain = files(upstream("web", "10.0.0.1"))
    assert location(plain["http/web.conf"]) == [
        "proxy_pass http://ob_web;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_set_header Host $host;",
        "proxy_set_header X-Real-IP $remote_addr;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_connect_timeout 5s;",
        "proxy_send_timeout 60s;",
        "proxy_read_timeout 60s;",
        "proxy_next_upstream error timeout;",
    ]
    assert "keepalive 16;" in plain["http/web.conf"]
    assert "map $http_upgrade" not in plain["http/_default.conf"]
    spelled_out = {
        "connect_timeout": "5s",
        "send_timeout": "60s",
        "read_timeout": "60s",
        "buffering": True,
        "websockets": False,
        "retries": {"conditions": ["error", "timeout"], "tries": 0, "timeout": "0"},
        "keepalive": 16,
        "headers": [],
        "backend_protocol": "http",
    }
    assert files(upstream("web", "10.0.0.1", proxy=spelled_out)) == plain
    tcp = {"protocol": "tcp", "port": 5432}
    stream = files(upstream("db", "10.0.0.1:5432", listen=tcp))
    assert files(upstream("db", "10.0.0.1:5432", listen=tcp, proxy={"timeout": "10m"})) == stream
    assert "proxy_protocol" not in stream["stream/db.conf"]


EVERYTHING = {
    "connect_timeout": "2s",
    "send_timeout": "30s",
    "read_timeout": "1h",
    "client_max_body_size": "20m",
    "buffering": False,
    "websockets": True,
    "retries": {"conditions": ["error", "timeout", "http_502", "non_idempotent"], "tries": 3, "timeout": "10s"},
    "keepalive": 64,
    "headers": [{"name": "X-Env", "value": "prod"}, {"name": "X-Request-Id", "variable": "$request_id"}],
    "backend_protocol": "https",
    "backend_tls": {"server_name": "api.internal", "ca_certificate": "/etc/ssl/internal-ca.pem"},
}


def test_every_setting_is_rendered(nginx: Nginx, tmp_path: Path) -> None:
    out = files(upstream("web", "10.0.0.1:443", proxy=EVERYTHING))
    lines = location(out["http/web.conf"])
    for expected in [
        "proxy_pass https://ob_web;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $ob_connection_upgrade;",
        "proxy_set_header X-Env prod;",
        "proxy_set_header X-Request-Id $request_id;",
        "proxy_connect_timeout 2s;",
        "proxy_read_timeout 1h;",
        "proxy_next_upstream error timeout http_502 non_idempotent;",
        "proxy_next_upstream_tries 3;",
        "proxy_next_upstream_timeout 10s;",
        "proxy_buffering off;",
        "client_max_body_size 20m;",
        "proxy_ssl_server_name on;",
        "proxy_ssl_name api.internal;",
        "proxy_ssl_verify on;",
        "proxy_ssl_trusted_certificate /etc/ssl/internal-ca.pem;",
    ]:
        assert expected in lines
    assert 'proxy_set_header Connection "";' not in lines
    assert "keepalive 64;" in out["http/web.conf"]
    assert "map $http_upgrade $ob_connection_upgrade {" in out["http/_default.conf"]
    # nginx -t reads the CA file: give it one where the manifest says
    ca = TestCA(tmp_path / "pki")
    config_dir = nginx.install({k: v.replace("/etc/ssl/internal-ca.pem", str(ca.certificate)) for k, v in out.items()})
    nginx.configure(http=include_http(config_dir), stream=include_stream(config_dir))
    nginx.test()


def test_keepalive_zero_renders_no_pool() -> None:
    text = files(upstream("web", "10.0.0.1", proxy={"keepalive": 0}))["http/web.conf"]
    assert "keepalive" not in text.replace("keepalive_", "")


@pytest.mark.parametrize(
    ("proxy", "field"),
    [
        (HttpProxy(headers=(Header("X-A", "a b"),)), "upstream.proxy.headers[0].value"),
        (HttpProxy(headers=(Header("X-A", "a;b"),)), "upstream.proxy.headers[0].value"),
        (HttpProxy(headers=(Header("X-A", variable="$http_authorization"),)), "upstream.proxy.headers[0].variable"),
        (HttpProxy(headers=(Header("X-A", variable="$host;x"),)), "upstream.proxy.headers[0].variable"),
        (HttpProxy(headers=(Header("X A", "a"),)), "upstream.proxy.headers[0].name"),
        (HttpProxy(headers=(Header("Host", "evil"),)), "upstream.proxy.headers[0].name"),
        (HttpProxy(headers=(Header("X-A"),)), "upstream.proxy.headers[0]"),
        (HttpProxy(retries=Retries(("error; x",))), "upstream.proxy.retries.conditions[0]"),  # type: ignore[arg-type]
        (HttpProxy(backend_protocol="https;"), "upstream.proxy.backend_protocol"),
        (HttpProxy(connect_timeout="5s; x"), "upstream.proxy.connect_timeout"),
        (HttpProxy(client_max_body_size="1m}"), "upstream.proxy.client_max_body_size"),
        (
            HttpProxy(backend_protocol="https", backend_tls=BackendTls("a b", ca_certificate="/ca.pem")),
            "upstream.proxy.tls.server_name",
        ),
        (
            HttpProxy(backend_protocol="https", backend_tls=BackendTls("a", ca_certificate="/ca;x")),
            "upstream.proxy.tls.ca_certificate",
        ),
    ],
)
def test_a_value_outside_the_allow_lists_never_reaches_nginx(proxy: HttpProxy, field: str) -> None:
    state = state_of([upstream("web", "10.0.0.1"), access_node("lb", "web")])
    broken = replace(state, upstreams={"web": replace(state.upstreams["web"], proxy=proxy)})
    assert refusal(render(broken, resolver=StaticResolver({}))).field == field


def serve(nginx: Nginx, *docs: dict[str, Any]) -> int:
    port = free_port()
    names = [d["name"] for d in docs]
    deploy(nginx, [*docs, access_node(f"127.0.0.1:{port}", *names, listen_address="127.0.0.1")])
    return port


def test_extra_headers_reach_the_backend(nginx: Nginx) -> None:
    with HttpBackend("b1") as b1:
        headers = [{"name": "X-Env", "value": "prod"}, {"name": "X-Request-Id", "variable": "$request_id"}]
        port = serve(nginx, upstream("web", f"127.0.0.1:{b1.port}", proxy={"headers": headers}))
        assert get(port, "web").body == "b1"
        seen = {k.lower(): v for k, v in b1.last_headers.items()}
    assert seen["x-env"] == "prod" and re.fullmatch(r"[0-9a-f]{32}", seen["x-request-id"])


def test_body_size_and_read_timeout(nginx: Nginx) -> None:
    with HttpBackend("b1") as b1:
        proxy = {"client_max_body_size": "1k", "read_timeout": "1s", "retries": {"conditions": ["off"]}}
        port = serve(nginx, upstream("web", f"127.0.0.1:{b1.port}", proxy=proxy))
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("POST", "/", body=b"x" * 2048, headers={"Host": "web"})
        assert connection.getresponse().status == 413
        connection.close()
        assert get(port, "web", "/hold").status == 504  # the backend holds it longer than read_timeout


def test_a_websocket_upgrade_passes_through(nginx: Nginx) -> None:
    with WebSocketEcho() as ws:
        port = serve(nginx, upstream("ws", f"127.0.0.1:{ws.port}", proxy={"websockets": True, "read_timeout": "1h"}))

        async def talk() -> list[str]:
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(f"http://127.0.0.1:{port}/ws", headers={"Host": "ws"}) as conn:
                    answers = []
                    for text in ("one", "two"):
                        await conn.send_str(text)
                        answers.append((await conn.receive(timeout=10)).data)
                    return answers

        assert asyncio.run(talk()) == ["echo:one", "echo:two"]
        assert get(port, "ws", "/").body == "plain"  # plain requests still work (and keep their keepalive)


def test_without_websockets_the_upgrade_is_not_passed(nginx: Nginx) -> None:
    with WebSocketEcho() as ws:
        port = serve(nginx, upstream("ws", f"127.0.0.1:{ws.port}"))

        async def talk() -> None:
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(f"http://127.0.0.1:{port}/ws", headers={"Host": "ws"}):
                    pass

        with pytest.raises(aiohttp.WSServerHandshakeError):
            asyncio.run(talk())


def test_https_backends_are_verified(nginx: Nginx, tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "pki")
    other = TestCA(tmp_path / "other", name="another CA")
    with HttpBackend("secure", tls=ca.issue("api", ["api.internal"])) as b1:
        backend = f"127.0.0.1:{b1.port}"

        def proxy(server_name: str, ca_file: Path) -> dict[str, Any]:
            tls = {"server_name": server_name, "ca_certificate": str(ca_file)}
            return {"backend_protocol": "https", "backend_tls": tls}

        port = serve(
            nginx,
            upstream("good", backend, proxy=proxy("api.internal", ca.certificate)),
            upstream("wrong-name", backend, proxy=proxy("db.internal", ca.certificate)),
            upstream("wrong-ca", backend, proxy=proxy("api.internal", other.certificate)),
            upstream(
                "unverified",
                backend,
                proxy={"backend_protocol": "https", "backend_tls": {"verify": False}},
            ),
        )
        assert get(port, "good") == get(port, "good") and get(port, "good").body == "secure"
        assert get(port, "wrong-name").status == 502
        assert get(port, "wrong-ca").status == 502
        assert get(port, "unverified").body == "secure"
    assert "certificate" in nginx.error_log.read_text()


def test_proxy_protocol_reaches_a_tcp_backend(nginx: Nginx) -> None:
    with EchoBackend() as echo:
        tcp_port = free_port()
        listen = {"protocol": "tcp", "port": tcp_port}
        serve(nginx, upstream("echo", f"127.0.0.1:{echo.port}", listen=listen, proxy={"proxy_protocol": True}))
        with socket.create_connection(("127.0.0.1", tcp_port), timeout=10) as connection:
            connection.sendall(b"hello\n")
            received = b""
            while not received.endswith(b"hello\n") and (chunk := connection.recv(4096)):
                received += chunk
            client_port = connection.getsockname()[1]
    # the echo backend sends back what it got: the PROXY header nginx put in front, then the bytes
    header, _, rest = received.partition(b"\r\n")
    assert header == f"PROXY TCP4 127.0.0.1 127.0.0.1 {client_port} {tcp_port}".encode()
    assert rest == b"hello\n"
