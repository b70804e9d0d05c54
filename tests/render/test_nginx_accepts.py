"""Every example and a generated large fleet render, and real `nginx -t` accepts each access node."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.manifest.validate import load_desired_state
from reconciler.render import RenderedAccessNode, render
from reconciler.resolve import StaticResolver
from tests.render.desired import large_fleet
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
