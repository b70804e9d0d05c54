"""/openapi.json documents exactly the served routes; schemathesis finds no 5xx or schema break."""

from __future__ import annotations

import re

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from reconciler.manifest.schemas import SCHEMA_FILES, schemas
from tests.api.conftest import Api


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


def test_schemathesis(api: Api, schema: schemathesis.BaseSchema) -> None:
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

    failures: list[str] = []
    statuses: list[int] = []
    for operation in schema.get_all_operations():
        op = operation.ok()  # type: ignore[union-attr]  # our own document: every operation parses

        @settings(
            max_examples=2,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            phases=[Phase.generate],
        )
        @given(case=op.as_strategy())
        def run(case: schemathesis.Case) -> None:  # type: ignore[type-arg]
            response = case.call(headers={"X-Auth-Token": api.tokens["root"]})
            statuses.append(response.status_code)
            try:
                case.validate_response(
                    response, checks=[not_a_server_error, status_code_conformance, response_schema_conformance]
                )
            except (AssertionError, ExceptionGroup) as e:  # collect all, report at once
                failures.append(f"{case.operation.method.upper()} {case.operation.path}: {str(e)[:400]}")

        run()
    assert not failures, "\n".join(failures[:20])
    assert len(statuses) >= len(list(schema.get_all_operations()))
    assert any(200 <= s < 300 for s in statuses) and max(statuses) < 500
