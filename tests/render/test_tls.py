"""TLS termination: a handshake per server name, HTTP/2, the redirect, HSTS, an unknown name refused."""

from __future__ import annotations

import http.client
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from reconciler.render.renderer import render
from reconciler.resolve import StaticResolver
from tests.render.desired import access_node, state_of, upstream
from tests.render.live import deploy, get
from tests.services.backends import HttpBackend
from tests.services.nginx import Nginx, free_port, include_http, include_stream
from tests.services.pki import TestCA


def files(*docs: dict[str, Any], **node: Any) -> dict[str, str]:
    state = state_of([*docs, access_node("lb", *(d["name"] for d in docs), **node)])
    return dict(render(state, resolver=StaticResolver({}))["lb"].files)


def tls(name: str, **fields: Any) -> dict[str, Any]:
    return {"certificate": f"/etc/ssl/{name}.pem", "key": f"/etc/ssl/{name}.key", **fields}


def test_an_access_node_without_tls_renders_what_it_rendered_before() -> None:
    out = files(upstream("web", "10.0.0.1"))
    assert "ssl" not in "".join(out.values()) and "443" not in "".join(out.values())


def test_what_tls_renders() -> None:
    out = files(
        upstream("web", "10.0.0.1", tls=tls("web", redirect_http=True, hsts={"include_subdomains": True})),
        upstream("api", "10.0.0.2", tls=tls("api")),
        https_port=8443,
        http2=False,
    )
    web = out["http/web.conf"]
    assert web.count("server {") == 2
    assert "return 301 https://$host:8443$request_uri;" in web
    assert "listen 8443 ssl;" in web and "ssl_certificate /etc/ssl/web.pem;" in web
    assert "ssl_certificate_key /etc/ssl/web.key;" in web and "ssl_protocols TLSv1.2 TLSv1.3;" in web
    assert 'add_header Strict-Transport-Security "max-age=31536000; includeSubDomains" always;' in web
    api = out["http/api.conf"]
    assert "return 301" not in api and api.count("proxy_pass http://ob_api;") == 2  # plain http still served
    assert "Strict-Transport-Security" not in api
    assert "listen 8443 ssl default_server;" in out["http/_default.conf"]
    assert "ssl_reject_handshake on;" in out["http/_default.conf"]


@dataclass
class Edge:
    ca: TestCA
    port: int
    https_port: int
    backends: dict[str, HttpBackend]

    def handshake(self, server_name: str) -> x509.Certificate:
        context = ssl.create_default_context(cafile=str(self.ca.certificate))
        with socket.create_connection(("127.0.0.1", self.https_port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=server_name) as tls_socket:
                der = tls_socket.getpeercert(binary_form=True)
                assert tls_socket.version() in ("TLSv1.2", "TLSv1.3")
        assert der is not None
        return x509.load_der_x509_certificate(der)

    def https_get(self, server_name: str, path: str = "/") -> tuple[int, str, dict[str, str]]:
        """GET over TLS to 127.0.0.1 with ``server_name`` as SNI, verified name and Host."""
        context = ssl.create_default_context(cafile=str(self.ca.certificate))
        raw = socket.create_connection(("127.0.0.1", self.https_port), timeout=10)
        with context.wrap_socket(raw, server_hostname=server_name) as tls_socket:
            request = f"GET {path} HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n"
            tls_socket.sendall(request.encode())
            response = http.client.HTTPResponse(tls_socket)
            response.begin()
            return response.status, response.read().decode(), {k.lower(): v for k, v in response.getheaders()}


@pytest.fixture
def edge(nginx: Nginx, tmp_path: Path) -> Iterator[Edge]:
    ca = TestCA(tmp_path / "pki")
    web_cert, web_key = ca.issue("web", ["web.test", "www.web.test"])
    api_cert, api_key = ca.issue("api", ["api.test"])
    with ExitStack() as stack:
        backends = {name: stack.enter_context(HttpBackend(name)) for name in ("web", "api")}
        port, https_port = free_port(), free_port()
        hsts = {"max_age": 63072000, "include_subdomains": True, "preload": True}
        docs = [
            upstream(
                "web",
                f"127.0.0.1:{backends['web'].port}",
                listen={"server_names": ["web.test", "www.web.test"]},
                tls={"certificate": str(web_cert), "key": str(web_key), "redirect_http": True, "hsts": hsts},
            ),
            upstream(
                "api",
                f"127.0.0.1:{backends['api'].port}",
                listen={"server_names": ["api.test"]},
                tls={"certificate": str(api_cert), "key": str(api_key)},
            ),
            access_node(f"127.0.0.1:{port}", "web", "api", listen_address="127.0.0.1", https_port=https_port),
        ]
        deploy(nginx, docs)
        yield Edge(ca, port, https_port, backends)


def test_each_server_name_gets_its_own_certificate(edge: Edge) -> None:
    for name in ("web.test", "www.web.test", "api.test"):
        names = edge.handshake(name).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert name in names.get_values_for_type(x509.DNSName)
    assert edge.https_get("api.test")[:2] == (200, "api")
    assert edge.https_get("www.web.test")[:2] == (200, "web")


def test_an_unknown_server_name_gets_no_certificate(edge: Edge) -> None:
    with pytest.raises(ssl.SSLError):
        edge.handshake("other.test")


def test_plain_http_is_redirected_and_https_carries_hsts(edge: Edge) -> None:
    answer = get(edge.port, "web.test", "/a?b=1")
    assert answer.status == 301 and answer.headers["location"] == f"https://web.test:{edge.https_port}/a?b=1"
    assert edge.backends["web"].hits == 0
    status, body, headers = edge.https_get("web.test", "/a")
    assert (status, body) == (200, "web")
    assert headers["strict-transport-security"] == "max-age=63072000; includeSubDomains; preload"
    assert edge.https_get("api.test")[2].get("strict-transport-security") is None
    assert get(edge.port, "api.test").body == "api"  # without redirect_http, plain http is served too


def test_http2_on_the_https_port(edge: Edge) -> None:
    curl = shutil.which("curl")
    assert curl, "curl is one of the test system's packages"
    result = subprocess.run(
        [
            curl,
            "--http2",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
            "--cacert",
            str(edge.ca.certificate),
            "--resolve",
            f"api.test:{edge.https_port}:127.0.0.1",
            f"https://api.test:{edge.https_port}/",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.stdout == "2 200", result.stderr


def test_nginx_accepts_tls_with_routes_and_every_option(nginx: Nginx, tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "pki")
    cert, key = ca.issue("site", ["example.test"])
    site = {"certificate": str(cert), "key": str(key), "redirect_http": True, "hsts": {"max_age": 0}}
    out = files(
        upstream("www", "10.0.0.1", listen={"server_names": ["example.test"]}, tls=site),
        upstream("api", "10.0.0.2", listen={"server_names": ["example.test"], "path": "/api/"}, tls=site),
        https_port=8443,
    )
    shared = out["http/_host.example.test.conf"]
    assert shared.count("server {") == 2 and "return 301" in shared and shared.count("location /api/ {") == 1
    config_dir = nginx.install(out)
    nginx.configure(http=include_http(config_dir), stream=include_stream(config_dir))
    nginx.test()
