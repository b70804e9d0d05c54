"""Every example and a generated large fleet render, and real `nginx -t` accepts each access node."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from reconciler.manifest.model import DesiredState
from reconciler.manifest.validate import load_desired_state
from reconciler.render.renderer import RenderedAccessNode, render
from reconciler.resolve import StaticResolver
from tests.render.desired import access_node, large_fleet, state_of, upstream
from tests.services.nginx import Nginx, include_http, include_stream
from tests.services.pki import TestCA

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# Example hostnames are not in DNS: every name answers one IPv4 and one IPv6 address.
RESOLVER = StaticResolver({}, default=["192.0.2.10", "2001:db8::10"])


def nginx_accepts(nginx: Nginx, node: RenderedAccessNode) -> None:
    config_dir = nginx.install(node.files)
    nginx.configure(http=include_http(config_dir), stream=include_stream(config_dir))
    nginx.test()


def tls_files(state: DesiredState, directory: Path) -> dict[str, str]:
    """Real certificates, keys and CA bundles in ``directory`` for the paths the upstreams name
    on their access nodes (nginx -t reads them): path on the node -> path here."""
    ca = TestCA(directory)
    out: dict[str, str] = {}
    for served in state.upstreams.values():
        if served.tls is not None and served.tls.certificate not in out:
            cert, key = ca.issue(f"c{len(out)}", list(served.listen.server_names))
            out[served.tls.certificate], out[served.tls.key] = str(cert), str(key)
        backend_tls = getattr(served.proxy, "backend_tls", None)
        if backend_tls is not None and backend_tls.ca_certificate:
            out[backend_tls.ca_certificate] = str(ca.certificate)
    return out


def with_files(node: RenderedAccessNode, paths: dict[str, str]) -> RenderedAccessNode:
    files = {}
    for name, text in node.files.items():
        for old in sorted(paths, key=len, reverse=True):
            text = text.replace(old, paths[old])
        files[name] = text
    return replace(node, files=files)


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir()))
def test_every_example_renders_and_nginx_accepts_it(example: str, nginx: Nginx, tmp_path: Path) -> None:
    state = load_desired_state([EXAMPLES / example])
    out = render(state, resolver=RESOLVER)
    assert out
    paths = tls_files(state, tmp_path / "pki")
    for node in out.values():
        assert not node.warnings
        nginx_accepts(nginx, with_files(node, paths))


def test_the_edge_example_uses_what_it_shows() -> None:
    node = render(load_desired_state([EXAMPLES / "edge"]), resolver=RESOLVER)["edge1.example.net:80"]
    site = node.files["http/_host.example.com.conf"]
    assert site.count("server {") == 2 and "return 301 https://$host$request_uri;" in site
    for line in ("location /api/ {", "location /live/ {", "proxy_pass http://ob_api/;", "Strict-Transport-Security"):
        assert line in site
    assert "proxy_set_header Connection $ob_connection_upgrade;" in site
    assert (
        "least_conn;" in node.files["http/api.conf"] and "hash $remote_addr consistent;" in node.files["http/live.conf"]
    )
    assert "allow 192.0.2.0/24;" in node.files["http/admin.conf"] and "deny all;" in node.files["http/admin.conf"]
    assert "proxy_protocol on;" in node.files["stream/db.conf"]
    assert "listen 443 ssl http2 default_server;" in node.files["http/_default.conf"]


def test_a_large_fleet_renders_and_nginx_accepts_it(nginx: Nginx) -> None:
    out = render(large_fleet(), resolver=RESOLVER)
    assert len(out) == 5
    for node in out.values():
        assert len(node.files) == 1 + 240  # the default server and four fifths of 300 upstreams
        nginx_accepts(nginx, node)


def test_nginx_refuses_a_broken_file_so_the_check_is_real(nginx: Nginx) -> None:
    out = render(load_desired_state([EXAMPLES / "quickstart"]), resolver=RESOLVER)
    node = next(iter(out.values()))
    config_dir = nginx.install({**node.files, "http/web.conf": node.files["http/web.conf"].replace(";", "", 1)})
    nginx.configure(http=include_http(config_dir), stream=include_stream(config_dir))
    assert nginx.check().returncode != 0


def long_name(length: int, first: str) -> str:
    """A valid DNS name of exactly ``length`` characters (labels of at most 63)."""
    name = (first + ("." + "x" * 62) * 5)[:length]
    return name[:-1] + "z" if name.endswith(".") else name


@pytest.mark.parametrize("length", [40, 41, 46, 47, 48, 63, 120, 253])
def test_long_server_names_get_the_hash_bucket_they_need(length: int, nginx: Nginx) -> None:
    names = [long_name(length, "a"), long_name(length, "b"), "short.example.com"]
    state = state_of([upstream("u", "10.0.0.1", listen={"server_names": names}), access_node("lb", "u")])
    node = render(state, resolver=RESOLVER)["lb"]
    config_dir = nginx.install(node.files)
    nginx.configure(http=include_http(config_dir), stream=include_stream(config_dir))
    result = nginx.check()
    assert result.returncode == 0, result.stderr
    assert "server_names_hash" not in result.stderr
    assert ("server_names_hash_bucket_size" in node.files["http/_default.conf"]) == (length >= 47)


def test_many_server_names_get_a_larger_hash(nginx: Nginx) -> None:
    docs = [upstream(f"u{i}", "10.0.0.1", listen={"server_names": [f"u{i}.example.com"]}) for i in range(700)]
    state = state_of([*docs, access_node("lb", *(f"u{i}" for i in range(700)))], validated=False)
    node = render(state, resolver=RESOLVER)["lb"]
    assert "server_names_hash_max_size 1024;" in node.files["http/_default.conf"]
    config_dir = nginx.install(node.files)
    nginx.configure(http=include_http(config_dir), stream=include_stream(config_dir))
    result = nginx.check()
    assert result.returncode == 0 and "server_names_hash" not in result.stderr, result.stderr
