"""The Jinja2 environment nginx configuration is rendered in.

StrictUndefined (a missing variable is an error), no autoescaping (this is not HTML),
``trim_blocks``/``lstrip_blocks`` and ``keep_trailing_newline`` (templates read like the
files they make), and the finaliser of :mod:`reconciler.render.finaliser` on every printed value.

Templates are looked up in a user's directory first (``--templates DIR``), then in the
shipped ``templates/``; the shipped ones are also reachable as ``obreconcile/<name>`` so that
a user's template can ``{% extends "obreconcile/http_upstream.conf.j2" %}`` and override
only the blocks it needs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

from reconciler.errors import RenderError
from reconciler.render.finaliser import refuse_unsafe
from reconciler.resources import template_dir


class TemplateEnvironment(jinja2.Environment):
    """Jinja2's environment, reading ``a.b`` of a dict as its key ``b`` first.

    The render context is plain dicts; Jinja2 tries ``getattr`` first, which raises (and
    costs) for every value printed: reading the key first halves the time of a large render.
    """

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)


Templates = str | Path | Mapping[str, str] | None
"""A user's templates: a directory, or name -> source (the store's ``TemplateSet``), or none."""


def read_templates(directory: str | Path) -> dict[str, str]:
    """Every ``*.j2`` file under ``directory``: name (relative, with ``/``) -> source."""
    root = Path(directory)
    if not root.is_dir():
        raise RenderError(f"template directory {str(directory)!r} does not exist")
    try:
        return {
            p.relative_to(root).as_posix(): p.read_text(encoding="utf-8")
            for p in sorted(root.rglob("*.j2"))
            if p.is_file()
        }
    except (OSError, UnicodeDecodeError) as e:
        raise RenderError(f"template directory {str(directory)!r}: {e}") from e


def make_environment(templates: Templates = None) -> jinja2.Environment:
    """The environment: a user's templates (if any) in front of the shipped ones."""
    loaders: list[jinja2.BaseLoader] = []
    if isinstance(templates, Mapping):
        loaders.append(jinja2.DictLoader(dict(templates)))
    elif templates is not None:
        if not Path(templates).is_dir():
            raise RenderError(f"template directory {str(templates)!r} does not exist")
        loaders.append(jinja2.FileSystemLoader(str(templates)))
    shipped = jinja2.FileSystemLoader(str(template_dir()))
    loaders += [shipped, jinja2.PrefixLoader({"obreconcile": shipped})]
    return TemplateEnvironment(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=refuse_unsafe,
        auto_reload=False,
    )


def templates_digest(environment: jinja2.Environment) -> str:
    """A digest of every template the environment sees (a user's before the shipped ones)."""
    assert environment.loader is not None
    digest = hashlib.sha256()
    for name in sorted(environment.list_templates(extensions=["j2"])):
        source = environment.loader.get_source(environment, name)[0]
        digest.update(f"{name}\0{source}\0".encode())
    return digest.hexdigest()
