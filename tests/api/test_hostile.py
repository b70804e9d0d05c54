"""Hostile but well-formed input against a real server: never a 500, never a rename, never a
takeover; every refusal is a located 400 (or 403) and leaves the store exactly as it was."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import requests

from reconciler.api.app import ALL_ROUTES
from reconciler.api.routes import Route
from tests.api.conftest import Api
from tests.api.server import FAST_HASHER, bodies, restore
from tests.api.test_fuzz import BODY_FIELDS, TEMPLATES
from tests.api.test_matrix import relogin
from tests.api.world import LB_A, password, path_of, send, world

BODY_ROUTES = [r for r in ALL_ROUTES if r.body]

DEEP = b'{"name": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
DIGITS = b'{"name": "x", "min_servers": ' + b"9" * 5000 + b', "weight": ' + b"7" * 5000 + b"}"
SURROGATE = b'{"name": "\\ud800", "password": "\\udfff"}'
NOT_JSON_VALUES = b'{"name": NaN, "weight": Infinity}'
REPEATED_KEY = b'{"name": "a", "name": "b"}'
NOT_UTF8 = b'{"name": "\xed\xa0\x80"}'  # U+D800 encoded as UTF-8: not UTF-8
HUGE_FLOAT = b'{"weight": 1e999}'
HOSTILE = {
    "deep": (DEEP, "nesting deeper than 64 levels"),
    "digits": (DIGITS, "a number of 5000 characters"),
    "surrogate": (SURROGATE, "lone surrogate"),
    "nan": (NOT_JSON_VALUES, "is not a JSON value"),
    "repeated": (REPEATED_KEY, "given twice"),
    "utf8": (NOT_UTF8, "not UTF-8"),
    "float": (HUGE_FLOAT, "too large a number"),
}


def assert_refused(api: Api, r: requests.Response, status: int, before: Any, message: str = "") -> dict[str, Any]:
    assert r.status_code == status, r.text[:500]
    assert "Traceback" not in r.text
    assert bodies(api.store) == before, "refused, yet the store changed"
    answer: dict[str, Any] = r.json()
    assert set(answer) == {"error", "detail"}
    if message:
        assert message in json.dumps(answer), answer
    return answer


@pytest.mark.parametrize("route", BODY_ROUTES, ids=[f"{r.method} {r.path}" for r in BODY_ROUTES])
@pytest.mark.parametrize("case", list(HOSTILE))
def test_unusual_json_is_a_located_400_on_every_route(api: Api, route: Route, case: str) -> None:
    data, message = HOSTILE[case]
    before = bodies(api.store)
    r = send(api, route.method, path_of(route), data, None if route.public else "root")
    answer = assert_refused(api, r, 400, before, message)
    problem = answer["detail"][0]
    assert problem["message"] and problem["text"]
    if case in ("digits", "surrogate", "nan", "float"):
        assert problem["field"], answer  # located by the field
    if not route.public:  # a user with fewer rights: refused for the body, or before it is read
        r = send(api, route.method, path_of(route), data, "reader")
        assert_refused(api, r, r.status_code if r.status_code in (403, 404) else 400, before)


def test_refused_values_name_their_field(api: Api) -> None:
    before = bodies(api.store)
    nested = b'{"name": "x", "owner": "team-a", "nodes": [{"hostname": "a"}, {"hostname": "\\udc00"}]}'
    answer = assert_refused(api, send(api, "POST", "/upstream/", nested), 400, before)
    assert answer["detail"][0]["field"] == "nodes[1].hostname"
    server_name = b'{"name": "x", "owner": "team-a", "listen": {"server_names": ["\\ud800.example"]}}'
    answer = assert_refused(api, send(api, "POST", "/upstream/", server_name), 400, before)
    assert answer["detail"][0]["field"] == "listen.server_names[0]"
    for path, field in (("/user/reader", "full_name"), (f"/node/{LB_A}", "description")):
        method = "PATCH" if path.startswith("/user") else "PUT"
        data = json.dumps({field: "a"})[:-2].encode() + b'\\ud800"}'
        answer = assert_refused(api, send(api, method, path, data), 400, before)
        assert answer["detail"][0]["field"] == field
    r = send(api, "POST", "/auth", b'{"user_name": "root", "password": "\\ud800"}', None)
    assert assert_refused(api, r, 400, before)["detail"][0]["field"] == "password"


def test_a_name_never_changes(api: Api) -> None:
    """PUT with another name is 400 on every kind: names are the identity."""
    lb = next(d for d in world() if d["name"] == LB_A)
    before = bodies(api.store)
    renames = [
        (f"/node/{LB_A}", {**lb, "name": "127.0.0.1:1"}),
        ("/upstream/app-a", {"name": "app-z", "owner": "team-a"}),
        ("/check/chk-a", {"name": "chk-z", "owner": "team-a", "base_check": "tcp"}),
        ("/group/team-b", {"name": "team-z"}),
        ("/upstream/app-a/node/10.0.0.1:8080", {"hostname": "10.0.0.9:8080"}),
        ("/upstream/app-a/acl/team-r", {"group_name": "team-b", "rule": "READ"}),
    ]
    for path, body in renames:
        answer = assert_refused(api, api.server.call("PUT", path, api.tokens["root"], body), 400, before)
        assert "never changes" in json.dumps(answer)
    r = api.server.call("PATCH", "/user/reader", api.tokens["root"], {"name": "other"})
    assert_refused(api, r, 400, before)
    assert api.server.call("GET", f"/node/{LB_A}", api.tokens["root"]).json()["name"] == LB_A


def test_an_acl_grants_work_not_ownership(api: Api) -> None:
    """An ACL WRITE holder may change app-a but not give it to its own group (or any other)."""
    upstream = next(d for d in world() if d["name"] == "app-a")
    before = bodies(api.store)
    for owner in ("team-w", "team-b"):
        r = api.server.call("PUT", "/upstream/app-a", api.tokens["writer"], {**upstream, "owner": owner})
        assert_refused(api, r, 403, before, "owner")
    r = api.server.call("PUT", "/upstream/app-a", api.tokens["owner"], {**upstream, "owner": "team-b"})
    assert_refused(api, r, 403, before, "owner")  # the owner group gives it only to a group of its own


@pytest.mark.parametrize(
    "name",
    ["a\nb", "a\tb", "a\x00b", "a\\b", "café", "a\u202eb", "a\u2028b", "a" * 64, "b" * 70, "A"],
    ids=repr,
)
def test_an_invalid_name_is_the_body_s_fault(api: Api, name: str) -> None:
    before = bodies(api.store)
    for path, body in (
        ("/group", {"name": name}),
        ("/upstream/", {"name": name, "owner": "team-a"}),
        ("/check/", {"name": name, "owner": "team-a", "base_check": "tcp"}),
    ):
        answer = assert_refused(api, api.server.call("POST", path, api.tokens["root"], body), 400, before)
        assert any(p["field"] == "name" for p in answer["detail"]), answer


def test_a_long_valid_name_with_a_bad_field_is_the_body_s_fault(api: Api) -> None:
    before = bodies(api.store)
    r = api.server.call("POST", "/upstream/", api.tokens["root"], {"name": "a" * 63, "owner": "team-a", "x": 1})
    assert assert_refused(api, r, 400, before)["detail"][0]["field"] == "x"


@pytest.mark.parametrize("user", ["root", "mgmt"])
def test_an_unknown_flag_is_a_400(api: Api, user: str) -> None:
    before = bodies(api.store)
    for method, path, body in (
        ("POST", "/group", {"name": "g-x", "global_permissions": ["ROOT"]}),
        ("PUT", "/group/team-b", {"global_permissions": ["ROOT"]}),
        ("PUT", "/group/team-b", {"global_permissions": [7]}),
    ):
        answer = assert_refused(api, api.server.call(method, path, api.tokens[user], body), 400, before)
        assert answer["detail"][0]["field"].startswith("global_permissions"), answer


@pytest.mark.parametrize("char", ["\u0085", "\u009b", "\u2028", "\u2029", "\u202e", "\u200b", "\ufeff", "\U000e0041"])
def test_text_refuses_controls_formats_and_separators(api: Api, char: str) -> None:
    before = bodies(api.store)
    r = api.server.call("PATCH", "/user/reader", api.tokens["root"], {"full_name": f"A{char}B"})
    assert assert_refused(api, r, 400, before)["detail"][0]["field"] == "full_name"
    lb = next(d for d in world() if d["name"] == LB_A)
    r = api.server.call("PUT", f"/node/{LB_A}", api.tokens["root"], {**lb, "description": f"edge{char}"})
    assert assert_refused(api, r, 400, before)["detail"][0]["field"] == "description"


def test_text_keeps_letters_of_every_script(fresh_api: Api) -> None:
    name = "Zoë Ñandú — 名前 ‘Ω’ 🙂"
    r = fresh_api.server.call("PATCH", "/user/reader", fresh_api.tokens["root"], {"full_name": name})
    assert r.status_code == 200 and r.json()["full_name"] == name


def test_users_and_groups_are_seen_as_documented(api: Api) -> None:
    """Only MANAGEMENT or SUPER list everyone; the others see themselves and their own groups."""

    def names(user: str, path: str) -> list[str]:
        r = api.server.call("GET", path, api.tokens[user])
        assert r.status_code == 200
        return [item["name"] for item in r.json()]

    for user, group in (("ro", "ro"), ("rw", "rw"), ("denied", "team-d"), ("owner", "team-a")):
        assert names(user, "/user") == [user]
        assert names(user, "/group") == [group]
        assert api.server.call("GET", "/user/root", api.tokens[user]).status_code == 404
        assert api.server.call("GET", "/group/super", api.tokens[user]).status_code == 404
    assert len(names("mgmt", "/user")) == len(names("root", "/user")) == 9
    assert len(names("mgmt", "/group")) == 9


EIGHT_WRITES = [
    ("POST", "/upstream/app-a/node", {"hostname": "10.0.0.7:8080"}),
    ("PUT", "/upstream/app-a/node/10.0.0.7:8080", {"weight": 3}),
    ("PATCH", "/upstream/app-a/node/10.0.0.7:8080", {"force_status": "down"}),
    ("PUT", "/upstream/app-a/acl/team-b", {"rule": "READ"}),
    ("PUT", "/upstream/app-a/check/http", None),
    ("PUT", f"/node/{LB_A}/app-c", None),
    ("DELETE", f"/node/{LB_A}/app-c", None),
    ("DELETE", "/user/reader/team-b", None),
]


def test_every_write_returns_the_store_revision(fresh_api: Api) -> None:
    token = fresh_api.tokens["root"]
    assert fresh_api.server.call("PUT", "/user/reader/team-b", token).status_code == 200
    for method, path, body in EIGHT_WRITES:
        r = fresh_api.server.call(method, path, token, body)
        assert r.status_code < 300, (method, path, r.text)
        assert r.headers.get("X-Store-Revision") == str(fresh_api.store.revision()), (method, path)


def test_writes_are_audited_and_requests_logged(fresh_api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="obreconcile.api")
    r = fresh_api.server.call("PATCH", "/upstream/app-a/node/10.0.0.1:8080", fresh_api.tokens["owner"], {"weight": 5})
    assert r.status_code == 200
    revision = r.headers["X-Store-Revision"]
    audit = [m.getMessage() for m in caplog.records if m.name == "obreconcile.api.audit"]
    assert audit == [f"owner: put Upstream/app-a, revision {revision}"]
    access = [m.getMessage() for m in caplog.records if m.name == "obreconcile.api.access"]
    assert any("PATCH /upstream/app-a/node/10.0.0.1:8080 200" in line and "owner" in line for line in access), access
    assert fresh_api.tokens["owner"] not in caplog.text
    caplog.clear()
    fresh_api.server.call("GET", "/upstream/\u2028x%0a", fresh_api.tokens["owner"])
    line = next(m.getMessage() for m in caplog.records if m.name == "obreconcile.api.access")
    assert "\u2028" not in line and "\n" not in line and " 404 " in line


def test_the_server_header_names_no_version(api: Api) -> None:
    for r in (api.server.call("GET", "/openapi.json"), api.server.call("GET", "/status")):
        server = r.headers.get("Server", "")
        assert "aiohttp" not in server and "Python" not in server and server == "obreconcile"


@pytest.mark.parametrize(
    ("weak", "why"), [("a", "at least 8"), ("1234567", "at least 8"), ("Password1", "most common"), (7, "a string")]
)
def test_a_password_is_long_and_uncommon(api: Api, weak: Any, why: str) -> None:
    before = bodies(api.store)
    body = {"name": "nb", "password": weak, "groups": ["team-a"]}
    answer = assert_refused(api, api.server.call("POST", "/user", api.tokens["root"], body), 400, before)
    assert answer["detail"][0]["field"] == "password" and why in answer["detail"][0]["message"]
    own = {"password": weak, "old_password": password("reader")}
    assert_refused(api, api.server.call("PATCH", "/user/reader", api.tokens["reader"], own), 400, before)
    assert_refused(api, api.server.call("PATCH", "/user/reader", api.tokens["root"], {"password": weak}), 400, before)


WRONG_TYPES = [5, None, [["x"]], {"a": [1]}]  # with "x" in the template: every JSON type


def test_a_field_of_any_type_is_never_a_server_error(fresh_api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each field of a valid body of every write (the matrix's), given each wrong JSON type."""
    monkeypatch.setattr("reconciler.api.users.hash_password", FAST_HASHER.hash)  # OWASP's minimum: quick
    token = fresh_api.tokens["root"]
    for (method, template), bodies_ in TEMPLATES.items():
        route = next(r for r in ALL_ROUTES if (r.method, r.path) == (method, template))
        for body in bodies_[:1]:
            for field in sorted(set(body) | set(BODY_FIELDS[(method, template)])):
                for wrong in WRONG_TYPES:
                    before = fresh_api.store.snapshot()
                    r = fresh_api.server.call(method, path_of(route), token, {**body, field: wrong})
                    assert r.status_code < 500, (method, template, field, wrong, r.text[:200])
                    if r.status_code >= 400:
                        assert bodies(fresh_api.store) == {k: o.body for k, o in before.objects.items()}
                    else:
                        restore(fresh_api.store, before)
                        relogin(fresh_api)
