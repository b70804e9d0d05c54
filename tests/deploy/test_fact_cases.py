"""The fact parsers as data, pyinfra's way: ``facts/<fact>/<case>.json`` holds the command (for
the default access node), one recorded output and the fact parsed from it."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from reconciler.deploy.facts import (
    fact_commands,
    parse_digests,
    parse_link,
    parse_marker,
    parse_nginx_version,
    parse_probe_tool,
    parse_served,
    parse_size,
)
from reconciler.deploy.operator import parse_record
from reconciler.manifest.model import AccessNode, Connection
from reconciler.transport.base import CommandResult

FACTS = Path(__file__).parent / "facts"
NODE = AccessNode("lb1", "ops", Connection("local"))


def _marker(result: CommandResult) -> dict[str, Any]:
    marker, problem = parse_marker(result)
    return {"marker": asdict(marker) if marker else None, "problem": problem}


def _operator(result: CommandResult) -> dict[str, Any] | None:
    record = parse_record(result.text)
    return json.loads(record.to_json()) if record else None


PARSERS: dict[str, Callable[[CommandResult], Any]] = {
    "nginx": parse_nginx_version,
    "link": parse_link,
    "files": parse_digests,
    "marker": _marker,
    "errlog": parse_size,
    "probe": parse_probe_tool,
    "served": parse_served,
    "operator": _operator,
}
CASES = sorted(FACTS.glob("*/*.json"))


def test_every_fact_has_cases_and_a_parser() -> None:
    assert {p.name for p in FACTS.iterdir()} == set(PARSERS) == set(fact_commands(NODE))
    assert all(len(list((FACTS / fact).glob("*.json"))) >= 3 for fact in PARSERS)


@pytest.mark.parametrize("case", CASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_fact_case(case: Path) -> None:
    fact, data = case.parent.name, json.loads(case.read_text())
    assert fact_commands(NODE)[fact] == data["command"]
    output = data["output"]
    result = CommandResult(output["exit_code"], output["stdout"].encode(), output["stderr"].encode())
    parsed = PARSERS[fact](result)
    if fact == "marker":  # the reason a marker cannot be read ends with the JSON parser's own words
        assert parsed["problem"].startswith(data["fact"]["problem"]) and bool(parsed["problem"]) == bool(
            data["fact"]["problem"]
        )
        assert parsed["marker"] == data["fact"]["marker"]
    else:
        assert parsed == data["fact"]
