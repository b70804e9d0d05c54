"""The objects the API tests share: eight users, one per kind of right, and what they own.

Users (password = name * 2 + "-pw"): owner (team-a, owns app-a, chk-a, lb-a), writer (ACL WRITE
on app-a), reader (ACL READ), denied (ACL DENY, with GLOBAL_RO), ro (GLOBAL_RO), rw (GLOBAL_RW),
mgmt (MANAGEMENT), root (SUPER). team-b owns app-b (no ACL) and chk-b.
"""

from __future__ import annotations

import re
from functools import cache
from typing import TYPE_CHECKING, Any

from tests.api.server import FAST_HASHER, doc

if TYPE_CHECKING:
    import requests

    from reconciler.api.routes import Route
    from tests.api.conftest import Api

USERS = {
    "owner": "team-a",
    "writer": "team-w",
    "reader": "team-r",
    "denied": "team-d",
    "ro": "ro",
    "rw": "rw",
    "mgmt": "mgmt",
    "root": "super",
}
FLAGS = {"team-d": ["GLOBAL_RO"], "ro": ["GLOBAL_RO"], "rw": ["GLOBAL_RW"], "mgmt": ["MANAGEMENT"], "super": ["SUPER"]}
LB_A = "lb-a.example:8080"


def password(user: str) -> str:
    return f"{user}{user}-pw"


@cache
def hashes() -> dict[str, str]:
    return {u: FAST_HASHER.hash(password(u)) for u in [*USERS, "team-b-user"]}


def world() -> list[dict[str, Any]]:
    groups = [doc("Group", g, global_permissions=FLAGS.get(g, [])) for g in [*USERS.values(), "team-b"]]
    users = [doc("User", u, password_hash=hashes()[u], groups=[g]) for u, g in USERS.items()]
    users.append(doc("User", "team-b-user", password_hash=hashes()["team-b-user"], groups=["team-b"]))
    acl = [
        {"group_name": "team-w", "rule": "WRITE"},
        {"group_name": "team-r", "rule": "READ"},
        {"group_name": "team-d", "rule": "DENY"},
    ]
    nodes = [{"hostname": "10.0.0.1:8080"}, {"hostname": "10.0.0.2:8080"}]
    return [
        *groups,
        *users,
        doc("Check", "chk-a", owner="team-a", base_check="http", string="GET /health 200"),
        doc("Check", "chk-b", owner="team-b", base_check="tcp"),
        doc("Upstream", "app-a", owner="team-a", checks=["chk-a"], nodes=nodes, acl=acl),
        doc("Upstream", "app-b", owner="team-b", checks=["chk-b"], nodes=[{"hostname": "10.0.1.1:80"}]),
        doc("Upstream", "app-c", owner="team-a"),
        doc(
            "AccessNode",
            LB_A,
            owner="team-a",
            upstreams=["app-a"],
            connection={"type": "local"},
            nginx={"config_dir": "/tmp/ob-test/conf"},
        ),
    ]


# The placeholders of the route templates, filled with objects of the world.
PLACES = {
    "/upstream/{name}": "/upstream/app-a",
    "{hostname}": "10.0.0.1:8080",
    "{check}": "chk-a",
    "{group}": "team-r",
    "/check/{name}": "/check/chk-a",
    "/management/node/{host_name}": "/management/node/ctl1",
    "/node/{host_name}": f"/node/{LB_A}",
    "{upstream}": "app-a",
    "/user/{name}": "/user/reader",
    "/group/{name}": "/group/team-b",
}


def path_of(route: Route) -> str:
    """The route's path naming objects of the world."""
    path = route.path
    for template, value in PLACES.items():
        path = path.replace(template, value)
    return path


def route_matches(template: str, path: str) -> bool:
    """Whether ``path`` is one of the route template's (aiohttp's form: /upstream/{name})."""
    return re.fullmatch(re.sub(r"\\{\w+\\}", "[^/]+", re.escape(template)), path) is not None


def send(api: Api, method: str, path: str, data: bytes, user: str | None = "root") -> requests.Response:
    """``data`` as it is (a JSON body), with the token of ``user`` (none: None, a bad one: unknown)."""
    headers = {"Content-Type": "application/json"}
    if user is not None:
        headers["X-Auth-Token"] = api.tokens.get(user, "not-a-token")
    return api.server.http.request(method, api.server.url + path, data=data, headers=headers, timeout=60)
