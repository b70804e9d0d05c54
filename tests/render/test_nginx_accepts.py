"""Every example and a generated large fleet render, and real `nginx -t` accepts each access node."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.manifest.validate import load_desired_state
from reconciler.render.renderer import RenderedAccessNode, render
from reconciler.resolve import StaticResolver
from tests.render.desired import access_node, large_fleet, state_of, upstream
from tests.services.nginx import Nginx, include_http, include_stream

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# Example hostnames are not in DNS: every name answers one IPv4 and one IPv6 address.
RESOLVER = StaticResolver({}, default=["192.0.2.10", "2001:db8::10"])


def nginx_accepts(nginx: Nginx, node: RenderedAccessNode) -> None:
    config_dir = nginx.install(node.files)
    nginx.configure(http=include_http(config_dir), stream=include_stream(config_dir))
    nginx.test()


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir()))
def test_every_example_renders_and_nginx_accepts_it(example: str, nginx: Nginx) -> None:
    out = render(load_desired_state([EXAMPLES / example]), resolver=RESOLVER)
    assert out
    for node in out.values():
        assert not node.warnings
        nginx_accepts(nginx, node)


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
