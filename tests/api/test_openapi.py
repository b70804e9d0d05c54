"""/openapi.json documents exactly the served routes; schemathesis finds no 5xx or schema break."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from reconciler.manifest.schemas import SCHEMA_FILES, schemas
from tests.api.conftest import Api
from tests.api.world import password


def test_every_served_route_is_documented_and_every_documented_route_served(api: Api) -> None:
    document = api.server.call("GET", "/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    documented = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    served = {
        (r.method, r.resource.canonical)
        for r in api.server.runner.app.router.routes()
        if r.method != "HEAD" and r.resource is not None
    }
    assert served == documented
    files = schemas()
    for kind, file in SCHEMA_FILES.items():
        component = document["components"]["schemas"][kind]
        assert component["x-schema-file"] == f"schemas/{file}"
        assert component["properties"].keys() == files[file]["properties"].keys()
        assert component["required"] == files[file]["required"]
    refs = set(re.findall(r'"\$ref": "([^"]+)"', str(document).replace("'", '"')))
    assert all(ref.startswith("#/components/schemas/") for ref in refs)


@pytest.fixture(scope="module")
def schema(api: Api) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(api.server.url + "/openapi.json")


# Beyond the schema: values a JSON parser may choke on, put in place of one field of a generated
# body (or the whole body): the classes of issue 15. Each must be a 400 (401 without a token).
HOSTILE_VALUES = [
    b'"\\ud800"',  # a lone surrogate
    b'"a\\udfff"',
    b"9" * 5000,  # past Python's 4,300-digit limit
    b"-" + b"7" * 40,
    b"[" * 10_000 + b"]" * 10_000,  # nesting
    b"NaN",
    b"1e999",
    b'"\xed\xa0\x80"',  # a surrogate encoded in UTF-8: not UTF-8
]


def hostile_body(body: Any, value: bytes, field: int) -> bytes:
    """``body`` (a generated one) with its ``field``-th key's value, or the whole, replaced by ``value``."""
    if not isinstance(body, dict) or not body:
        return value
    key = sorted(body)[field % len(body)]
    rest = json.dumps({k: v for k, v in body.items() if k != key})
    return b'{"' + str(key).encode() + b'": ' + value + (b", " + rest[1:].encode() if len(rest) > 2 else b"}")


def test_schemathesis(api: Api, schema: schemathesis.BaseSchema) -> None:
    """Positive and negative cases of every operation as SUPER, and hostile bodies with and without a token."""
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

    checks = [not_a_server_error, status_code_conformance, response_schema_conformance]
    failures: list[str] = []
    statuses: dict[GenerationMode, list[int]] = {mode: [] for mode in GenerationMode}
    hostile: list[int] = []
    root = {"X-Auth-Token": api.tokens["root"]}

    def own_token() -> dict[str, str]:
        # DELETE /auth without a token in its body revokes the caller's own: a generated case
        # would revoke the root token every later case uses (seen as a rare failure).
        r = api.server.http.post(
            api.server.url + "/auth", json={"user_name": "root", "password": password("root")}, timeout=60
        )
        return {"X-Auth-Token": r.json()["token"]}

    def validate(case: schemathesis.Case, response: Any, what: str) -> None:  # type: ignore[type-arg]
        try:
            case.validate_response(response, checks=checks)
        except (AssertionError, ExceptionGroup) as e:  # collect all, report at once
            failures.append(f"{what} {case.operation.method.upper()} {case.operation.path}: {str(e)[:400]}")

    def exercise(op: Any, mode: GenerationMode) -> None:
        @settings(
            max_examples=2,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            phases=[Phase.generate],
        )
        @given(
            case=op.as_strategy(generation_mode=mode), value=st.sampled_from(HOSTILE_VALUES), field=st.integers(0, 99)
        )
        def run(case: schemathesis.Case, value: bytes, field: int) -> None:  # type: ignore[type-arg]
            headers_of = own_token() if (op.method.lower(), op.path) == ("delete", "/auth") else root
            response = case.call(headers=headers_of)
            statuses[mode].append(response.status_code)
            validate(case, response, str(mode))
            if mode != GenerationMode.POSITIVE or "requestBody" not in op.definition.raw:
                return
            data = hostile_body(case.body, value, field)
            for headers in (headers_of, {}):
                url = api.server.url + case.formatted_path
                sent = {**headers, "Content-Type": "application/json"}
                r = api.server.http.request(case.method, url, data=data, headers=sent, timeout=60)
                hostile.append(r.status_code)
                if r.status_code != (400 if headers or (op.path == "/auth" and op.method == "post") else 401):
                    failures.append(f"hostile {case.method} {case.formatted_path} {data[:80]!r}: {r.text[:300]}")
                assert "Traceback" not in r.text
                validate(case, r, "hostile")

        try:
            run()
        except Unsatisfiable:  # nothing of this operation can break the schema (no body, no parameter)
            assert mode == GenerationMode.NEGATIVE, op.path

    operations = [o.ok() for o in schema.get_all_operations()]  # type: ignore[union-attr]  # our own document
    for op in operations:
        for mode in GenerationMode:
            exercise(op, mode)
    assert not failures, "\n".join(failures[:20])
    for mode, seen in statuses.items():
        assert len(seen) >= len(operations) // 2, mode
        assert max(seen) < 500
    assert any(200 <= s < 300 for s in statuses[GenerationMode.POSITIVE])
    assert any(s == 400 for s in statuses[GenerationMode.NEGATIVE])
    bodied = sum("requestBody" in op.definition.raw for op in operations)
    assert hostile.count(400) >= bodied and hostile.count(401) >= bodied // 2
