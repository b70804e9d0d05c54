"""Balancing methods: what is rendered, what nginx -t accepts, and how real traffic spreads."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from typing import Any

import pytest

from reconciler.manifest.model import Balancing, Method
from reconciler.render.renderer import render
from reconciler.resolve import StaticResolver
from tests.render.desired import access_node, refusal, state_of, upstream
from tests.render.live import deploy, get
from tests.services.backends import HttpBackend
from tests.services.nginx import Nginx, free_port, include_http, include_stream

DIRECTIVES = {
    "round_robin": None,
    "least_conn": "least_conn;",
    "ip_hash": "ip_hash;",
    "random": "random;",
    "random_two_least_conn": "random two least_conn;",
}


def files(*docs: dict[str, Any]) -> dict[str, str]:
    return dict(
        render(state_of([*docs, access_node("lb", *(d["name"] for d in docs))]), resolver=StaticResolver({}))[
            "lb"
        ].files
    )


@pytest.mark.parametrize("method", sorted(DIRECTIVES))
def test_each_method_is_one_directive_before_the_servers(method: str) -> None:
    text = files(upstream("web", "10.0.0.1", "10.0.0.2", balancing={"method": method}))["http/web.conf"]
    block = text[text.index("upstream ob_web {") : text.index("}")]
    directive = DIRECTIVES[method]
    if directive is None:
        assert block.splitlines()[1].lstrip().startswith("server ")
    else:
        assert block.splitlines()[1] == f"    {directive}"


def test_round_robin_renders_what_an_upstream_without_balancing_renders() -> None:
    plain = files(upstream("web", "10.0.0.1"))
    assert files(upstream("web", "10.0.0.1", balancing={"method": "round_robin"})) == plain


@pytest.mark.parametrize(
    ("key", "consistent", "line"),
    [
        ("$remote_addr", False, "hash $remote_addr;"),
        ("$request_uri", True, "hash $request_uri consistent;"),
        ("$host", False, "hash $host;"),
        ("$cookie_session_id", True, "hash $cookie_session_id consistent;"),
    ],
)
def test_hash_keys(key: str, consistent: bool, line: str) -> None:
    text = files(upstream("web", "10.0.0.1", balancing={"method": "hash", "key": key, "consistent": consistent}))
    assert f"\n    {line}\n" in text["http/web.conf"]


def test_tcp_methods() -> None:
    tcp = {"protocol": "tcp", "port": 5432}
    text = files(upstream("db", "10.0.0.1:5432", listen=tcp, balancing={"method": "hash", "key": "$remote_addr"}))
    assert "\n    hash $remote_addr;\n" in text["stream/db.conf"]
    text = files(upstream("db", "10.0.0.1:5432", listen=tcp, balancing={"method": "least_conn"}))
    assert "\n    least_conn;\n" in text["stream/db.conf"]


@pytest.mark.parametrize(
    "balancing",
    [
        Balancing(Method.HASH, "$http_authorization"),
        Balancing(Method.HASH, "$host; include /etc/passwd"),
        Balancing(Method.HASH, None),
        Balancing("sticky"),  # type: ignore[arg-type]
    ],
)
def test_a_key_or_method_outside_the_allow_list_never_reaches_nginx(balancing: Balancing) -> None:
    state = state_of([upstream("web", "10.0.0.1"), access_node("lb", "web")])
    broken = replace(state, upstreams={"web": replace(state.upstreams["web"], balancing=balancing)})
    assert refusal(render(broken, resolver=StaticResolver({}))).field.startswith("upstream.balancing.")


BACKENDS = ("a1", "a2", "a3")


@pytest.fixture
def backends() -> Iterator[dict[str, HttpBackend]]:
    with ExitStack() as stack:
        yield {name: stack.enter_context(HttpBackend(name)) for name in BACKENDS}


def run(nginx: Nginx, backends: dict[str, HttpBackend], balancing: dict[str, Any]) -> int:
    port = free_port()
    nodes = [f"127.0.0.1:{b.port}" for b in backends.values()]
    deploy(
        nginx,
        [
            upstream("web", *nodes, balancing=balancing),
            access_node(f"127.0.0.1:{port}", "web", listen_address="127.0.0.1"),
        ],
    )
    return port


def test_least_conn_sends_new_requests_past_a_busy_backend(nginx: Nginx, backends: dict[str, HttpBackend]) -> None:
    port = run(nginx, backends, {"method": "least_conn"})
    held = threading.Thread(target=get, args=(port, "web", "/hold"))
    held.start()
    try:
        for _ in range(100):  # until the held request has reached its backend
            busy = [name for name, b in backends.items() if b.hits]
            if busy:
                break
            threading.Event().wait(0.02)
        (busy_name,) = busy
        answers = Counter(get(port, "web").body for _ in range(30))
    finally:
        for b in backends.values():
            b.release()
        held.join(10)
    # round robin would give the busy backend a third; least_conn gives it nothing while it is busy
    assert busy_name not in answers and sum(answers.values()) == 30
    assert len(answers) == 2


def test_hash_on_the_request_uri_keeps_each_uri_on_one_backend(nginx: Nginx, backends: dict[str, HttpBackend]) -> None:
    port = run(nginx, backends, {"method": "hash", "key": "$request_uri", "consistent": True})
    where = {}
    for i in range(30):
        answers = {get(port, "web", f"/item/{i}").body for _ in range(3)}
        assert len(answers) == 1, f"/item/{i} went to {answers}"
        where[i] = answers.pop()
    assert set(where.values()) == set(BACKENDS)  # 30 uris spread over every backend


def test_hash_on_a_cookie_keeps_each_session_on_one_backend(nginx: Nginx, backends: dict[str, HttpBackend]) -> None:
    port = run(nginx, backends, {"method": "hash", "key": "$cookie_sid"})
    where = {}
    for i in range(30):
        answers = {get(port, "web", f"/{j}", headers={"Cookie": f"sid=s{i}"}).body for j in range(3)}
        assert len(answers) == 1
        where[i] = answers.pop()
    assert set(where.values()) == set(BACKENDS)


def test_round_robin_still_spreads_evenly(nginx: Nginx, backends: dict[str, HttpBackend]) -> None:
    port = run(nginx, backends, {})
    assert Counter(get(port, "web").body for _ in range(30)) == dict.fromkeys(BACKENDS, 10)


@pytest.mark.parametrize("method", ["least_conn", "ip_hash", "hash", "random", "random_two_least_conn"])
def test_nginx_accepts_each_method_with_weights_and_down(method: str, nginx: Nginx) -> None:
    balancing: dict[str, Any] = {"method": method}
    if method == "hash":
        balancing.update(key="$remote_addr", consistent=True)
    nodes: list[dict[str, Any]] = [
        {"hostname": "10.0.0.1", "weight": 5, "max_fails": 3},
        {"hostname": "10.0.0.2", "force_status": "down"},
    ]
    docs = [upstream("web", *nodes, balancing=balancing)]
    if method != "ip_hash":
        docs.append(upstream("db", *nodes, listen={"protocol": "tcp", "port": 5432}, balancing=balancing))
    out = files(*docs)
    config_dir = nginx.install(out)
    nginx.configure(http=include_http(config_dir), stream=include_stream(config_dir))
    nginx.test()
