"""The edge fields (balancing, ...) through the REST API: the same schemas and rules as manifests."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import Api
from tests.api.test_writes import refused
from tests.api.world import LB_A

APP_A = {
    "owner": "team-a",
    "checks": ["chk-a"],
    "nodes": [{"hostname": "10.0.0.1:8080"}, {"hostname": "10.0.0.2:8080"}],
}


def put(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    r = api.server.call("PUT", "/upstream/app-a", api.tokens["owner"], body)
    assert r.status_code == 200, r.text
    got = api.server.call("GET", "/upstream/app-a", api.tokens["owner"])
    answer: dict[str, Any] = got.json()
    return answer


def test_balancing_is_stored_and_read_back(fresh_api: Api) -> None:
    balancing = {"method": "hash", "key": "$cookie_sid", "consistent": True}
    assert put(fresh_api, {**APP_A, "balancing": balancing})["balancing"] == balancing


def test_balancing_is_refused_as_in_a_manifest(fresh_api: Api) -> None:
    body = {**APP_A, "balancing": {"method": "hash", "key": "$http_x"}}
    answer = refused(fresh_api, "PUT", "/upstream/app-a", body, 400, "owner")
    assert [p["field"] for p in answer["detail"]] == ["balancing.key"]
    put(fresh_api, {**APP_A, "balancing": {"method": "ip_hash"}})
    # a backup tier added later, node by node, is refused with nginx's reason
    answer = refused(fresh_api, "PATCH", "/upstream/app-a/node/10.0.0.2:8080", {"failover": 1}, 400, "owner")
    assert answer["detail"][0]["field"] == "nodes[1].failover"
    assert "does not support parameter backup" in answer["detail"][0]["message"]


def test_proxy_settings_are_stored_and_refused_as_in_a_manifest(fresh_api: Api) -> None:
    proxy = {"read_timeout": "1h", "websockets": True, "headers": [{"name": "X-Env", "value": "prod"}]}
    assert put(fresh_api, {**APP_A, "proxy": proxy})["proxy"] == proxy
    bad = {**APP_A, "proxy": {"headers": [{"name": "X-Env", "value": "a;b"}], "proxy_protocol": True}}
    answer = refused(fresh_api, "PUT", "/upstream/app-a", bad, 400, "owner")
    assert sorted(p["field"] for p in answer["detail"]) == ["proxy.headers[0].value", "proxy.proxy_protocol"]


def test_two_upstreams_on_one_name_and_path_are_refused_on_the_access_node(fresh_api: Api) -> None:
    assert fresh_api.server.call("PUT", f"/node/{LB_A}/app-c", fresh_api.tokens["root"]).status_code == 200
    route = {"owner": "team-a", "listen": {"server_names": ["app-a"], "path": "/api/", "strip_path": True}}
    r = fresh_api.server.call("PUT", "/upstream/app-c", fresh_api.tokens["owner"], route)
    assert r.status_code == 200, r.text  # app-a at /, app-c at /api/ under the same name
    clash = {**APP_A, "listen": {"path": "/api/"}}
    answer = refused(fresh_api, "PUT", "/upstream/app-a", clash, 409, "owner")
    assert "server name 'app-a' at path '/api/'" in str(answer["detail"])


def test_tls_is_stored_and_an_https_port_clash_is_refused(fresh_api: Api) -> None:
    tls = {"certificate": "/etc/ssl/app-a.pem", "key": "/etc/ssl/app-a.key", "redirect_http": True}
    assert put(fresh_api, {**APP_A, "tls": tls})["tls"] == tls
    node = fresh_api.server.call("GET", f"/node/{LB_A}", fresh_api.tokens["root"]).json()
    clash = {**node, "https_port": int(LB_A.rpartition(":")[2]) if ":" in LB_A else 80}
    answer = refused(fresh_api, "PUT", f"/node/{LB_A}", clash, 400)
    assert answer["detail"][0]["field"] == "https_port"
