"""No body of up to 64 KiB of JSON-like bytes yields a 5xx or a traceback, on any route, with any
token or none; every refusal is JSON ``{"error", "detail"}`` and leaves the store as it was.

The bodies: JSON values with the fields of the schemas as keys (so handlers get past the first
checks), leaves that are hostile (lone surrogates, numbers of thousands of digits, NaN,
nesting thousands deep), sometimes cut or with a byte changed. A few hundred examples, each
with a deadline: the whole test stays within about a minute on a loaded machine.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from reconciler.api.app import ALL_ROUTES
from reconciler.api.openapi import openapi_document
from reconciler.api.routes import Route
from reconciler.manifest.schemas import schemas
from tests.api.conftest import Api
from tests.api.server import bodies, restore
from tests.api.test_matrix import CASES, relogin
from tests.api.world import password, path_of, route_matches, send


class Raw(bytes):
    """Bytes put into a body as they are (what json.dumps cannot or will not write)."""


def _fields(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = set(node.get("properties", {})) if isinstance(node.get("properties"), dict) else set()
        return found.union(*(_fields(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_fields(v) for v in node))
    return set()


FIELDS = sorted(_fields(list(schemas().values())) | {"password", "old_password", "user_name", "token", "rule"})
NAMES = ["app-a", "app-b", "team-a", "team-w", "chk-a", "http", "10.0.0.1:8080", "lb-a.example:8080", "ROOT", "SUPER"]

hostile_leaf = st.one_of(
    st.builds(lambda n: Raw(b"9" * n), st.integers(30, 6000)),
    st.builds(lambda n: Raw(b"[" * n + b"]" * n), st.integers(60, 20_000)),
    st.builds(lambda n: Raw(b'{"a":' * n + b"1" + b"}" * n), st.integers(60, 5000)),
    st.sampled_from([Raw(b"NaN"), Raw(b"-Infinity"), Raw(b"1e999"), Raw(b'"\\ud800"'), Raw(b'"a\\udfffb"')]),
    st.sampled_from([Raw(b'"\xed\xa0\x80"'), Raw(b'"\xff"'), Raw(b'"\xc0\xaf"'), Raw(b"\xef\xbb\xbf")]),
)
leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(NAMES),
    hostile_leaf,
)
values = st.recursive(
    leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=10)), children, max_size=6),
    ),
    max_leaves=30,
)
objects = st.dictionaries(st.sampled_from(FIELDS), values, max_size=8)


WRITES = [r for r in ALL_ROUTES if r.method != "GET"]
# A valid body of each route (the matrix's), so that one field changed gets past the others.
TEMPLATES = {
    (r.method, r.path): [dict(body) for m, p, body, _ in CASES if m == r.method and route_matches(r.path, p) and body]
    for r in WRITES
}
TEMPLATES[("POST", "/auth")] = [{"user_name": "owner", "password": password("owner")}]


def _body_fields(route: Route) -> list[str]:
    """The fields of a route's body schema (OpenAPI components, $refs followed)."""
    components = openapi_document(ALL_ROUTES)["components"]["schemas"]
    schema: Any = components.get(route.body or "", {})
    while "$ref" in schema:
        *_, name = schema["$ref"].removeprefix("#/components/schemas/").split("/")
        schema = components.get(name) or components["Upstream"]["$defs"].get(name, {})
    return sorted(schema.get("properties", {}))


BODY_FIELDS = {(r.method, r.path): _body_fields(r) for r in WRITES}


@st.composite
def route_and_object(draw: st.DrawFn) -> tuple[Route, Any]:
    """A route and its body: a valid one with fields changed, or any JSON-like value."""
    route = draw(st.sampled_from(WRITES))
    templates = TEMPLATES[(route.method, route.path)]
    if not templates or draw(st.booleans()):
        return route, draw(st.one_of(objects, values))
    body = dict(draw(st.sampled_from(templates)))
    keys = BODY_FIELDS[(route.method, route.path)] or FIELDS
    for _ in range(draw(st.integers(1, 3))):
        body[draw(st.sampled_from(keys))] = draw(values)
    return route, body


def encode(value: Any, ascii_only: bool) -> bytes:
    if isinstance(value, Raw):
        return bytes(value)
    if isinstance(value, dict):
        items = (encode(str(k), ascii_only) + b":" + encode(v, ascii_only) for k, v in value.items())
        return b"{" + b",".join(items) + b"}"
    if isinstance(value, list):
        return b"[" + b",".join(encode(v, ascii_only) for v in value) + b"]"
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@st.composite
def route_and_bytes(draw: st.DrawFn) -> tuple[Route, bytes]:
    route, value = draw(route_and_object())
    data = encode(value, draw(st.booleans()))
    mutation = draw(st.sampled_from(["none", "none", "cut", "byte"]))
    if mutation == "cut" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif mutation == "byte" and data:
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1 :]
    return route, data[: 64 << 10]


@settings(
    max_examples=400,
    deadline=timedelta(seconds=10),  # one request; generous for a loaded machine
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
    phases=[Phase.generate],
)
@given(request=route_and_bytes(), user=st.sampled_from([None, "root", "root", "owner", "writer", "bad"]))
def test_no_body_yields_a_server_error(fresh_api: Api, request: tuple[Route, bytes], user: str | None) -> None:
    route, data = request
    before = fresh_api.store.snapshot()
    r = send(fresh_api, route.method, path_of(route), data, user)
    assert r.status_code < 500, (route.method, route.path, data[:200], r.text[:300])
    assert "Traceback" not in r.text
    if r.status_code >= 400:
        assert set(r.json()) == {"error", "detail"}
        assert bodies(fresh_api.store) == {k: o.body for k, o in before.objects.items()}, "refused, yet changed"
    else:
        restore(fresh_api.store, before)
        relogin(fresh_api)


@pytest.mark.parametrize("route", WRITES, ids=[f"{r.method} {r.path}" for r in WRITES])
def test_a_64_kib_body_of_brackets_is_refused_quickly(api: Api, route: Any) -> None:
    data = b"[" * (32 << 10) + b"]" * (32 << 10)
    r = send(api, route.method, path_of(route), data, None if route.public else "root")
    assert r.status_code in (400, 403, 404, 409) or (r.status_code < 300 and not route.body), r.text[:300]
    assert r.elapsed.total_seconds() < 5
