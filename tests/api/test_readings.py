"""GET /health, /upstream/{name}/health, /deploy and /audit: what each kind of user reads, paging.

The world of tests/api/world.py: owner owns app-a and app-c (team-a), team-b owns app-b; reader
has an ACL READ on app-a, denied an ACL DENY (with GLOBAL_RO), ro GLOBAL_RO, root SUPER.
"""

from __future__ import annotations

import time

from reconciler.store import DeployRecord, DeployResult, HealthRecord, Provenance, Put
from tests.api.conftest import Api
from tests.api.server import doc, restore
from tests.api.world import LB_A


def names(api: Api, user: str, query: str = "") -> list[str]:
    r = api.server.call("GET", "/health" + query, api.tokens[user])
    assert r.status_code == 200, r.text
    return [u["name"] for u in r.json()["upstreams"]]


def test_health_lists_only_readable_upstreams_with_the_access_each_user_has(api: Api) -> None:
    assert names(api, "owner") == ["app-a", "app-c"]
    assert names(api, "denied") == ["app-b", "app-c"]  # DENY beats GLOBAL_RO
    assert names(api, "reader") == ["app-a"]
    assert names(api, "mgmt") == []
    assert names(api, "root") == ["app-a", "app-b", "app-c"]
    access = {
        u: api.server.call("GET", "/upstream/app-a/health", api.tokens[u]).json().get("access")
        for u in ("owner", "reader", "writer")
    }
    assert access == {"owner": "write", "reader": "read", "writer": "write"}
    for user in ("denied", "mgmt"):
        r = api.server.call("GET", "/upstream/app-a/health", api.tokens[user])
        assert r.status_code == 404 and "app-a" in r.json()["error"]
    assert api.server.call("GET", "/health").status_code == 401


def test_health_shows_down_since_latency_and_tiers_and_filters(api: Api) -> None:
    now = time.time()
    api.store.record_health(
        [HealthRecord("app-a", "10.0.0.1:8080", "chk-a", "down", 3, "connection refused", now, 0.0021, now, now - 30)]
    )
    try:
        r = api.server.call("GET", "/upstream/app-a/health", api.tokens["owner"])
        assert r.status_code == 200
        body = r.json()
        down, up = body["backends"]
        assert (down["hostname"], down["health"], down["role"], down["detail"]) == (
            "10.0.0.1:8080",
            "down",
            "down",
            "connection refused",
        )
        assert down["since"] == now - 30 and down["seconds"] == 0.0021 and down["checked"] == now
        assert (up["health"], up["role"], up["checked"]) == ("up", "enabled", None)
        assert body["tiers_in_use"] == [0] and body["panic"] is False and body["min_servers"] == 1
        assert names(api, "root", "?state=down") == ["app-a"]
        assert names(api, "root", "?state=problems") == ["app-a"]
        assert names(api, "root", "?state=panic") == []
        assert names(api, "root", "?q=10.0.1.1") == ["app-b"]
        page = api.server.call("GET", "/health?offset=1&limit=1", api.tokens["root"]).json()
        assert (page["total"], [u["name"] for u in page["upstreams"]]) == (3, ["app-b"])
        assert page["counts"] == {
            "upstreams": 3,
            "panic": 0,
            "refused": 0,
            "backends": 3,
            "up": 2,
            "down": 1,
            "drained": 0,
            "forced": 0,
        }
    finally:
        api.store.record_health([HealthRecord("app-a", "10.0.0.1:8080", "chk-a", "up", 2, "200", now)])
    for bad in ("?state=sideways", "?limit=0", "?limit=abc", "?offset=-1", "?limit=" + "9" * 30):
        r = api.server.call("GET", "/health" + bad, api.tokens["root"])
        assert r.status_code == 400 and r.json()["error"] == "invalid query", bad


def test_an_upstream_refused_on_an_access_node_shows_in_its_health_for_who_may_read_it(fresh_api: Api) -> None:
    api = fresh_api
    revision = api.store.revision()
    refused = {"upstream": "app-a", "message": "template t: refusing value 'a b'", "field": "", "value": "'a b'"}
    record = DeployRecord(LB_A, revision, {}, DeployResult.CONVERGED, when=3000.0, refused=({**refused, "paths": ["http/app-a.conf"]},))
    api.store.record_deploy(record)
    for user in ("owner", "reader"):
        body = api.server.call("GET", "/upstream/app-a/health", api.tokens[user]).json()
        assert body["refused"] == [
            {"access_node": LB_A, "message": refused["message"], "field": "", "value": "'a b'", "paths": ["http/app-a.conf"]}
        ]
    assert api.server.call("GET", "/upstream/app-c/health", api.tokens["owner"]).json()["refused"] == []
    assert names(api, "root", "?state=problems") == ["app-a"]  # every backend is up: refused is the problem
    page = api.server.call("GET", "/health", api.tokens["owner"]).json()
    assert page["counts"]["refused"] == 1 and page["upstreams"][0]["refused"][0]["access_node"] == LB_A
    assert api.server.call("GET", "/upstream/app-a/health", api.tokens["denied"]).status_code == 404
    api.store.record_deploy(DeployRecord(LB_A, revision, {}, DeployResult.CONVERGED, when=3001.0))  # renders again
    assert names(api, "root", "?state=problems") == []


def test_deploy_history_is_newest_first_paged_and_per_readable_node(api: Api) -> None:
    revision = api.store.revision()
    for i, result in enumerate([DeployResult.CONVERGED, DeployResult.FAILED, DeployResult.CONVERGED]):
        api.store.record_deploy(
            DeployRecord(
                LB_A,
                revision,
                {},
                result,
                "" if i != 1 else "refused",
                when=1000.0 + i,
                by="serve ctl",
                step="connect" if i == 1 else "",
            )
        )
    api.store.record_deploy(
        DeployRecord("gone.example:80", revision, {}, DeployResult.CONVERGED, when=2000.0, by="apply ci@runner")
    )
    r = api.server.call("GET", "/deploy?limit=2", api.tokens["owner"])
    assert r.status_code == 200
    first = r.json()
    assert [(e["access_node"], e["when"]) for e in first["entries"]] == [(LB_A, 1002.0), (LB_A, 1001.0)]
    assert first["entries"][1]["step"] == "connect" and first["entries"][1]["by"] == "serve ctl"
    rest = api.server.call("GET", f"/deploy?limit=2&before={first['next']}", api.tokens["owner"]).json()
    assert [e["when"] for e in rest["entries"]] == [1000.0] and rest["next"] is None
    by_ro = api.server.call("GET", "/deploy", api.tokens["ro"]).json()["entries"]
    assert by_ro[0]["access_node"] == "gone.example:80"  # a node gone from the store: GLOBAL_RO sees it
    assert api.server.call("GET", "/deploy", api.tokens["reader"]).json()["entries"] == []
    latest = api.server.call("GET", "/deploy?latest=true", api.tokens["owner"]).json()["entries"]
    assert [(e["access_node"], e["when"]) for e in latest] == [(LB_A, 1002.0)]
    assert (
        api.server.call("GET", f"/deploy?access_node={LB_A}&limit=1", api.tokens["root"]).json()["entries"][0]["when"]
        == 1002.0
    )


def test_audit_is_newest_first_paged_and_filtered_by_what_the_user_may_read(api: Api) -> None:
    who = Provenance("api", "owner")
    before = api.store.snapshot()
    for weight in (2, 3):
        body = doc("Upstream", "app-c", owner="team-a", nodes=[{"hostname": "10.9.9.9:80", "weight": weight}])
        api.store.commit([Put("Upstream", "app-c", body, who)])
    try:
        check_audit(api)
    finally:
        restore(api.store, before)


def check_audit(api: Api) -> None:
    r = api.server.call("GET", "/audit?limit=2", api.tokens["owner"])
    assert r.status_code == 200
    page = r.json()
    assert [(e["kind"], e["name"], e["origin"], e["source"]) for e in page["entries"]] == [
        ("Upstream", "app-c", "owner", "api")
    ] * 2
    assert page["entries"][0]["revision"] > page["entries"][1]["revision"]
    older = api.server.call("GET", f"/audit?limit=1000&before={page['next']}", api.tokens["owner"]).json()
    seen = {(e["kind"], e["name"]) for e in older["entries"]}
    assert ("Upstream", "app-a") in seen and ("Upstream", "app-b") not in seen and older["next"] is None
    assert all(e["source"] == "manifest" and e["origin"] == "tests.yaml" for e in older["entries"])
    everyone = {
        (e["kind"], e["name"])
        for e in api.server.call("GET", "/audit?limit=1000", api.tokens["root"]).json()["entries"]
    }
    assert ("Upstream", "app-b") in everyone and ("User", "mgmt") in everyone
    only = api.server.call("GET", "/audit?kind=Upstream&name=app-c", api.tokens["root"]).json()["entries"]
    assert len(only) >= 3 and {e["name"] for e in only} == {"app-c"}
    assert api.server.call("GET", "/audit?before=x", api.tokens["root"]).status_code == 400


def test_the_dashboard_is_served_with_its_csp_to_anyone(api: Api) -> None:
    r = api.server.call("GET", "/")
    assert r.status_code == 200 and "<title>obreconcile</title>" in r.text
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    assert api.server.call("GET", "/ui/app.js").headers["Content-Type"].startswith("text/javascript")
    assert api.server.call("GET", "/ui/nothing.js").status_code == 404
