"""One rule for numbers in manifests and API bodies (issue 14): 2.0 is the integer 2; 2.5 is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.errors import ManifestError
from reconciler.manifest.validate import load_desired_state

UPSTREAM = """\
apiVersion: openbalancer/v1
kind: Group
name: ops
---
apiVersion: openbalancer/v1
kind: Upstream
name: web
owner: ops
nodes:
  - {{hostname: "app1:8080", weight: {weight}, max_fails: 3.0, failover: 0.0}}
"""


def test_an_integral_float_is_the_integer(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(UPSTREAM.format(weight="2.0"))
    backend = load_desired_state([tmp_path]).upstreams["web"].nodes[0]
    assert (backend.weight, backend.max_fails, backend.failover) == (2, 3, 0)
    assert {type(backend.weight), type(backend.max_fails), type(backend.failover)} == {int}


@pytest.mark.parametrize("weight", ["2.5", ".inf", ".nan"])
def test_any_other_number_is_refused_where_an_integer_is_wanted(tmp_path: Path, weight: str) -> None:
    (tmp_path / "m.yaml").write_text(UPSTREAM.format(weight=weight))
    with pytest.raises(ManifestError) as refused:
        load_desired_state([tmp_path])
    assert [p.field for p in refused.value.problems] == ["nodes[0].weight"]
