"""An upstream's body is rendered once for every access node whose template reads the same of it
(issue 18): nodes that differ only in their name and directory share it, and so do nodes on
other http ports when the template prints ``listen`` only as it is; every node's files are byte
for byte the files a render of that node alone gives."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import jinja2
import pytest

from reconciler.manifest.model import DesiredState
from reconciler.render.renderer import LISTEN_MARK, TEMPLATES, Prepared, RenderedAccessNode, Renderer
from reconciler.render.templates import attributes_read, make_environment, printed_verbatim
from reconciler.resolve import StaticResolver
from tests.render.desired import access_node, state_of, upstream

NO_DNS = StaticResolver({})


@pytest.fixture
def renders(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How many times each template was rendered (by its name)."""
    counted: Counter[str] = Counter()
    render = jinja2.Template.render

    def counting(self: jinja2.Template, *args: Any, **kwargs: Any) -> str:
        counted[str(self.name)] += 1
        return render(self, *args, **kwargs)

    monkeypatch.setattr(jinja2.Template, "render", counting)
    return counted


def upstreams() -> list[dict[str, Any]]:
    return [
        upstream("web", "10.0.0.1:80", listen={"server_names": ["web.example.com"]}),
        upstream("api", "10.0.0.2:80", listen={"server_names": ["api.example.com"]}, tls=tls("api")),
        upstream("app", "10.0.0.3:80", listen={"server_names": ["example.com"], "path": "/app/"}),
        upstream("root", "10.0.0.4:80", listen={"server_names": ["example.com"]}),
        upstream("pg", "10.0.1.1:5432", listen={"protocol": "tcp", "port": 5432}),
    ]


def tls(name: str) -> dict[str, Any]:
    return {"certificate": f"/etc/ssl/{name}.pem", "key": f"/etc/ssl/{name}.key"}


def fleet(*nodes: tuple[str, dict[str, Any]]) -> DesiredState:
    docs = upstreams()
    names = [d["name"] for d in docs]
    return state_of([*docs, *(access_node(name, *names, **fields) for name, fields in nodes)])


def together(state: DesiredState, templates: Path | None = None) -> dict[str, RenderedAccessNode]:
    """Every access node rendered with one renderer and one ``prepared``, as apply and serve do."""
    renderer = Renderer(templates, NO_DNS)
    prepared: Prepared = {}
    nodes = [renderer.render_access_node(state, node, None, prepared) for node in state.access_nodes.values()]
    return {node.name: node.settle() for node in nodes}


def alone(state: DesiredState, templates: Path | None = None) -> dict[str, dict[str, str]]:
    """Every access node rendered by a renderer of its own: nothing shared."""
    out = {}
    for node in state.access_nodes.values():
        rendered = Renderer(templates, NO_DNS).render_access_node(state, node).settle()
        out[node.name] = dict(rendered.files)
    return out


def body_renders(counted: Counter[str]) -> int:
    return sum(n for name, n in counted.items() if name.endswith(("upstream.conf.j2", "host.conf.j2")))


def test_nodes_that_differ_in_name_and_directory_render_each_body_once(renders: Counter[str]) -> None:
    state = fleet(
        ("lb1:8080", {}),
        ("lb2:8080", {"nginx": {"config_dir": "/etc/nginx/elsewhere"}}),
        ("lb3:8080", {}),
    )
    out = together(state)
    # each upstream's file and the file of the name app and root share by path, once for the three
    files = {p for p in out["lb1:8080"].files if p != "http/_default.conf"}
    assert files == {
        "http/web.conf",
        "http/api.conf",
        "http/app.conf",
        "http/root.conf",
        "http/_host.example.com.conf",
        "stream/pg.conf",
    }
    assert body_renders(renders) == len(files)
    assert renders["header.conf.j2"] == 3  # the header names the node: one per node
    expected = alone(state)
    for name, node in out.items():
        assert dict(node.files) == expected[name]
        assert f"# access node: {name}\n" in node.files["http/web.conf"]


def test_what_the_template_reads_of_the_node_keeps_bodies_apart(renders: Counter[str]) -> None:
    state = fleet(
        ("lb1:8080", {}),
        ("lb2:8080", {}),  # the same as lb1 but its name: the same bodies
        ("lb3:9090", {}),  # another http port: the shipped templates print the listen value as it is
        ("lb4:8080", {"https_port": 8443}),  # the tls upstream's redirect names the port
        ("lb5:8080", {"http2": False}),
    )
    out = together(state)
    # each http file (web, api, app, root, the shared name's) once for lb1, lb2 and lb3, once for
    # each of the others: the templates read the https settings (what http2 and https_port are is
    # read whether the upstream has tls or not: the reads are the template's, not one render's);
    # the tcp file reads nothing of the node: once
    assert body_renders(renders) == 5 * 3 + 1
    expected = alone(state)
    for name, node in out.items():
        assert dict(node.files) == expected[name]
        assert all(LISTEN_MARK not in text for text in node.files.values())
    assert "listen 9090;" in out["lb3:9090"].files["http/web.conf"]
    assert "listen 8080;" in out["lb1:8080"].files["http/web.conf"]
    assert "listen 9090;" in out["lb3:9090"].files["http/_host.example.com.conf"]
    assert "listen 8443 ssl http2;" in out["lb4:8080"].files["http/api.conf"]
    assert "listen 443 ssl;" in out["lb5:8080"].files["http/api.conf"]


def user_templates(tmp_path: Path, text: str) -> Path:
    directory = tmp_path / "templates"
    directory.mkdir()
    (directory / "http_upstream.conf.j2").write_text(text)
    return directory


@pytest.mark.parametrize(
    "text",
    [
        '{% extends "obreconcile/http_upstream.conf.j2" %}{% block server_extra %}\n    # on {{ access_node.name }}\n{% endblock %}',
        '{% extends "obreconcile/http_upstream.conf.j2" %}{% block server_extra %}\n    # {% for key, value in access_node.items() %} {{ value }}{% endfor %}\n{% endblock %}',
        '{% set node = access_node %}{% include "obreconcile/http_upstream.conf.j2" %}# {{ node["config_dir"] }}\n',
    ],
    ids=["an attribute", "the whole node", "through a name"],
)
def test_a_user_template_that_reads_the_node_renders_per_node(tmp_path: Path, text: str) -> None:
    state = fleet(("lb1:8080", {}), ("lb2:8080", {"nginx": {"config_dir": "/etc/nginx/elsewhere"}}))
    templates = user_templates(tmp_path, text)
    out = together(state, templates)
    expected = alone(state, templates)
    for name, node in out.items():
        assert dict(node.files) == expected[name]
    assert out["lb1:8080"].files["http/web.conf"] != out["lb2:8080"].files["http/web.conf"]


@pytest.mark.parametrize("included", [None, "{% if %}"], ids=["a missing template", "a template that does not parse"])
def test_a_template_that_includes_a_broken_one_refuses_the_upstream_on_each_node(
    tmp_path: Path, included: str | None
) -> None:
    templates = user_templates(tmp_path, '{% include "part.j2" %}\n')
    if included is not None:
        (templates / "part.j2").write_text(included)
    state = fleet(("lb1:8080", {}), ("lb2:8080", {}))
    for name, node in together(state, templates).items():
        assert sorted(r.upstream for r in node.refused) == ["api", "app", "root", "web"], name
        where = "part.j2" if included is None else "part.j2:1: Expected an expression"
        assert all(r.message.startswith(f"template http_upstream.conf.j2: {where}") for r in node.refused)
        assert dict(node.files) == alone(state, templates)[name]


def test_what_a_template_reads_of_a_variable() -> None:
    templates = {
        "attribute": "{{ access_node.name }}{% if access_node.http2 is defined %}{{ access_node['port'] }}{% endif %}",
        "includes": '{% include "attribute.j2" %}{% import "macro.j2" as m %}{{ m.f() }}',
        "macro": "{% macro f() %}{{ access_node.config_dir }}{% endmacro %}",
        "other": "{{ upstream.name }}",
        # the whole node, or what is read not known before it runs
        "alone": "{{ access_node }}",
        "filter": "{{ access_node | tojson }}",
        "method": "{{ access_node.get('name') }}",
        "items": "{% for k, v in access_node.items() %}{% endfor %}",
        "computed": "{{ access_node[key] }}",
        "assigned": "{% set access_node = {} %}",
        "loop": "{% for access_node in [1] %}{% endfor %}",
        "dynamic": "{% include name %}",
        "private": "{{ self._TemplateReference__context }}",
        "missing": '{% include "nowhere.j2" %}',
    }
    environment = make_environment({f"{name}.j2": text for name, text in templates.items()})
    read = {name: attributes_read(environment, f"{name}.j2", "access_node") for name in templates}
    assert read == {
        "attribute": frozenset({"name", "http2", "port"}),
        "includes": frozenset({"name", "http2", "port", "config_dir"}),
        "macro": frozenset({"config_dir"}),
        "other": frozenset(),
        **{name: None for name in list(templates)[4:]},
    }


@pytest.mark.parametrize(
    "text",
    [
        '{% extends "obreconcile/http_upstream.conf.j2" %}{% block server_extra %}\n    # {{ listen | replace(":", " ") }}\n{% endblock %}',
        '{% if listen == "9090" %}# nine\n{% endif %}{% include "obreconcile/http_upstream.conf.j2" %}',
        '{% filter trim %}{% include "obreconcile/http_upstream.conf.j2" %}{% endfilter %}\n',
    ],
    ids=["through a filter", "in a test", "in a filter block"],
)
def test_a_user_template_that_takes_the_listen_value_renders_per_port(
    tmp_path: Path, renders: Counter[str], text: str
) -> None:
    state = fleet(("lb1:8080", {}), ("lb2:9090", {}), ("lb3:8080", {}))
    templates = user_templates(tmp_path, text)
    out = together(state, templates)
    # the four http upstreams' files once for each port (lb1 and lb3 share theirs), not once
    assert renders["http_upstream.conf.j2"] == 4 * 2
    expected = alone(state, templates)
    for name, node in out.items():
        assert dict(node.files) == expected[name]
        assert all(LISTEN_MARK not in t for t in node.files.values())
    assert out["lb1:8080"].files["http/web.conf"] != out["lb2:9090"].files["http/web.conf"]


def test_where_a_template_prints_a_variable_only_as_it_is() -> None:
    templates = {
        "printed": "listen {{ listen }};{% if x %}{% for y in z %} {{ listen }}{% endfor %}{% endif %}",
        "absent": "{{ other }}",
        "includes": '{% include "printed.j2" %}',
        "child": '{% extends "base.j2" %}{% block b %}{{ super() }} {{ listen }}{% endblock %}',
        "base": "{% block b %}{{ listen }}{% endblock %}{{ self.b() }}",
        # taken by an expression, or output a template can change once printed
        "filter": "{{ listen | upper }}",
        "test": "{% if listen %}{% endif %}",
        "concat": "{{ listen ~ ';' }}",
        "assigned": "{% set listen = 'x' %}{{ listen }}",
        "loop": "{% for listen in [1] %}{{ listen }}{% endfor %}",
        "block-set": "{% set x %}{{ listen }}{% endset %}{{ x | upper }}",
        "filter-block": "{% filter upper %}{{ listen }}{% endfilter %}",
        "macro": "{% macro m() %}{{ listen }}{% endmacro %}{{ m() | upper }}",
        "super": '{% extends "base.j2" %}{% block b %}{{ super() | upper }}{% endblock %}',
        "self": '{% extends "base.j2" %}{% block c %}{{ self.b() | trim }}{% endblock %}',
        "included": '{% include "filter.j2" %}',
        "dynamic": "{% include name %}",
        "missing": '{% include "nowhere.j2" %}',
    }
    environment = make_environment({f"{name}.j2": text for name, text in templates.items()})
    verbatim = {name: printed_verbatim(environment, f"{name}.j2", "listen") for name in templates}
    assert verbatim == {name: i < 5 for i, name in enumerate(templates)}


def test_the_shipped_templates_print_the_listen_value_as_it_is() -> None:
    environment = Renderer(None, NO_DNS).environment
    assert {key: printed_verbatim(environment, name, "listen") for key, name in TEMPLATES.items()} == {
        key: True for key in TEMPLATES
    }
