"""Routes: several upstreams under one server name by path prefix, longest prefix first."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from reconciler.render.renderer import render
from reconciler.resolve import StaticResolver
from tests.render.desired import access_node, state_of, upstream
from tests.render.live import deploy, get
from tests.services.backends import HttpBackend
from tests.services.nginx import Nginx, free_port, include_http, include_stream


def files(*docs: dict[str, Any]) -> dict[str, str]:
    state = state_of([*docs, access_node("lb", *(d["name"] for d in docs))])
    return dict(render(state, resolver=StaticResolver({}))["lb"].files)


def site(backend: dict[str, str]) -> list[dict[str, Any]]:
    return [
        upstream("www", backend["www"], listen={"server_names": ["example.test", "www.example.test"]}),
        upstream("api", backend["api"], listen={"server_names": ["example.test"], "path": "/api/", "strip_path": True}),
        upstream(
            "api-v2", backend["v2"], listen={"server_names": ["example.test", "v2.example.test"], "path": "/api/v2/"}
        ),
        upstream("docs", backend["docs"], listen={"server_names": ["docs.example.test"], "path": "/docs/"}),
    ]


def test_a_shared_name_gets_one_server_block_and_each_upstream_keeps_its_own_names() -> None:
    backend = {k: f"10.0.0.{i}" for i, k in enumerate(["www", "api", "v2", "docs"], 1)}
    out = files(*site(backend))
    assert sorted(out) == [
        "http/_default.conf",
        "http/_host.example.test.conf",
        "http/api-v2.conf",
        "http/api.conf",
        "http/docs.conf",
        "http/www.conf",
    ]
    shared = out["http/_host.example.test.conf"]
    assert shared.count("server {") == 1 and "server_name example.test;" in shared
    locations = [line.strip() for line in shared.splitlines() if line.strip().startswith("location")]
    assert locations == ["location /api/v2/ {", "location /api/ {", "location / {"]
    assert "proxy_pass http://ob_api/;" in shared and "proxy_pass http://ob_api-v2;" in shared
    assert "server {" not in out["http/api.conf"]  # api serves only the shared name
    assert "server_name www.example.test;" in out["http/www.conf"]
    assert "server_name v2.example.test;" in out["http/api-v2.conf"]
    # a name without an upstream at / answers 404 elsewhere, not nginx's static files
    assert "location /docs/ {" in out["http/docs.conf"] and "return 404;" in out["http/docs.conf"]


def test_a_change_to_one_upstream_leaves_the_other_files_alone() -> None:
    backend = {k: f"10.0.0.{i}" for i, k in enumerate(["www", "api", "v2", "docs"], 1)}
    before = files(*site(backend))
    for changed in ("docs", "api"):  # api's location is in the shared file, its servers in its own
        after = files(*site({**backend, changed: "10.0.0.9"}))
        # http/_default.conf answers the revision: it changes with any change
        assert {p for p in before if before[p] != after[p]} == {"http/_default.conf", f"http/{changed}.conf"}


@pytest.fixture
def backends() -> Iterator[dict[str, HttpBackend]]:
    with ExitStack() as stack:
        yield {name: stack.enter_context(HttpBackend(name)) for name in ("www", "api", "v2", "docs")}


def test_requests_reach_the_longest_matching_prefix(nginx: Nginx, backends: dict[str, HttpBackend]) -> None:
    port = free_port()
    docs = site({k: f"127.0.0.1:{b.port}" for k, b in backends.items()})
    deploy(nginx, [*docs, access_node(f"127.0.0.1:{port}", "www", "api", "api-v2", "docs", listen_address="127.0.0.1")])
    for path, body in [
        ("/", "www"),
        ("/apis", "www"),  # a prefix is a whole segment: /api/ does not match /apis
        ("/api/users?id=1", "api"),
        ("/api/v2/users", "v2"),
        ("/api/v3/users", "api"),
    ]:
        assert get(port, "example.test", path).body == body, path
    get(port, "example.test", "/api/users?id=1")
    assert backends["api"].last_path == "/users?id=1"  # strip_path: the prefix is removed
    get(port, "example.test", "/api/v2/users")
    assert backends["v2"].last_path == "/api/v2/users"  # without it the path is passed as it came
    answer = get(port, "example.test", "/api")
    assert answer.status == 301 and answer.headers["location"].endswith("/api/")  # nginx adds the slash
    assert get(port, "www.example.test", "/api/users").body == "www"  # the route is per server name
    assert get(port, "v2.example.test", "/api/v2/x").body == "v2"
    assert get(port, "v2.example.test", "/").status == 404
    assert get(port, "docs.example.test", "/docs/a").body == "docs"
    assert get(port, "docs.example.test", "/index.html").status == 404


def test_nginx_accepts_routes_on_wildcard_names(nginx: Nginx) -> None:
    out = files(
        upstream("a", "10.0.0.1", listen={"server_names": ["*.example.test", "example.*"]}),
        upstream("b", "10.0.0.2", listen={"server_names": ["*.example.test", "example.*"], "path": "/b/"}),
    )
    assert "http/_host.~.example.test.conf" in out and "http/_host.example.~.conf" in out
    config_dir = nginx.install(out)
    nginx.configure(http=include_http(config_dir), stream=include_stream(config_dir))
    nginx.test()


def test_a_location_reads_the_same_in_an_upstreams_file_and_in_a_shared_names_file() -> None:
    """http_upstream.conf.j2 has proxy.conf.j2's text inline (for speed): the two must not drift."""
    proxy = {
        "websockets": True,
        "buffering": False,
        "client_max_body_size": "5m",
        "retries": {"conditions": ["error"], "tries": 2, "timeout": "5s"},
        "headers": [{"name": "X-A", "value": "b"}, {"name": "X-Id", "variable": "$request_id"}],
        "backend_protocol": "https",
        "backend_tls": {"server_name": "api.internal", "ca_certificate": "/ca.pem"},
    }
    access = {"allow": ["10.0.0.0/8"], "deny": ["10.1.0.0/16"], "rate_limit": {"rps": 5, "burst": 5}}
    api = {"proxy": proxy, "access": access}
    own = files(
        upstream("api", "10.0.0.2", listen={"server_names": ["api.test"], "path": "/api/", "strip_path": True}, **api)
    )
    shared = files(
        upstream("www", "10.0.0.1", listen={"server_names": ["api.test"]}),
        upstream("api", "10.0.0.2", listen={"server_names": ["api.test"], "path": "/api/", "strip_path": True}, **api),
    )

    def location(text: str) -> str:
        start = text.index("    location /api/ {")
        return text[start : text.index("\n    }\n", start)]

    assert location(own["http/api.conf"]) == location(shared["http/_host.api.test.conf"])
    assert "limit_req zone=ob_api burst=5 nodelay;" in location(own["http/api.conf"])
