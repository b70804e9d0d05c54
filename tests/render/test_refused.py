"""A render failure of one upstream never stops the others (issue 14): the upstream is refused
on the access node, reported with its field and value, and its files are kept as they are
live; the rest of the access node renders as if it were fine."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from reconciler.errors import RenderError
from reconciler.manifest.model import DesiredState, HttpProxy
from reconciler.render.renderer import DEFAULT_FILE, RenderedAccessNode, Renderer, render
from reconciler.resolve import StaticResolver
from tests.render.desired import access_node, refusal, state_of, upstream
from tests.services.templates import JOINED_NAMES

NO_DNS = StaticResolver({})

# A user's template a real user could write: the upstream's server names in one comment. The
# finaliser refuses the joined value ('a b' holds a space) of an upstream with two names.


def templates(tmp_path: Path, **files: str) -> Path:
    directory = tmp_path / "templates"
    directory.mkdir(exist_ok=True)
    for name, text in files.items():
        (directory / f"{name}.conf.j2").write_text(text)
    return directory


def fleet(*upstreams: dict[str, Any]) -> DesiredState:
    names = [u["name"] for u in upstreams]
    return state_of([*upstreams, access_node("lb1", *names), access_node("lb2", *names), access_node("lb3", "web")])


def web() -> dict[str, Any]:
    return upstream("web", "10.0.0.1:80", listen={"server_names": ["web.example.com"]})


def two_names() -> dict[str, Any]:
    return upstream("api", "10.0.0.2:80", listen={"server_names": ["api.example.com", "api.example.org"]})


def test_a_user_template_refusing_one_upstream_leaves_the_others_rendered(tmp_path: Path) -> None:
    state = fleet(web(), two_names(), upstream("pg", "10.0.1.1:5432", listen={"protocol": "tcp", "port": 5432}))
    out = render(state, resolver=NO_DNS, templates=templates(tmp_path, http_upstream=JOINED_NAMES))
    for node in ("lb1", "lb2"):  # refused on every access node serving it, the same way
        refused = refusal(out, node)
        assert (refused.upstream, refused.paths) == ("api", ("http/api.conf",))
        assert refused.value == "'api.example.com api.example.org'"
        assert refused.message.startswith("template http_upstream.conf.j2: refusing value 'api.example.com api")
        assert "upstream api: " in str(refused) and "kept as it is live: http/api.conf" in str(refused)
        assert sorted(out[node].files) == [DEFAULT_FILE, "http/web.conf", "stream/pg.conf"]
    # the others are the files they would be without it
    without = render(
        fleet(web(), upstream("pg", "10.0.1.1:5432", listen={"protocol": "tcp", "port": 5432})),
        resolver=NO_DNS,
        templates=templates(tmp_path, http_upstream=JOINED_NAMES),
    )
    for path in ("http/web.conf", "stream/pg.conf"):
        assert out["lb1"].files[path] == without["lb1"].files[path]
    assert "server_name api.example.com" not in out["lb1"].files[DEFAULT_FILE]
    assert out["lb3"] == without["lb3"]  # a node not serving it: untouched, same revision


def test_an_upstream_refused_by_the_renderer_itself_is_cached_across_access_nodes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = fleet(web(), two_names())
    broken = dataclasses.replace(state.upstreams["api"], proxy=HttpProxy(connect_timeout="5s; include /etc/passwd"))
    state = dataclasses.replace(state, upstreams={**state.upstreams, "api": broken})
    renderer = Renderer(resolver=NO_DNS)
    calls = []
    prepare = renderer._prepare

    def counted(*args: Any) -> Any:
        calls.append(args[0].name)
        return prepare(*args)

    monkeypatch.setattr(renderer, "_prepare", counted)
    prepared: dict[str, Any] = {}
    nodes = [renderer.render_access_node(state, state.access_nodes[n], None, prepared).settle() for n in ("lb1", "lb2")]
    assert calls.count("api") == 1
    for node in nodes:
        (refused,) = node.refused
        assert (refused.upstream, refused.field) == ("api", "upstream.proxy.connect_timeout")
        assert refused.value == "'5s; include /etc/passwd'" and "/etc/passwd" not in "".join(node.files.values())


def test_the_revision_is_deterministic_and_does_not_depend_on_the_error_s_words(tmp_path: Path) -> None:
    directory = templates(tmp_path, http_upstream=JOINED_NAMES)
    first = render(fleet(web(), two_names()), resolver=NO_DNS, templates=directory)["lb1"]
    again = render(fleet(web(), two_names()), resolver=NO_DNS, templates=directory)["lb1"]
    assert first == again
    other_names = upstream("api", "10.0.0.2:80", listen={"server_names": ["x.example.com", "y.example.com"]})
    other_error = render(fleet(web(), other_names), resolver=NO_DNS, templates=directory)["lb1"]
    assert other_error.refused[0].message != first.refused[0].message
    assert other_error.revision == first.revision  # nothing the node gets differs: no reload for a new error
    fixed = upstream("api", "10.0.0.2:80", listen={"server_names": ["api.example.com"]})
    rendered = render(fleet(web(), fixed), resolver=NO_DNS, templates=directory)["lb1"]
    assert not rendered.refused and "http/api.conf" in rendered.files and rendered.revision != first.revision
    absent = render(fleet(web()), resolver=NO_DNS, templates=directory)["lb1"]
    assert absent.revision != first.revision  # not serving it is another revision than keeping its file


def shared(*, api_path: str = "/api/") -> list[dict[str, Any]]:
    """www at / and api under /api/ share example.test; each also has a name of its own."""
    return [
        upstream("www", "10.0.0.1", listen={"server_names": ["example.test", "www.example.test"]}),
        upstream("api", "10.0.0.2", listen={"server_names": ["example.test", "api.example.test"], "path": api_path}),
    ]


def test_a_refused_upstream_keeps_the_file_of_the_name_it_shares(tmp_path: Path) -> None:
    docs = shared()
    fine = render(state_of([*docs, access_node("lb", "www", "api")]), resolver=NO_DNS)["lb"]
    assert "http/_host.example.test.conf" in fine.files
    raising = templates(
        tmp_path,
        http_upstream='{% extends "obreconcile/http_upstream.conf.j2" %}'
        '{% block server_extra %}{% if upstream.name == "api" %}{{ 1 // 0 }}{% endif %}{% endblock %}',
    )
    out = render(state_of([*docs, access_node("lb", "www", "api")]), resolver=NO_DNS, templates=raising)
    refused = refusal(out)
    assert (
        refused.upstream == "api"
        and refused.message == "template http_upstream.conf.j2: integer division or modulo by zero"
    )
    assert refused.paths == ("http/_host.example.test.conf", "http/api.conf")
    www = out["lb"].files["http/www.conf"]
    # www keeps serving only its own name: example.test stays in the kept shared file, never in two
    assert "server_name www.example.test;" in www and "example.test;" not in www.replace("www.example.test", "")


def test_a_shared_name_whose_file_fails_is_kept_and_reported_on_each_upstream_sharing_it(tmp_path: Path) -> None:
    raising = templates(tmp_path, http_host="{{ nope }}")
    out = render(state_of([*shared(), access_node("lb", "www", "api")]), resolver=NO_DNS, templates=raising)["lb"]
    assert [(r.upstream, r.paths) for r in out.refused] == [
        ("api", ("http/_host.example.test.conf",)),
        ("www", ("http/_host.example.test.conf",)),
    ]
    assert all(r.message == "template http_host.conf.j2: 'nope' is undefined" for r in out.refused)
    assert sorted(out.files) == [DEFAULT_FILE, "http/api.conf", "http/www.conf"]  # their own files: rendered


def test_the_default_server_keeps_what_a_kept_file_may_need(tmp_path: Path) -> None:
    long_name = "a" * 60 + ".example.com"  # needs server_names_hash_bucket_size
    docs = [
        web(),
        upstream("long", "10.0.0.3", listen={"server_names": [long_name, "b.example.com"]}),
    ]
    out = render(
        state_of([*docs, access_node("lb", "web", "long")]),
        resolver=NO_DNS,
        templates=templates(tmp_path, http_upstream=JOINED_NAMES),
    )
    assert refusal(out).upstream == "long"
    default = out["lb"].files[DEFAULT_FILE]
    assert "server_names_hash_bucket_size 128;" in default  # its names are still counted
    assert "map $http_upgrade $ob_connection_upgrade" in default  # its kept file may use websockets


def test_failures_of_the_access_node_itself_still_fail_its_render(tmp_path: Path) -> None:
    state = fleet(web())
    with pytest.raises(RenderError, match=r"access node lb1: template http_default\.conf\.j2: 'nope' is undefined"):
        render(state, resolver=NO_DNS, templates=templates(tmp_path, http_default="{{ nope }}"))


def test_nothing_refused_renders_exactly_as_before() -> None:
    out: dict[str, RenderedAccessNode] = render(fleet(web(), two_names()), resolver=NO_DNS)
    assert all(not node.refused and not node.kept for node in out.values())
