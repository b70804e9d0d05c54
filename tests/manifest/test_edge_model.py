"""The edge sections of an Upstream in the model: defaults, manifest form, and plan's object changes."""

from __future__ import annotations

from typing import Any

from reconciler.deploy.plan import Change, Op, diff_models, node_model
from reconciler.manifest.model import Balancing, Method, to_manifest
from tests.render.desired import access_node, state_of, upstream


def model_of(**fields: Any) -> dict[str, Any]:
    state = state_of([upstream("api", "10.0.0.1", **fields), access_node("lb", "api")])
    return node_model(state, state.access_nodes["lb"])


def test_an_upstream_without_the_new_sections_keeps_its_manifest_form() -> None:
    state = state_of([upstream("api", "10.0.0.1")])
    assert state.upstreams["api"].balancing == Balancing()
    assert "balancing" not in to_manifest("Upstream", state.upstreams["api"])


def test_the_manifest_form_is_plain_data() -> None:
    state = state_of([upstream("api", "10.0.0.1", balancing={"method": "hash", "key": "$host"})])
    assert state.upstreams["api"].balancing.method is Method.HASH
    body = to_manifest("Upstream", state.upstreams["api"])
    assert body["balancing"] == {"method": "hash", "key": "$host", "consistent": False}
    assert type(body["balancing"]["method"]) is str


def test_plan_shows_balancing_as_object_changes() -> None:
    before = model_of()
    least = model_of(balancing={"method": "least_conn"})
    hashed = model_of(balancing={"method": "hash", "key": "$request_uri"})
    assert diff_models(before, least) == [
        Change(Op.ADD, "Upstream/api", "balancing", None, {"method": "least_conn", "consistent": False})
    ]
    assert diff_models(least, hashed) == [
        Change(Op.ADD, "Upstream/api", "balancing.key", None, "$request_uri"),
        Change(Op.CHANGE, "Upstream/api", "balancing.method", "least_conn", "hash"),
    ]


def test_plan_shows_proxy_settings_as_object_changes() -> None:
    short = model_of(proxy={"read_timeout": "60s"})
    long = model_of(proxy={"read_timeout": "1h"})
    assert "proxy" not in short["upstreams"]["api"]  # the defaults: the manifest form of before
    assert diff_models(short, long) == [
        Change(Op.ADD, "Upstream/api", "proxy", None, long["upstreams"]["api"]["proxy"])
    ]
    assert diff_models(model_of(proxy={"websockets": True}), long) == [
        Change(Op.CHANGE, "Upstream/api", "proxy.read_timeout", "60s", "1h"),
        Change(Op.CHANGE, "Upstream/api", "proxy.websockets", True, False),
    ]


def test_plan_shows_a_route_as_listen_changes() -> None:
    root = model_of()
    assert set(root["upstreams"]["api"]["listen"]) == {"protocol", "server_names"}  # as before routes
    routed = model_of(listen={"server_names": ["api"], "path": "/v1/", "strip_path": True})
    assert diff_models(root, routed) == [
        Change(Op.ADD, "Upstream/api", "listen.path", None, "/v1/"),
        Change(Op.ADD, "Upstream/api", "listen.strip_path", None, True),
    ]


def test_plan_shows_tls_as_object_changes() -> None:
    tls = {"certificate": "/etc/ssl/api.pem", "key": "/etc/ssl/api.key"}
    plain, terminated = model_of(), model_of(tls=tls)
    assert "https_port" not in plain["access_node"] and "tls" not in plain["upstreams"]["api"]
    assert diff_models(plain, terminated) == [
        Change(Op.ADD, "Upstream/api", "tls", None, {**tls, "redirect_http": False})
    ]
    redirected = model_of(tls={**tls, "redirect_http": True})
    assert diff_models(terminated, redirected) == [Change(Op.CHANGE, "Upstream/api", "tls.redirect_http", False, True)]
