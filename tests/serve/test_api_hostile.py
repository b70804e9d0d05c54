"""The REST API of a real ``obreconcile serve`` under hostile input and least privilege (issue 15):
no 500 for unusual JSON, no rename, no owner takeover, users as documented, located 400s,
text without separators, X-Store-Revision, the access and audit logs, a bare Server header.
Every refused write leaves the store's objects as they were."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from reconciler.store import open_store
from tests.serve.conftest import Backend, Serve, apply, wait_for, web_upstream, write_manifests
from tests.services.fleet import Fleet


class Client:
    def __init__(self, url: str, fleet: Fleet) -> None:
        self.url, self.fleet, self.http = url, fleet, requests.Session()

    def call(
        self, method: str, path: str, token: str | None = None, body: Any = None, data: bytes | None = None
    ) -> requests.Response:
        headers = {"Content-Type": "application/json", **({"X-Auth-Token": token} if token else {})}
        if data is None:
            return self.http.request(method, self.url + path, json=body, headers=headers, timeout=30)
        return self.http.request(method, self.url + path, data=data, headers=headers, timeout=30)

    def objects(self) -> dict[Any, Any]:
        with open_store(self.fleet.store) as store:
            return {k: o.body for k, o in store.snapshot().objects.items()}

    def refused(self, status: int, method: str, path: str, token: str | None, **kw: Any) -> dict[str, Any]:
        before = self.objects()
        r = self.call(method, path, token, **kw)
        assert r.status_code == status, (method, path, r.status_code, r.text[:300])
        assert "Traceback" not in r.text and r.headers["Server"] == "obreconcile"
        assert self.objects() == before, f"{method} {path}: refused, yet the store changed"
        answer: dict[str, Any] = r.json()
        assert set(answer) == {"error", "detail"}
        return answer

    def ok(self, method: str, path: str, token: str, body: Any = None) -> requests.Response:
        r = self.call(method, path, token, body)
        assert r.status_code < 300, (method, path, r.text[:300])
        return r


def test_the_api_of_serve_under_hostile_input(
    fleet: Fleet, backends: list[Backend], serve: Callable[..., Serve], tmp_path: Path
) -> None:
    apply(fleet, write_manifests(fleet, tmp_path / "m", {"web": web_upstream(backends[:1])}))
    controller = serve()
    controller.wait_master()
    admin = controller.token()
    api = Client(controller.url, fleet)

    # unusual JSON, logged in or not: a located 400, never a 500
    deep = b'{"user_name": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    for data, field in (
        (deep, ""),
        (b'{"user_name": "admin", "password": ' + b"9" * 5000 + b"}", "password"),
        (b'{"user_name": "admin", "password": "\\ud800"}', "password"),
    ):
        for token in (None, admin):
            assert api.refused(400, "POST", "/auth", token, data=data)["detail"][0]["field"] == field
    weight = b'{"hostname": "10.9.9.9:80", "weight": ' + b"7" * 5000 + b"}"
    assert api.refused(400, "POST", "/upstream/web/node", admin, data=weight)["detail"][0]["field"] == "weight"

    # an access node keeps its name
    host = fleet.nodes[0].manifest(["web"])["name"]
    node = api.ok("GET", f"/node/{host}", admin).json()
    api.refused(400, "PUT", f"/node/{host}", admin, body={**node, "name": "127.0.0.1:1"})
    assert api.call("GET", "/node/127.0.0.1:1", admin).status_code == 404

    # an ACL WRITE holder works on the upstream but cannot take it over
    api.ok("POST", "/group", admin, {"name": "team-w"})
    api.ok("POST", "/group", admin, {"name": "ro", "global_permissions": ["GLOBAL_RO"]})
    api.ok("POST", "/user", admin, {"name": "w", "password": "w-long-secret-1", "groups": ["team-w"]})
    api.ok("POST", "/user", admin, {"name": "r", "password": "r-long-secret-1", "groups": ["ro"]})
    r = api.ok("PUT", "/upstream/web/acl/team-w", admin, {"rule": "WRITE"})
    with open_store(fleet.store) as store:
        assert r.headers["X-Store-Revision"] == str(store.revision())
    writer = api.ok("POST", "/auth", "", {"user_name": "w", "password": "w-long-secret-1"}).json()["token"]
    upstream = api.ok("GET", "/upstream/web", writer).json()
    api.refused(403, "PUT", "/upstream/web", writer, body={**upstream, "owner": "team-w"})
    assert api.ok("PATCH", f"/upstream/web/node/{backends[0].hostname}", writer, {"weight": 3}).headers[
        "X-Store-Revision"
    ]

    # GLOBAL_RO reads upstreams, not people
    reader = api.ok("POST", "/auth", "", {"user_name": "r", "password": "r-long-secret-1"}).json()["token"]
    assert [u["name"] for u in api.ok("GET", "/user", reader).json()] == ["r"]
    assert [g["name"] for g in api.ok("GET", "/group", reader).json()] == ["ro"]
    assert api.call("GET", "/user/admin", reader).status_code == 404

    # what is wrong in the body is a 400, SUPER or not
    for name in ("a\u2028b", "a" * 64, "caf\u00e9"):
        assert api.refused(400, "POST", "/group", admin, body={"name": name})["detail"][0]["field"] == "name"
    api.refused(400, "POST", "/group", admin, body={"name": "g-x", "global_permissions": ["ROOT"]})
    for text in ("A\u0085B", "A\u2028B", "A\u202eB"):
        answer = api.refused(400, "PATCH", "/user/w", admin, body={"full_name": text})
        assert answer["detail"][0]["field"] == "full_name"
    api.refused(400, "POST", "/user", admin, body={"name": "x", "password": "1234567", "groups": ["ro"]})

    # one access line per request, one audit line per write
    log = wait_for(
        lambda: (t := controller.log.read_text(errors="replace")) and "POST /group 400" in t and t, 10, "log"
    )
    assert "obreconcile.api.access: 127.0.0.1 - POST /auth 400" in log
    assert "obreconcile.api.audit: admin: put Group/team-w, revision" in log
    assert "obreconcile.api.audit: w: put Upstream/web, revision" in log
    assert admin not in log and writer not in log
