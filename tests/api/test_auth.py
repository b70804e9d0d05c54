"""Tokens against a real server: expiry, renewal, logout, revocation, disabled users, brute force."""

from __future__ import annotations

from pathlib import Path

from reconciler.api.app import create_app
from reconciler.api.auth import bootstrap_admin
from reconciler.api.view import StoreView
from reconciler.store import open_store
from reconciler.store.tokens import token_hash
from tests.api.conftest import Api
from tests.api.server import RunningServer, seed
from tests.api.world import password, world


def status(api: Api, token: str | None) -> int:
    return api.server.call("GET", "/status", token).status_code


def test_login_token_is_256_bits_and_stored_only_as_a_hash(fresh_api: Api) -> None:
    r = fresh_api.server.call("POST", "/auth", body={"user_name": "owner", "password": password("owner")})
    assert r.status_code == 200
    token = r.json()["token"]
    assert len(token) >= 43 and r.json()["token_expiration"].endswith("Z")
    records = fresh_api.store.tokens()
    assert token_hash(token) in {t.token_hash for t in records}
    assert all(token not in repr(t) for t in records)
    db = (fresh_api.store.path).read_bytes()  # type: ignore[attr-defined]
    assert token.encode() not in db


def test_expiry_and_renewal(fresh_api: Api) -> None:
    token = fresh_api.tokens["owner"]
    fresh_api.clock.now += 3000
    r = fresh_api.server.call("POST", "/auth", body={"token": token})
    assert r.status_code == 200 and r.json()["token"] == token
    fresh_api.clock.now += 3000  # past the first expiry, within the renewed one
    assert status(fresh_api, token) == 200
    fresh_api.clock.now += 3601
    assert status(fresh_api, token) == 401
    assert fresh_api.server.call("POST", "/auth", body={"token": token}).status_code == 401


def test_logout_and_revocation_rules(fresh_api: Api) -> None:
    t = fresh_api.tokens
    assert fresh_api.server.call("DELETE", "/auth", t["reader"], {"token": t["owner"]}).status_code == 403
    assert fresh_api.server.call("DELETE", "/auth", t["owner"], {"token": t["owner"]}).status_code == 204
    assert status(fresh_api, t["owner"]) == 401
    assert fresh_api.server.call("DELETE", "/auth", t["mgmt"], {"token": t["reader"]}).status_code == 204
    assert status(fresh_api, t["reader"]) == 401
    assert fresh_api.server.call("DELETE", "/auth", t["ro"]).status_code == 204  # no body: this token
    assert status(fresh_api, t["ro"]) == 401


def test_token_is_never_taken_from_the_url(fresh_api: Api) -> None:
    token = fresh_api.tokens["root"]
    for query in (f"?token={token}", f"?X-Auth-Token={token}", f"?auth_token={token}"):
        assert fresh_api.server.call("GET", "/status" + query).status_code == 401


def test_disabled_user_cannot_log_in_and_loses_its_tokens(fresh_api: Api) -> None:
    t = fresh_api.tokens
    r = fresh_api.server.call("PATCH", "/user/reader", t["mgmt"], {"enabled": False})
    assert r.status_code == 200, r.text
    assert status(fresh_api, t["reader"]) == 401
    assert not [x for x in fresh_api.store.tokens() if x.user == "reader"]
    r = fresh_api.server.call("POST", "/auth", body={"user_name": "reader", "password": password("reader")})
    assert r.status_code == 401


def test_password_change_needs_the_old_one(fresh_api: Api) -> None:
    t = fresh_api.tokens
    new = {"password": "a-new-password"}
    assert fresh_api.server.call("PATCH", "/user/owner", t["owner"], new).status_code == 403
    assert (
        fresh_api.server.call("PATCH", "/user/owner", t["owner"], {**new, "old_password": "wrong"}).status_code == 403
    )
    r = fresh_api.server.call("PATCH", "/user/owner", t["owner"], {**new, "old_password": password("owner")})
    assert r.status_code == 200 and "password_hash" not in r.json()
    assert fresh_api.server.login("owner", "a-new-password")
    assert fresh_api.server.call("PATCH", "/user/reader", t["mgmt"], {"password": "reset-by-mgmt"}).status_code == 200
    assert fresh_api.server.login("reader", "reset-by-mgmt")
    assert fresh_api.server.call("PATCH", "/user/root", t["mgmt"], {"password": "take-over-root"}).status_code == 403


def test_brute_force_is_answered_with_429(fresh_api: Api) -> None:
    """Limits here: 3 failures per user, 6 per address, per 60 s (conftest)."""

    def login(user: str, pw: str) -> int:
        return fresh_api.server.call("POST", "/auth", body={"user_name": user, "password": pw}).status_code

    unknown = [login("nobody", "guess") for _ in range(3)]
    wrong = [login("owner", "guess") for _ in range(3)]
    assert unknown == wrong == [401, 401, 401]  # same answer for an unknown user and a wrong password
    assert login("owner", password("owner")) == 429  # even the right password, while limited
    assert login("reader", "guess") == 429  # the address is limited too (6 failures)
    fresh_api.clock.now += 61
    assert login("owner", password("owner")) == 200


def test_bootstrap_admin(fresh_api: Api) -> None:
    pw = bootstrap_admin(fresh_api.store, "first-admin")
    token = fresh_api.server.login("first-admin", pw)
    r = fresh_api.server.call("POST", "/group", token, {"name": "g-x", "global_permissions": ["GLOBAL_RO"]})
    assert r.status_code == 201
    again = bootstrap_admin(fresh_api.store, "first-admin")  # a reset: the old password and tokens go
    assert status(fresh_api, token) == 401
    assert fresh_api.server.login("first-admin", again)


def test_a_user_disabled_in_the_manifests_cannot_use_or_renew_its_token(fresh_api: Api) -> None:
    """Disabled by a sync of the manifests (not through the API): its tokens still exist, unusable."""
    from reconciler.store import Put
    from tests.api.server import GIT

    token = fresh_api.tokens["reader"]
    body = dict(fresh_api.store.get("User", "reader").body)  # type: ignore[union-attr]
    fresh_api.store.commit([Put("User", "reader", {**body, "enabled": False}, GIT)])
    assert status(fresh_api, token) == 401
    assert fresh_api.server.call("POST", "/auth", body={"token": token}).status_code == 401


def test_metrics_token_and_public_openapi(api: Api) -> None:
    assert api.server.call("GET", "/metrics").status_code == 401
    get = api.server.http.get
    assert get(api.server.url + "/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    r = get(api.server.url + "/metrics", headers={"Authorization": "Bearer m-token"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    assert api.server.call("GET", "/openapi.json").status_code == 200


def test_with_cache_seconds_a_controller_reads_its_own_writes(tmp_path: Path) -> None:
    """cache_seconds trusts a token and the revision for a while, but never hides this server's writes."""
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    seed(store, world())
    server = RunningServer(create_app(store, StoreView(store), cache_seconds=30))
    try:
        owner, mgmt = server.login("owner", password("owner")), server.login("mgmt", password("mgmt"))
        path = "/upstream/app-a/node/10.0.0.1:8080"
        assert server.call("PATCH", path, owner, {"weight": 7}).status_code == 200
        assert server.call("GET", path, owner).json()["weight"] == 7
        assert server.call("PATCH", "/user/owner", mgmt, {"enabled": False}).status_code == 200
        assert server.call("GET", path, owner).status_code == 401
        assert server.call("DELETE", "/auth", mgmt).status_code == 204
        assert server.call("GET", "/status", mgmt).status_code == 401
    finally:
        server.stop()
        store.close()
