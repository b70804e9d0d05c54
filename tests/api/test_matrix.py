"""The authorisation matrix against a real server: every route × eight kinds of user.

Columns: owner (team-a), ACL WRITE, ACL READ, ACL DENY with GLOBAL_RO, GLOBAL_RO, GLOBAL_RW,
MANAGEMENT, SUPER (see world.py). A refused request must leave the store exactly as it was; an
allowed write is undone (the store put back) before the next case.
"""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.store.tokens import token_hash
from tests.api.conftest import Api
from tests.api.server import bodies, restore
from tests.api.world import LB_A, USERS, password, route_matches, world

COLUMNS = list(USERS)  # owner writer reader denied ro rw mgmt root
UPSTREAM_A = next(d for d in world() if d["name"] == "app-a")
CHECK_A = next(d for d in world() if d["name"] == "chk-a")
LB = next(d for d in world() if d["name"] == LB_A)
N1 = "/upstream/app-a/node/10.0.0.1:8080"

READ_A = "200 200 200 404 200 200 404 200"
WRITE_A = "{0} {0} 403 404 403 {0} 404 {0}"
CASES: list[tuple[str, str, Any, str]] = [
    # upstreams: ACL WRITE writes, READ reads, DENY hides even with GLOBAL_RO, MANAGEMENT sees nothing
    ("GET", "/upstream/app-a", None, READ_A),
    ("PUT", "/upstream/app-a", UPSTREAM_A, WRITE_A.format(200)),
    # owner takeover: an ACL WRITE rule grants work, not ownership (its own group: team-w)
    ("PUT", "/upstream/app-a", {**UPSTREAM_A, "owner": "team-w", "checks": []}, "403 403 403 404 403 200 404 200"),
    # a check's too; allowed, this one would leave app-a (team-a) using another group's check: 409
    ("PUT", "/check/chk-a", {**CHECK_A, "owner": "team-w"}, "403 403 403 403 403 409 404 409"),
    ("POST", "/upstream/", {"name": "new-x", "owner": "team-a"}, "201 403 403 403 403 201 403 201"),
    ("DELETE", "/upstream/app-c", None, "204 404 404 403 403 204 404 204"),
    ("DELETE", "/upstream/app-a", None, WRITE_A.format(409)),  # still has nodes
    ("GET", "/upstream/app-b", None, "404 404 404 200 200 200 404 200"),
    # nodes (backends)
    ("GET", "/upstream/app-a/node", None, READ_A),
    ("POST", "/upstream/app-a/node", {"hostname": "10.0.0.3:8080"}, WRITE_A.format(201)),
    ("POST", "/upstream/app-a/node", {"hostname": "10.0.0.1:8080"}, WRITE_A.format(409)),
    ("GET", N1, None, READ_A),
    ("PUT", N1, {"weight": 2}, WRITE_A.format(200)),
    ("PATCH", N1, {"force_status": "down"}, WRITE_A.format(200)),
    ("PATCH", N1, {"weight": 0}, WRITE_A.format(400)),
    ("DELETE", "/upstream/app-a/node/10.0.0.2:8080", None, WRITE_A.format(204)),
    # checks on an upstream: another group's check needs GLOBAL_RO (the user's and the owner's)
    ("GET", "/upstream/app-a/check", None, READ_A),
    ("GET", "/upstream/app-a/check/chk-a", None, READ_A),
    ("PUT", "/upstream/app-a/check/http", None, WRITE_A.format(200)),
    ("PUT", "/upstream/app-a/check/chk-b", None, "404 404 403 404 403 400 404 400"),
    ("DELETE", "/upstream/app-a/check/chk-a", None, WRITE_A.format(204)),
    # ACL
    ("GET", "/upstream/app-a/acl", None, READ_A),
    ("GET", "/upstream/app-a/acl/team-r", None, READ_A),
    ("PUT", "/upstream/app-a/acl/team-b", {"rule": "READ"}, WRITE_A.format(200)),
    ("DELETE", "/upstream/app-a/acl/team-r", None, WRITE_A.format(204)),
    # checks
    ("GET", "/check/chk-a", None, "200 200 200 200 200 200 404 200"),
    ("GET", "/check/chk-b", None, "404 404 404 200 200 200 404 200"),
    ("PUT", "/check/chk-a", CHECK_A, "200 403 403 403 403 200 404 200"),
    ("POST", "/check/", {"name": "chk-n", "owner": "team-a", "base_check": "tcp"}, "201 403 403 403 403 201 403 201"),
    ("DELETE", "/check/chk-a", None, "409 403 403 403 403 409 404 409"),  # in use
    # access nodes: connection and nginx settings only for SUPER
    ("GET", f"/node/{LB_A}", None, "200 404 404 200 200 200 404 200"),
    ("PUT", f"/node/{LB_A}", {**LB, "description": "edge"}, "200 404 404 403 403 200 404 200"),
    ("PUT", f"/node/{LB_A}", {**LB, "connection": {"type": "ssh"}}, "403 404 404 403 403 403 404 200"),
    (
        "POST",
        "/node",
        {"name": "lb-n.example", "owner": "team-a", "connection": {"type": "local"}},
        "403 403 403 403 403 403 403 201",
    ),
    ("DELETE", f"/node/{LB_A}", None, "204 404 404 403 403 204 404 204"),
    ("GET", f"/node/{LB_A}/app-a", None, "200 404 404 404 200 200 404 200"),
    ("PUT", f"/node/{LB_A}/app-c", None, "200 404 404 403 403 200 404 200"),
    ("PUT", f"/node/{LB_A}/app-b", None, "404 404 404 403 403 200 404 200"),
    ("DELETE", f"/node/{LB_A}/app-a", None, "204 404 404 403 403 204 404 204"),
    ("GET", "/management/node", None, "403 403 403 403 403 403 403 200"),
    ("GET", "/management/node/ctl1", None, "403 403 403 403 403 403 403 404"),
    # users: MANAGEMENT, within the flags it holds; yourself: full_name and password. Least
    # privilege: GLOBAL_RO and GLOBAL_RW see no other user or group (they did until issue 15)
    ("GET", "/user/reader", None, "404 404 200 404 404 404 200 200"),
    ("GET", "/user/rw", None, "404 404 404 404 404 200 200 200"),
    ("PATCH", "/user/reader", {"full_name": "R"}, "404 404 200 404 404 404 200 200"),
    ("PATCH", "/user/root", {"full_name": "Root"}, "404 404 404 404 404 404 403 200"),
    (
        "POST",
        "/user",
        {"name": "nb", "password": "long-enough", "groups": ["team-a"]},
        "403 403 403 403 403 403 201 201",
    ),
    ("POST", "/user", {"name": "nb", "password": "long-enough", "groups": ["ro"]}, "403 403 403 403 403 403 403 201"),
    ("DELETE", "/user/reader", None, "404 404 403 404 404 404 204 204"),
    ("PUT", "/user/reader/team-b", None, "404 404 403 404 404 404 200 200"),
    ("PUT", "/user/reader/ro", None, "404 404 403 404 404 404 403 200"),
    ("DELETE", "/user/writer/team-w", None, "404 403 404 404 404 404 400 400"),  # a user needs a group
    # groups: GLOBAL_* flags only with GLOBAL_RW (or SUPER); never a flag you do not hold
    ("GET", "/group/team-b", None, "404 404 404 404 404 404 200 200"),
    ("GET", "/group/team-d", None, "404 404 404 200 404 404 200 200"),  # your own group
    ("POST", "/group", {"name": "g-n"}, "403 403 403 403 403 403 201 201"),
    ("POST", "/group", {"name": "g-n", "global_permissions": ["GLOBAL_RO"]}, "403 403 403 403 403 403 403 201"),
    ("POST", "/group", {"name": "g-n", "global_permissions": ["MANAGEMENT"]}, "403 403 403 403 403 403 201 201"),
    ("POST", "/group", {"name": "g-n", "global_permissions": ["SUPER"]}, "403 403 403 403 403 403 403 201"),
    ("PUT", "/group/team-b", {"global_permissions": ["GLOBAL_RW"]}, "404 404 404 404 404 404 403 200"),
    ("PUT", "/group/team-b", {"global_permissions": ["ROOT"]}, "404 404 404 404 404 404 400 400"),  # no such flag
    ("DELETE", "/group/team-b", None, "404 404 404 404 404 404 409 409"),  # still owns app-b
    ("GET", "/status", None, "200 200 200 200 200 200 200 200"),
    # lists: everyone may ask; what each sees is test_lists_show_only_what_each_user_may_read
    ("GET", "/upstream/", None, "200 200 200 200 200 200 200 200"),
    ("GET", "/check/", None, "200 200 200 200 200 200 200 200"),
    ("GET", "/node", None, "200 200 200 200 200 200 200 200"),
    ("GET", "/user", None, "200 200 200 200 200 200 200 200"),
    ("GET", "/group", None, "200 200 200 200 200 200 200 200"),
    # the dashboard's reads: health as the upstream's read access; lists show what each may read
    # (tests/api/test_readings.py)
    ("GET", "/upstream/app-a/health", None, READ_A),
    ("GET", "/upstream/app-b/health", None, "404 404 404 200 200 200 404 200"),
    ("GET", "/health", None, "200 200 200 200 200 200 200 200"),
    ("GET", "/deploy", None, "200 200 200 200 200 200 200 200"),
    ("GET", "/audit", None, "200 200 200 200 200 200 200 200"),
]


def relogin(api: Api) -> None:
    """Log in again users whose tokens an allowed write revoked (deleting or disabling a user)."""
    for user, token in api.tokens.items():
        if api.store.get_token(token_hash(token)) is None:
            api.tokens[user] = api.server.login(user, password(user))


@pytest.mark.parametrize(("method", "path", "body", "expected"), CASES, ids=[f"{c[0]} {c[1]}" for c in CASES])
def test_matrix(api: Api, method: str, path: str, body: Any, expected: str) -> None:
    got = []
    for user, want in zip(COLUMNS, expected.split(), strict=True):
        before = api.store.snapshot()
        r = api.server.call(method, path, api.tokens[user], body)
        got.append(str(r.status_code))
        assert r.headers.get("Content-Type", "").startswith("application/json") or r.status_code == 204
        if r.status_code >= 400 or method == "GET":
            assert api.store.revision() == before.revision, f"{user}: refused, yet the store changed"
            assert bodies(api.store) == {k: o.body for k, o in before.objects.items()}
        else:
            assert api.store.audit(before.revision)[-1].provenance.origin == user
            restore(api.store, before)
            relogin(api)
        if want == str(r.status_code) and r.status_code >= 400:
            assert set(r.json()) == {"error", "detail"}
    assert " ".join(got) == expected, dict(zip(COLUMNS, got, strict=True))


def test_the_matrix_covers_every_route() -> None:
    """Every authenticated route but DELETE /auth (tests/api/test_auth.py) has a row."""
    from reconciler.api.app import ALL_ROUTES

    missing = [
        (r.method, r.path)
        for r in ALL_ROUTES
        if not r.public and (r.method, r.path) != ("DELETE", "/auth")
        if not any(m == r.method and route_matches(r.path, p) for m, p, _, _ in CASES)
    ]
    assert not missing


def test_lists_show_only_what_each_user_may_read(api: Api) -> None:
    def names(user: str, path: str) -> list[str]:
        r = api.server.call("GET", path, api.tokens[user])
        assert r.status_code == 200
        return [item["name"] for item in r.json()]

    assert names("owner", "/upstream/") == ["app-a", "app-c"]
    assert names("reader", "/upstream/") == ["app-a"]
    assert names("denied", "/upstream/") == ["app-b", "app-c"]  # DENY beats GLOBAL_RO
    assert names("mgmt", "/upstream/") == []
    assert names("root", "/upstream/") == ["app-a", "app-b", "app-c"]
    assert names("writer", "/check/") == ["chk-a"]  # readable through app-a
    assert names("owner", "/node") == [LB_A]
    assert names("writer", "/node") == []
    assert names("reader", "/user") == ["reader"]
    assert names("ro", "/user") == ["ro"] and names("rw", "/user") == ["rw"]  # GLOBAL_*: no one else
    assert names("rw", "/group") == ["rw"] and names("denied", "/group") == ["team-d"]
    users = api.server.call("GET", "/user", api.tokens["mgmt"]).json()
    assert all("password_hash" not in u for u in users) and len(users) == 9


def test_every_route_needs_a_token(api: Api) -> None:
    from reconciler.api.app import ALL_ROUTES

    for route in ALL_ROUTES:
        if route.public:
            continue
        path = route.path.replace("{host_name}", LB_A).replace("{", "").replace("}", "")
        for token in (None, "not-a-token", "x" * 500):
            r = api.server.call(route.method, path, token, {} if route.body else None)
            assert r.status_code == 401, (route.method, path, r.status_code)
            assert r.json()["error"]
