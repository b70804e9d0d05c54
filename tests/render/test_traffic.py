"""Real traffic through a real nginx running the rendered configuration, on 127.0.0.1 only."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest

from reconciler.render.renderer import RenderedAccessNode
from tests.render.desired import access_node, upstream
from tests.render.live import deploy, get
from tests.services.backends import EchoBackend, HttpBackend
from tests.services.nginx import Nginx, free_port

REVISION_PATH = "/.well-known/obreconcile/revision"


@dataclass
class Site:
    """nginx running one rendered access node, and the backends behind it."""

    nginx: Nginx
    port: int
    tcp_port: int
    backends: dict[str, HttpBackend]
    echo: EchoBackend
    node: RenderedAccessNode

    def get(self, host: str, path: str = "/") -> tuple[int, str]:
        answer = get(self.port, host, path)
        return answer.status, answer.body

    def hits(self) -> dict[str, int]:
        return {name: backend.hits for name, backend in self.backends.items()}

    def deploy(self, docs: list[dict[str, Any]], reload: bool) -> None:
        self.node = deploy(self.nginx, docs, reload)


def manifests(site: Site, alpha_weights: tuple[int, int] = (3, 1)) -> list[dict[str, Any]]:
    b = {name: f"127.0.0.1:{backend.port}" for name, backend in site.backends.items()}
    return [
        upstream(
            "alpha",
            {"hostname": b["a1"], "weight": alpha_weights[0]},
            {"hostname": b["a2"], "weight": alpha_weights[1]},
            {"hostname": b["a3"], "force_status": "down"},
            listen={"server_names": ["alpha.test"]},
        ),
        upstream(
            "beta",
            b["b1"],
            {"hostname": b["b2"], "failover": 1},
            listen={"server_names": ["beta.test", "www.beta.test"]},
        ),
        upstream("echo", f"127.0.0.1:{site.echo.port}", listen={"protocol": "tcp", "port": site.tcp_port}),
        access_node(f"127.0.0.1:{site.port}", "alpha", "beta", "echo", listen_address="127.0.0.1"),
    ]


@pytest.fixture
def site(nginx: Nginx) -> Iterator[Site]:
    with ExitStack() as stack:
        backends = {name: stack.enter_context(HttpBackend(name)) for name in ("a1", "a2", "a3", "b1", "b2")}
        echo = stack.enter_context(EchoBackend())
        site = Site(nginx, free_port(), free_port(), backends, echo, RenderedAccessNode("", "", {}))
        site.deploy(manifests(site), reload=False)
        yield site


def test_server_names_reach_only_their_upstream(site: Site) -> None:
    for _ in range(8):
        assert site.get("alpha.test")[1] in ("a1", "a2")
        assert site.get("www.beta.test") == (200, "b1")
    hits = site.hits()
    assert hits["a1"] + hits["a2"] == 8 and hits["b1"] == 8 and hits["b2"] == 0


def test_weights_shape_the_split_and_a_down_backend_gets_nothing(site: Site) -> None:
    answers = [site.get("alpha.test")[1] for _ in range(40)]
    assert answers.count("a1") == 30 and answers.count("a2") == 10  # one worker: smooth weighted round robin
    assert site.hits()["a3"] == 0


def test_backup_gets_traffic_only_when_the_primaries_are_dead(site: Site) -> None:
    assert [site.get("beta.test")[1] for _ in range(5)] == ["b1"] * 5
    site.backends["b1"].stop()
    assert [site.get("beta.test") for _ in range(5)] == [(200, "b2")] * 5


def test_unknown_host_gets_the_default_server(site: Site) -> None:
    for host in ("nobody.test", "alpha.test.evil", "127.0.0.1"):
        assert site.get(host)[0] == 404
    assert sum(site.hits().values()) == 0


def test_the_default_server_answers_the_revision(site: Site) -> None:
    assert site.get("127.0.0.1", REVISION_PATH) == (200, site.node.revision)
    assert site.get("alpha.test", REVISION_PATH)[1] in ("a1", "a2")  # only the default server has it


def test_proxy_headers_reach_the_backend(site: Site) -> None:
    site.get("beta.test", "/x")
    headers = {k.lower(): v for k, v in site.backends["b1"].last_headers.items()}
    assert headers["host"] == "beta.test"
    assert headers["x-real-ip"] == "127.0.0.1" and headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"


def test_a_tcp_upstream_carries_bytes(site: Site) -> None:
    payload = bytes(range(256)) * 64
    with socket.create_connection(("127.0.0.1", site.tcp_port), timeout=10) as connection:
        connection.sendall(payload)
        received = b""
        while len(received) < len(payload) and (chunk := connection.recv(65536)):
            received += chunk
    assert received == payload


def test_reload_brings_the_new_revision_live(site: Site) -> None:
    old = site.node.revision
    site.deploy(manifests(site, alpha_weights=(1, 1)), reload=True)
    assert site.node.revision != old
    assert site.get("127.0.0.1", REVISION_PATH) == (200, site.node.revision)
    answers = [site.get("alpha.test")[1] for _ in range(20)]
    assert answers.count("a1") == 10 and answers.count("a2") == 10
