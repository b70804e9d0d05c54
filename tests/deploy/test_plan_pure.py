"""plan_node and the fact parsers as pure functions: recorded outputs and facts in, changes out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reconciler.deploy.apply import NodeResult, NodeStatus
from reconciler.deploy.facts import Facts, Marker, MarkerState, fact_commands, parse_facts
from reconciler.deploy.layout import NodeLayout
from reconciler.deploy.plan import Change, NodePlan, Op, Refusal, StoreRef, diff_models, plan_node, sha256
from reconciler.errors import Step
from reconciler.manifest.model import AccessNode, Connection
from reconciler.render.renderer import RefusedUpstream, RenderedAccessNode
from reconciler.transport import CommandResult

CASES = sorted((Path(__file__).parent / "plan_cases").glob("*.json"))
STORE = StoreRef("store-a", 7)


def _facts(data: dict[str, Any]) -> Facts:
    marker = data.get("marker")
    return Facts(
        access_node="lb1",
        nginx_version=data.get("nginx_version", "1.22.1"),
        link=data.get("link", "/etc/nginx/openbalancer.releases/r1"),
        files={p: sha256(t) for p, t in data.get("live", {}).items()},
        marker=None
        if marker is None
        else Marker(
            revision=marker["revision"],
            store_id=marker.get("store_id", "store-a"),
            store_revision=marker.get("store_revision", 5),
            digests={p: sha256(t) for p, t in marker["files"].items()},
            state=marker.get("state", "deployed"),
        ),
        model=data.get("model"),
    )


def _plan(data: dict[str, Any]) -> NodePlan:
    refused = tuple(RefusedUpstream(r["upstream"], "refused", paths=tuple(r["paths"])) for r in data.get("refused", []))
    rendered = RenderedAccessNode("lb1", data["desired_revision"], data["desired"], refused=refused)
    return plan_node(
        rendered,
        _facts(data["facts"]),
        data.get("model", {}),
        StoreRef(**data.get("store", STORE.__dict__)),
        data.get("force", False),
    )


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_plan_cases(case: Path) -> None:
    data = json.loads(case.read_text())
    plan = _plan(data)
    expect = data["expect"]
    assert [[str(f.op), f.path, f.drift] for f in plan.files] == expect["files"]
    assert list(plan.drift) == expect.get("drift", [])
    assert plan.reload_only.startswith(expect.get("reload_only", "")) and bool(plan.reload_only) == bool(
        expect.get("reload_only")
    )
    assert plan.refused.startswith(expect.get("refused", "")) and bool(plan.refused) == bool(expect.get("refused"))
    assert plan.changed == expect["changed"]
    assert dict(plan.kept) == {p: sha256(t) for p, t in expect.get("kept", {}).items()}
    assert [r.upstream for r in plan.refused_upstreams] == [r["upstream"] for r in data.get("refused", [])]


def test_there_are_enough_plan_cases() -> None:
    assert len(CASES) >= 8


@pytest.mark.parametrize(
    ("case", "refusal"),
    [
        ("fenced-older-revision", Refusal.FENCED),
        ("nginx-missing", Refusal.NO_NGINX),
        ("fenced-but-forced", None),
        ("first-deploy", None),
    ],
)
def test_a_refusal_is_a_typed_value_the_result_carries(case: str, refusal: Refusal | None) -> None:
    plan = _plan(json.loads((Path(__file__).parent / "plan_cases" / f"{case}.json").read_text()))
    assert plan.refusal is refusal and bool(plan.refused) == (refusal is not None)
    refused = NodeResult("lb1", NodeStatus.FAILED, plan, Step.PLAN, plan.refused)
    assert refused.refusal is refusal
    assert NodeResult("lb1", NodeStatus.FAILED, plan, Step.CONNECT, "unreachable").refusal is None


def test_object_changes_key_backends_by_hostname() -> None:
    old = {
        "upstreams": {
            "api": {"name": "api", "nodes": [{"hostname": "a:80", "weight": 1}, {"hostname": "b:80", "weight": 1}]}
        }
    }
    new = {
        "upstreams": {
            "api": {
                "name": "api",
                "nodes": [{"hostname": "b:80", "weight": 1}, {"hostname": "a:80", "weight": 5}, {"hostname": "c:80"}],
            },
            "web": {"name": "web"},
        }
    }
    assert diff_models(old, new) == [
        Change(Op.CHANGE, "Upstream/api", "nodes[a:80].weight", 1, 5),
        Change(Op.ADD, "Upstream/api", "nodes[c:80]", None, {"hostname": "c:80"}),
        Change(Op.ADD, "Upstream/web"),
    ]
    assert diff_models(new, new) == []
    assert diff_models(new, {"upstreams": {}}) == [Change(Op.REMOVE, "Upstream/api"), Change(Op.REMOVE, "Upstream/web")]


def _result(stdout: str = "", stderr: str = "", code: int = 0) -> CommandResult:
    return CommandResult(code, stdout.encode(), stderr.encode())


def test_fact_parsers_read_recorded_outputs() -> None:
    marker = Marker(
        "abc",
        "store-a",
        3,
        {"http/a.conf": "1" * 64},
        MarkerState.DEPLOYED,
        "ci@host",
        "2026-11-23T04:00:00+00:00",
        "r1",
    )
    facts = parse_facts(
        "lb1",
        {
            "nginx": _result(stdout="nginx version: nginx/1.22.1\n"),
            "link": _result(stdout="/etc/nginx/openbalancer.releases/r1\n"),
            "files": _result(stdout=f"{'a' * 64}  ./http/a.conf\n{'b' * 64}  ./stream/db.conf\n"),
            "marker": _result(stdout=marker.to_json().decode()),
            "errlog": _result(stdout="1234\n"),
            "probe": _result(stdout="/usr/bin/curl\n"),
        },
    )
    assert facts.nginx_version == "1.22.1"
    assert facts.link == "/etc/nginx/openbalancer.releases/r1"
    assert facts.files == {"http/a.conf": "a" * 64, "stream/db.conf": "b" * 64}
    assert facts.marker == marker
    assert facts.error_log_size == 1234
    assert facts.probe_tool == "curl"


@pytest.mark.parametrize(
    ("outputs", "nginx", "link", "marker_problem"),
    [
        (
            {"nginx": _result(stderr="sh: 1: nginx: not found", code=127), "link": _result(stdout="ABSENT\n")},
            None,
            None,
            "",
        ),
        (
            {"link": _result(stdout="DIRECTORY\n"), "marker": _result(stdout="{not json")},
            "1.22.1",
            "",
            "the marker cannot be read",
        ),
    ],
)
def test_fact_parsers_handle_missing_and_broken_facts(
    outputs: dict[str, CommandResult], nginx: str | None, link: str | None, marker_problem: str
) -> None:
    base = {
        "nginx": _result(stdout="nginx version: nginx/1.22.1"),
        "files": _result(),
        "marker": _result(),
        "errlog": _result(),
    }
    facts = parse_facts("lb1", {**base, **outputs})
    assert facts.nginx_version == nginx and facts.link == link and facts.files == {}
    assert facts.marker is None and facts.marker_problem.startswith(marker_problem)


def test_fact_commands_quote_paths_and_read_everything_in_one_batch() -> None:
    node = AccessNode("lb1", "ops", Connection("local"))
    commands = fact_commands(node)
    assert set(commands) == {"nginx", "link", "files", "marker", "errlog", "probe", "served", "operator"}
    layout = NodeLayout.of(node)
    assert f"cat -- {layout.marker}" in commands["marker"]
    assert layout.releases == "/etc/nginx/openbalancer.releases" and layout.lock == "/etc/nginx/openbalancer.lock"


def test_recorded_model_round_trips_compressed_and_a_broken_one_reads_as_empty() -> None:
    from reconciler.deploy.facts import decode_model, encode_model

    model = {"access_node": {"name": "lb1"}, "upstreams": {f"u{i}": {"name": f"u{i}", "nodes": []} for i in range(500)}}
    raw = encode_model(model)
    assert decode_model(raw) == model
    assert len(raw) < len(json.dumps(model)) / 5
    assert encode_model(model) == raw  # deterministic (no timestamp in the gzip header)
    assert decode_model(b"not gzip") == {}


def test_a_node_model_is_encoded_from_its_upstreams_shared_json_to_the_same_bytes() -> None:
    from reconciler.deploy.facts import decode_model, encode_model
    from reconciler.deploy.plan import ModelCache, node_model
    from tests.render.desired import access_node, state_of, upstream

    state = state_of(
        [
            upstream("b", {"hostname": "10.0.0.2:80", "weight": 2}, listen={"server_names": ["b.example.com"]}),
            upstream("a", "10.0.0.1:80", listen={"server_names": ["a.example.com"]}),
            access_node("lb1", "b", "a"),
            access_node("lb2", "a"),
            access_node("lb3", "a", "b"),
        ]
    )
    cache = ModelCache()
    models = [node_model(state, state.access_nodes[n], cache) for n in ("lb1", "lb2", "lb3")]
    for model in models:
        assert encode_model(model) == encode_model(json.loads(json.dumps(model)))  # a plain dict: the same bytes
        assert decode_model(encode_model(model)) == json.loads(json.dumps(model))
    assert set(cache.encoded) == {"a", "b"}  # each upstream encoded once for all nodes
    # the upstreams compressed once for each set of them: lb1 and lb3 serve the same
    assert set(cache.members) == {("a", "b"), ("a",)}
    assert encode_model(models[0]).endswith(cache.members["a", "b"])
    assert encode_model(models[0]) != encode_model(models[2])  # each node's own part


def test_objects_are_listed_only_when_the_recorded_model_was_read() -> None:
    rendered = RenderedAccessNode("lb1", "r2", {"http/a.conf": "new"})
    model = {"upstreams": {"a": {"name": "a"}}}
    facts = _facts({"live": {"http/a.conf": "old"}, "marker": {"revision": "r1", "files": {"http/a.conf": "old"}}})
    assert plan_node(rendered, facts, model, STORE).objects == ()  # apply does not read it
    read = Facts(**{**facts.__dict__, "model": {"upstreams": {}}})
    assert [c.object for c in plan_node(rendered, read, model, STORE).objects] == ["Upstream/a"]
