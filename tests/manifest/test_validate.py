"""Validation: examples, the model built from them, every problem at once, and no traceback."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.errors import ManifestError
from reconciler.manifest.load import Document, load_bytes
from reconciler.manifest.model import KINDS, build_object, to_manifest
from reconciler.manifest.schemas import fast_validator_for, validator_for
from reconciler.manifest.validate import load_desired_state, validate

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


@pytest.mark.parametrize("example", ["quickstart", "fleet"])
def test_examples_are_valid(example: str) -> None:
    state = load_desired_state([EXAMPLES / example])
    assert state.upstreams and state.access_nodes and state.groups


def test_fleet_example_model_has_every_default_filled_in() -> None:
    state = load_desired_state([EXAMPLES / "fleet"])
    api = state.upstreams["api"]
    assert api.min_servers == 2 and api.checks == ("api-http",)
    assert api.listen.server_names == ("api.example.com", "api.internal.example.com")
    app2 = next(n for n in api.nodes if n.hostname == "app2.internal:8080")
    assert (app2.weight, app2.max_fails, app2.fail_timeout, app2.force_status, app2.failover) == (
        5,
        1,
        "10s",
        "normal",
        0,
    )
    assert api.source.file.endswith("team-api.yaml") and api.source.line == 13
    www = state.upstreams["www"]
    assert www.listen.protocol == "http" and www.listen.port is None
    assert [n.force_status for n in www.nodes] == ["normal", "normal", "up", "down"]  # 'd' is normalised
    assert state.upstreams["postgres"].listen.server_names == ()
    lb2 = state.access_nodes["lb2.example.com:80"]
    assert (lb2.connection.type, lb2.connection.host, lb2.connection.port) == ("ssh", "lb2.example.com", 22)
    assert lb2.nginx.config_dir == "/etc/nginx/openbalancer" and lb2.http_port == 80
    assert state.access_nodes["lb3.example.com:8080"].http_port == 8080
    assert state.users["carol"].groups == ("ops", "admins") and state.users["alice"].enabled


def test_quickstart_http_upstream_defaults_server_name_to_its_name(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(
        "apiVersion: openbalancer/v1\nkind: Group\nname: g\n---\n"
        "apiVersion: openbalancer/v1\nkind: Upstream\nname: shop\nowner: g\nnodes: [{hostname: a}]\n"
    )
    upstream = load_desired_state([tmp_path]).upstreams["shop"]
    assert upstream.listen.server_names == ("shop",)
    assert upstream.nodes[0].address == ("a", 80)


@pytest.mark.parametrize("example", ["quickstart", "fleet"])
def test_model_round_trips_through_manifest_form(example: str) -> None:
    state = load_desired_state([EXAMPLES / example])
    for kind in KINDS:
        for obj in state.of_kind(kind).values():
            document = to_manifest(kind, obj)
            assert fast_validator_for(kind).is_valid(document), document
            assert build_object(kind, document) == obj


def test_every_problem_is_reported_at_once_sorted_by_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(
        "apiVersion: openbalancer/v1\nkind: Upstream\nname: Bad\nowner: nobody\nnodes:\n"
        "  - {hostname: 'a;b', weight: 0}\n  - {hostname: ok, weight: x}\n"
    )
    (tmp_path / "a.yaml").write_text("apiVersion: openbalancer/v1\nkind: Group\nname: g\nextra: 1\n")
    with pytest.raises(ManifestError) as raised:
        load_desired_state([tmp_path])
    problems = raised.value.problems
    assert [(Path(p.file).name, p.line, p.field) for p in problems] == [
        ("a.yaml", 4, "extra"),
        ("b.yaml", 3, "name"),
        ("b.yaml", 4, "owner"),
        ("b.yaml", 6, "nodes[0].hostname"),
        ("b.yaml", 6, "nodes[0].weight"),
        ("b.yaml", 7, "nodes[1].weight"),
    ]


# Every manifest field whose value reaches nginx configuration or a command on an access node.
_BASE = """
apiVersion: openbalancer/v1
kind: Group
name: team
---
apiVersion: openbalancer/v1
kind: Upstream
name: web
owner: team
listen: {protocol: http, server_names: [web.example.com]}
nodes: [{hostname: "app1:8080", fail_timeout: 10s}]
---
apiVersion: openbalancer/v1
kind: Upstream
name: db
owner: team
listen: {protocol: tcp, port: 5432}
nodes: [{hostname: "db1:5432"}]
---
apiVersion: openbalancer/v1
kind: AccessNode
name: lb1.example.com:80
owner: team
listen_address: 127.0.0.1
upstreams: [web, db]
connection: {type: ssh, host: lb1.example.com, user: deploy, identity_file: ~/.ssh/id}
nginx: {config_dir: /etc/nginx/openbalancer, test_command: nginx -t, reload_command: nginx -s reload}
"""
_RENDERED_FIELDS = [
    (1, ("name",)),
    (1, ("listen", "server_names", 0)),
    (1, ("nodes", 0, "hostname")),
    (1, ("nodes", 0, "fail_timeout")),
    (2, ("name",)),
    (3, ("name",)),
    (3, ("listen_address",)),
    (3, ("connection", "host")),
    (3, ("connection", "user")),
    (3, ("connection", "identity_file")),
    (3, ("nginx", "config_dir")),
    (3, ("nginx", "test_command")),
    (3, ("nginx", "reload_command")),
]
_PAYLOADS = [
    "a; ssl_engine /tmp/x.so",
    "x}\nserver {",
    "a{b",
    "a}b",
    "a'b",
    'a"b',
    "a$b",
    "a#b",
    "a b",
    "a\nb",
    "a\tb",
    "web\n",
    "a`id`",
    "a\\b",
    "a\x00b",
]


def _documents(data: list[dict[str, Any]]) -> list[Document]:
    text = "\n---\n".join(yaml.safe_dump(d) for d in data)
    docs, problems = load_bytes("m.yaml", text.encode())
    assert problems == []
    return docs


def test_base_of_the_injection_matrix_is_valid() -> None:
    state, problems = validate(_documents(list(yaml.safe_load_all(_BASE))))
    assert problems == [] and state is not None


_INJECTIONS = [
    (index, path, payload)
    for index, path in _RENDERED_FIELDS
    for payload in _PAYLOADS
    # commands are command lines: spaces separate their words (shell metacharacters are refused)
    if not (payload == "a b" and path[-1] in ("test_command", "reload_command"))
]


@pytest.mark.parametrize(("index", "path", "payload"), _INJECTIONS, ids=repr)
def test_directive_smuggling_is_refused_in_every_field_that_reaches_nginx(
    index: int, path: tuple[Any, ...], payload: str
) -> None:
    data = list(yaml.safe_load_all(_BASE))
    target = data[index]
    for part in path[:-1]:
        target = target[part]
    original = target[path[-1]]
    # keep the field's shape (a name stays a name-like prefix) so that only the payload is wrong
    target[path[-1]] = (original if isinstance(original, str) else "x") + payload
    state, problems = validate(_documents(data))
    assert state is None
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    assert field in {p.field for p in problems}, [str(p) for p in problems]


_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False), st.text(max_size=20)
)
_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=25,
)
_keys = st.sampled_from(
    [
        "apiVersion",
        "kind",
        "name",
        "owner",
        "nodes",
        "listen",
        "checks",
        "acl",
        "upstreams",
        "groups",
        "password_hash",
        "connection",
        "nginx",
        "min_servers",
        "global_permissions",
        "base_check",
        "string",
    ]
)
_documents_strategy = st.dictionaries(_keys, _values, max_size=10).map(lambda d: {"apiVersion": "openbalancer/v1", **d})


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_documents_strategy, min_size=1, max_size=4), st.lists(st.sampled_from(KINDS), min_size=4, max_size=4))
def test_no_traceback_for_any_document(documents: list[dict[str, Any]], kinds: list[str]) -> None:
    for document, kind in zip(documents, kinds, strict=False):
        document.setdefault("kind", kind)
    docs = [Document("m.yaml", i, d, cast(yaml.Node, yaml.compose(yaml.safe_dump(d)))) for i, d in enumerate(documents)]
    state, problems = validate(docs)
    assert (state is None) == bool(problems)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_no_traceback_for_any_bytes(raw: bytes) -> None:
    docs, problems = load_bytes("m.yaml", raw)
    assert docs or problems
    assert all(p.line >= 1 and p.message for p in problems)
    if docs:
        state, more = validate(docs)
        assert (state is None) == bool(more)


def _mutations(document: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid document with one value somewhere replaced by something arbitrary."""
    paths: list[tuple[Any, ...]] = []

    def walk(value: Any, path: tuple[Any, ...]) -> None:
        paths.append(path)
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, (*path, k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, (*path, i))

    walk(document, ())

    def mutate(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
        result = copy.deepcopy(document)
        if not path:
            return result
        target = result
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value
        return result

    mutable = [p for p in paths[1:] if p[0] not in ("apiVersion", "kind")]  # the envelope is checked apart
    return st.builds(mutate, st.sampled_from(mutable), _values)


_FLEET = [d.data for d in load_bytes("fleet", (EXAMPLES / "fleet" / "team-api.yaml").read_bytes())[0]] + [
    d.data for d in load_bytes("fleet", (EXAMPLES / "fleet" / "access-nodes.yaml").read_bytes())[0]
]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(range(len(_FLEET))).flatmap(lambda i: _mutations(_FLEET[i])))
def test_the_fast_and_the_explaining_validators_agree(document: dict[str, Any]) -> None:
    kind = document["kind"]
    fast = fast_validator_for(kind).is_valid(document)
    explained = list(validator_for(kind).iter_errors(document))
    assert fast == (not explained), (document, [e.message for e in explained])


_OCTETS = st.one_of(
    st.integers(0, 300).map(str), st.sampled_from(["", "00", "01", "007", "0255", "256", "１", "٣", "²"])
)


@given(st.lists(_OCTETS, min_size=4, max_size=4))
def test_a_dotted_quad_is_judged_as_ipaddress_judges_it(octets: list[str]) -> None:
    import ipaddress

    from reconciler.manifest.rules import _ip_literal_problem

    host = ".".join(octets)
    try:
        ipaddress.ip_address(host)
        valid = True
    except ValueError:
        valid = False
    looks_v4 = host.replace(".", "").isdigit()
    assert _ip_literal_problem(host) == ("" if valid or not looks_v4 else f"{host!r} is not a valid IP address")
