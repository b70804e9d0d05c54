"""Compiled templates are kept between runs (Jinja2's bytecode cache), keyed by this package's
code as well as each template's name and source, and a cache that cannot be written is no error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import pytest

from reconciler.render import templates
from reconciler.render.renderer import TEMPLATES, Renderer
from reconciler.render.templates import BytecodeCache, bytecode_cache, engine_digest, make_environment
from reconciler.resolve import StaticResolver
from tests.render.desired import access_node, state_of, upstream


@pytest.fixture
def compiles(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the templates Jinja2 compiled from source."""
    names: list[str] = []
    compile_ = jinja2.Environment.compile

    def counting(self: jinja2.Environment, source: Any, name: str | None = None, *args: Any, **kwargs: Any) -> Any:
        names.append(str(name))
        return compile_(self, source, name, *args, **kwargs)

    monkeypatch.setattr(jinja2.Environment, "compile", counting)
    return names


def environment(cache: BytecodeCache, templates: dict[str, str] | None = None) -> jinja2.Environment:
    env = make_environment(templates)
    env.bytecode_cache = cache
    return env


def test_a_second_run_loads_the_compiled_templates(tmp_path: Path, compiles: list[str]) -> None:
    cache = BytecodeCache(str(tmp_path))
    for name in TEMPLATES.values():
        environment(cache).get_template(name)
    assert sorted(compiles) == sorted(TEMPLATES.values())
    compiles.clear()
    for name in TEMPLATES.values():  # a new environment, as in the next run's process
        environment(cache).get_template(name)
    assert compiles == []
    assert all(p.name.startswith(f"__obreconcile_{engine_digest()[:16]}-") for p in tmp_path.iterdir())


def test_a_changed_template_is_compiled_again(tmp_path: Path, compiles: list[str]) -> None:
    cache = BytecodeCache(str(tmp_path))
    assert environment(cache, {"a.j2": "one {{ x }}"}).get_template("a.j2").render(x=1) == "one 1"
    assert environment(cache, {"a.j2": "two {{ x }}"}).get_template("a.j2").render(x=1) == "two 1"
    assert compiles == ["a.j2", "a.j2"]


def test_an_unwritable_cache_compiles_as_without_one(tmp_path: Path, compiles: list[str]) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    env = environment(BytecodeCache(str(blocked)), {"a.j2": "{{ x }}"})
    assert env.get_template("a.j2").render(x="ok") == "ok"
    assert compiles == ["a.j2"]


def test_files_are_the_same_with_and_without_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    assert make_environment().bytecode_cache is bytecode_cache() is not None
    state = state_of(
        [
            upstream("web", "10.0.0.1:80", listen={"server_names": ["web.example.com"]}),
            upstream("pg", "10.0.1.1:5432", listen={"protocol": "tcp", "port": 5432}),
            access_node("lb:8080", "web", "pg"),
        ]
    )
    runs = [dict(Renderer(resolver=StaticResolver({})).render(state)["lb:8080"].files) for _ in range(2)]
    monkeypatch.setattr(templates, "bytecode_cache", lambda: None)
    renderer = Renderer(resolver=StaticResolver({}))
    assert renderer.environment.bytecode_cache is None
    assert runs == [dict(renderer.render(state)["lb:8080"].files)] * 2
