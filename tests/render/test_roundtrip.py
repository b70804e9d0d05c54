"""Round trip: rendered files parsed by crossplane have exactly the structure the model says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import crossplane
import pytest

from reconciler.health.select import Role, select
from reconciler.manifest.model import DesiredState, Upstream
from reconciler.manifest.validate import load_desired_state
from reconciler.render.renderer import render
from reconciler.resolve import StaticResolver, ip_literal
from tests.render.desired import large_fleet

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RESOLVER = StaticResolver({}, default=["192.0.2.10", "2001:db8::10"])


def parse(path: Path) -> list[dict[str, Any]]:
    payload = crossplane.parse(str(path), single=True, check_ctx=False, comments=True, catch_errors=False)
    assert payload["status"] == "ok", payload["errors"]
    return payload["config"][0]["parsed"]  # type: ignore[no-any-return]


def expected_servers(upstream: Upstream) -> list[tuple[list[str], str]]:
    """(server directive args, hostname comment) the model and selection call for, in order."""
    out = []
    for selected in select(upstream).backends:
        backend = selected.backend
        host, port = backend.address
        addresses = [ip_literal(host)] if ip_literal(host) else ["192.0.2.10", "2001:db8::10"]
        for address in addresses:
            assert address is not None
            rendered = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
            timeout = backend.fail_timeout if not backend.fail_timeout.endswith("ms") else "1s"
            args = [rendered, f"weight={backend.weight}", f"max_fails={backend.max_fails}", f"fail_timeout={timeout}"]
            if selected.role is not Role.ENABLED:
                args.append(selected.role.value)
            out.append((args, f" {backend.hostname}"))
    return out


def check_upstream_file(parsed: list[dict[str, Any]], upstream: Upstream, listen: str) -> None:
    blocks = [d for d in parsed if d["directive"] != "#"]
    assert [d["directive"] for d in blocks] == ["upstream", "server"]
    block, server = blocks
    assert block["args"] == [f"ob_{upstream.name}"]
    servers = []
    for i, directive in enumerate(block["block"]):
        if directive["directive"] == "server":
            comment = block["block"][i + 1]
            assert comment["directive"] == "#" and comment["line"] == directive["line"]
            servers.append((directive["args"], comment["comment"]))
    assert servers == expected_servers(upstream)
    directives = {d["directive"]: d["args"] for d in server["block"] if d["directive"] != "location"}
    assert directives["listen"] == [listen]
    if upstream.listen.protocol == "tcp":
        assert directives["proxy_pass"] == [f"ob_{upstream.name}"]
        return
    assert directives["server_name"] == list(upstream.listen.server_names)
    (location,) = [d for d in server["block"] if d["directive"] == "location"]
    inner = {d["directive"]: d["args"] for d in location["block"]}
    assert inner["proxy_pass"] == [f"http://ob_{upstream.name}"]


def check_state(state: DesiredState, tmp_path: Path) -> None:
    for name, node in render(state, resolver=RESOLVER).items():
        model = state.access_nodes[name]
        address = "" if model.listen_address == "*" else f"{model.listen_address}:"
        expected_files = {"http/_default.conf"}
        for upstream_name in model.upstreams:
            upstream = state.upstreams[upstream_name]
            directory = "stream" if upstream.listen.protocol == "tcp" else "http"
            port = upstream.listen.port if upstream.listen.protocol == "tcp" else model.http_port
            path = tmp_path / name / directory / f"{upstream_name}.conf"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(node.files[f"{directory}/{upstream_name}.conf"])
            check_upstream_file(parse(path), upstream, f"{address}{port}")
            expected_files.add(f"{directory}/{upstream_name}.conf")
        assert set(node.files) == expected_files
        default = tmp_path / name / "default.conf"
        default.write_text(node.files["http/_default.conf"])
        (server,) = [d for d in parse(default) if d["directive"] == "server"]
        assert [d["args"] for d in server["block"] if d["directive"] == "listen"] == [
            [f"{address}{model.http_port}", "default_server"]
        ]


@pytest.mark.parametrize("example", ["fleet", "quickstart"])
def test_examples_round_trip(example: str, tmp_path: Path) -> None:
    check_state(load_desired_state([EXAMPLES / example]), tmp_path)


def test_a_large_fleet_round_trips(tmp_path: Path) -> None:
    check_state(large_fleet(upstreams=60, access_nodes=2), tmp_path)
