"""Input digests: a file is rendered when read, and not at all when its recorded inputs match."""

from __future__ import annotations

import hashlib
from typing import Any

from reconciler.render.renderer import DEFAULT_FILE, RenderedAccessNode, RenderedFiles, Renderer
from reconciler.resolve import StaticResolver
from tests.render.desired import access_node, state_of, upstream

NO_DNS = StaticResolver({})


def _state(weight: int = 1, address: str = "127.0.0.1") -> Any:
    return state_of(
        [
            upstream(
                "api", {"hostname": "10.0.0.1:8080", "weight": weight}, listen={"server_names": ["api.example.com"]}
            ),
            upstream("web", "10.0.0.2:8080", listen={"server_names": ["web.example.com"]}),
            upstream("pg", "10.0.1.1:5432", listen={"protocol": "tcp", "port": 5432}),
            access_node("lb1", "api", "web", "pg", listen_address=address),
            access_node("lb2", "api", "web"),
        ]
    )


def _node(state: Any, name: str = "lb1", templates: Any = None) -> RenderedAccessNode:
    return Renderer(templates, NO_DNS).render_access_node(state, state.access_nodes[name])


def test_settling_renders_what_the_live_release_was_not_rendered_from() -> None:
    node = _node(_state())
    assert node.digests is None and set(node.inputs) == {"http/api.conf", "http/web.conf", "stream/pg.conf"}
    everything = node.settle()  # nothing known of a live release: every file rendered
    files = everything.files
    assert isinstance(files, RenderedFiles)
    assert list(files) == [DEFAULT_FILE, "http/api.conf", "http/web.conf", "stream/pg.conf"]
    assert all(files.rendered(p) for p in files) and "upstream ob_api" in files["http/api.conf"]
    assert everything.digests == {p: hashlib.sha256(files[p].encode()).hexdigest() for p in files}
    assert everything.settle() is everything

    recorded = {path: "recorded-" + path for path in node.inputs}  # not any file's real digest
    inputs = dict(node.inputs, **{"http/web.conf": "other"})
    settled = _node(_state()).settle(inputs, recorded)
    files = settled.files
    assert isinstance(files, RenderedFiles) and settled.digests is not None
    assert [p for p in files if files.rendered(p)] == [DEFAULT_FILE, "http/web.conf"]  # inputs differ: rendered
    assert settled.digests["http/api.conf"] == "recorded-http/api.conf"  # the recorded digest stands for it
    assert settled.digests["http/web.conf"] == everything.digests["http/web.conf"]  # type: ignore[index]
    assert files["http/api.conf"] == everything.files["http/api.conf"]  # rendered when read (to upload it)


def test_an_input_digest_changes_exactly_when_what_its_file_is_made_of_changes() -> None:
    base = _node(_state())
    assert _node(_state()).inputs == base.inputs and _node(_state()).revision == base.revision
    weight = _node(_state(weight=3))
    assert {p for p in base.inputs if weight.inputs[p] != base.inputs[p]} == {"http/api.conf"}
    assert weight.revision != base.revision
    port = _node(_state(address="127.0.0.2"))  # the node's own settings: every file's context
    assert all(port.inputs[p] != base.inputs[p] for p in base.inputs)
    other = _node(_state(), "lb2")  # another node: another context (its name is in every file's header)
    assert other.inputs["http/api.conf"] != base.inputs["http/api.conf"]
    templates = {"http_upstream.conf.j2": '{% extends "obreconcile/http_upstream.conf.j2" %}\n'}
    custom = _node(_state(), templates=templates)
    assert all(custom.inputs[p] != base.inputs[p] for p in base.inputs)
    assert custom.settle().files["http/api.conf"] == base.settle().files["http/api.conf"]  # same text, other inputs
