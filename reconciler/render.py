"""The desired model and backend selection → the exact files of every access node.

``render(state)`` answers, per access node, a mapping of relative path → file text for its
managed directory (``nginx.config_dir``), laid out as docs/render.md describes:

    http/_default.conf        default server of the access node's http port (+ revision)
    http/<upstream>.conf      one per http upstream: upstream ob_<name> + its server block
    stream/<upstream>.conf    one per tcp upstream: stream upstream ob_<name> + its server

Output is deterministic: the same model, health and resolver answers give byte-identical
files. Every file's header names the access node's revision (:func:`revision_of`), a digest
of everything its files are rendered from. Templates come from ``templates/`` (or a user's
directory in front of it); every value printed passes :func:`refuse_unsafe`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jinja2

from reconciler import __version__
from reconciler.errors import RenderError
from reconciler.finaliser import refuse_unsafe
from reconciler.health.select import Role, select
from reconciler.manifest.model import AccessNode, Backend, DesiredState, Upstream, duration_seconds
from reconciler.resolve import Resolver, SystemResolver, ip_literal
from reconciler.resources import template_dir

BLOCK_PREFIX = "ob_"
DEFAULT_FILE = "http/_default.conf"
TEMPLATES = {"http": "http_upstream.conf.j2", "tcp": "stream_upstream.conf.j2", "default": "http_default.conf.j2"}
DIRECTORIES = {"http": "http", "tcp": "stream"}

Health = Mapping[str, Mapping[str, bool]]


@dataclass(frozen=True)
class RenderedAccessNode:
    """The files of one access node's managed directory, and what rendering reported."""

    name: str
    revision: str
    files: Mapping[str, str]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class _PreparedUpstream:
    """An upstream's template context (None when it is not rendered), digest and warnings."""

    upstream: Upstream
    context: dict[str, Any] | None
    digest: str
    warnings: tuple[str, ...]


def make_environment(templates: str | Path | None = None) -> jinja2.Environment:
    """The Jinja2 environment: a user's ``templates`` directory (if any) in front of the shipped one.

    The shipped templates are also reachable as ``obreconcile/<name>``, so that a user's
    template of the same name can ``{% extends "obreconcile/<name>" %}`` and override blocks.
    """
    loaders: list[jinja2.BaseLoader] = []
    if templates is not None:
        if not Path(templates).is_dir():
            raise RenderError(f"template directory {str(templates)!r} does not exist")
        loaders.append(jinja2.FileSystemLoader(str(templates)))
    shipped = jinja2.FileSystemLoader(str(template_dir()))
    loaders += [shipped, jinja2.PrefixLoader({"obreconcile": shipped})]
    return jinja2.Environment(
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
    """A digest of every template the environment sees (the user's before the shipped ones)."""
    digest = hashlib.sha256()
    for name in sorted(environment.list_templates(extensions=["j2"])):
        assert environment.loader is not None
        source = environment.loader.get_source(environment, name)[0]
        digest.update(f"{name}\0{source}\0".encode())
    return digest.hexdigest()


def revision_of(node_context: Mapping[str, Any], upstream_digests: Iterable[tuple[str, str]], templates: str) -> str:
    """The revision of an access node: 16 hex digits of a sha256 over what its files are made of.

    ``node_context`` is the access node's template context, ``upstream_digests`` the (name,
    digest) of every upstream it renders, ``templates`` the digest of the template set.
    """
    document = {
        "version": __version__,
        "templates": templates,
        "access_node": node_context,
        "upstreams": sorted(upstream_digests),
    }
    return _digest(document)[:16]


def _digest(document: Any) -> str:
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def listen_value(address: str, port: int) -> str:
    """The argument of nginx's ``listen``: ``*`` means every address (``listen PORT``)."""
    if address in ("*", ""):
        return str(port)
    if ":" in address and not address.startswith("["):
        address = f"[{address}]"
    return f"{address}:{port}"


def server_address(host: str, port: int) -> str:
    """``host:port`` with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Renderer:
    """Renders access nodes with one template environment and one resolver."""

    def __init__(self, templates: str | Path | None = None, resolver: Resolver | None = None) -> None:
        self.environment = make_environment(templates)
        self.resolver: Resolver = resolver if resolver is not None else SystemResolver()
        try:
            self.templates_digest = templates_digest(self.environment)
            self._templates = {key: self.environment.get_template(name) for key, name in TEMPLATES.items()}
        except jinja2.TemplateError as e:
            raise RenderError(f"template {getattr(e, 'name', '') or ''}: {e}") from e

    def render(
        self, state: DesiredState, health: Health | None = None, limit: Iterable[str] | None = None
    ) -> dict[str, RenderedAccessNode]:
        """Every access node of ``state`` (only those named in ``limit`` when given), by name."""
        wanted = set(limit) if limit is not None else None
        if wanted is not None and (unknown := wanted - set(state.access_nodes)):
            raise RenderError(f"--limit names unknown access nodes: {', '.join(sorted(unknown))}")
        prepared: dict[str, _PreparedUpstream] = {}
        out = {}
        for name in sorted(state.access_nodes):
            if wanted is None or name in wanted:
                node = state.access_nodes[name]
                out[name] = self.render_access_node(state, node, health, prepared)
        return out

    def render_access_node(
        self,
        state: DesiredState,
        node: AccessNode,
        health: Health | None = None,
        prepared: dict[str, _PreparedUpstream] | None = None,
    ) -> RenderedAccessNode:
        """The files of one access node; ``prepared`` caches upstreams across access nodes."""
        prepared = {} if prepared is None else prepared
        upstreams = []
        for name in sorted(set(node.upstreams)):
            if name not in prepared:
                upstream = state.upstreams.get(name)
                if upstream is None:
                    raise RenderError(f"access node {node.name}: unknown upstream {name!r}", access_node=node.name)
                prepared[name] = self._prepare(upstream, (health or {}).get(name, {}))
            upstreams.append(prepared[name])
        node_context: dict[str, Any] = {
            "name": node.name,
            "http_port": node.http_port,
            "listen_address": node.listen_address,
            "config_dir": node.nginx.config_dir,
            "http_listen": listen_value(node.listen_address, node.http_port),
        }
        rendered = [p for p in upstreams if p.context is not None]
        revision = revision_of(node_context, [(p.upstream.name, p.digest) for p in rendered], self.templates_digest)
        base = {"version": __version__, "revision": revision, "access_node": node_context}
        files = {DEFAULT_FILE: self._render_file("default", node.name, {**base, "listen": node_context["http_listen"]})}
        for p in rendered:
            assert p.context is not None
            protocol = p.upstream.listen.protocol
            if protocol == "tcp":
                listen = listen_value(node.listen_address, p.upstream.listen.port or 0)
            else:
                listen = node_context["http_listen"]
            path = f"{DIRECTORIES[protocol]}/{p.upstream.name}.conf"
            files[path] = self._render_file(protocol, node.name, {**base, "listen": listen, "upstream": p.context})
        warnings = tuple(w for p in upstreams for w in p.warnings)
        return RenderedAccessNode(node.name, revision, dict(sorted(files.items())), warnings)

    def _render_file(self, key: str, node: str, context: dict[str, Any]) -> str:
        try:
            return self._templates[key].render(context)
        except RenderError as e:
            raise RenderError(f"access node {node}: {e}", access_node=node, field=e.field) from e
        except jinja2.TemplateError as e:
            raise RenderError(f"access node {node}: template {TEMPLATES[key]}: {e}", access_node=node) from e

    def _prepare(self, upstream: Upstream, health: Mapping[str, bool]) -> _PreparedUpstream:
        """Resolve, select and build the template context of one upstream (access-node independent)."""
        warnings: list[str] = []
        if not upstream.nodes:
            warnings.append(f"upstream {upstream.name}: has no backends, not rendered")
            return _PreparedUpstream(upstream, None, "", tuple(warnings))
        addresses: dict[str, tuple[str, ...]] = {}
        for backend in upstream.nodes:
            addresses[backend.hostname] = self._addresses(upstream, backend, warnings)
        left_out = sorted(h for h, a in addresses.items() if not a)
        resolvable = replace(upstream, nodes=tuple(b for b in upstream.nodes if addresses[b.hostname]))
        selection = select(resolvable, health)
        if selection.panic:
            warnings.append(
                f"upstream {upstream.name}: panic, no backend is eligible: every backend not forced down is enabled"
            )
        if not any(s.role is Role.ENABLED for s in selection.backends):
            warnings.append(f"upstream {upstream.name}: no backend can be enabled, not rendered")
            return _PreparedUpstream(upstream, None, "", tuple(warnings))
        servers = [
            _server(s.backend, s.role, address) for s in selection.backends for address in addresses[s.backend.hostname]
        ]
        context = {
            "name": upstream.name,
            "block_name": BLOCK_PREFIX + upstream.name,
            "protocol": upstream.listen.protocol,
            "server_names": list(upstream.listen.server_names),
            "port": upstream.listen.port,
            "min_servers": upstream.min_servers,
            "panic": selection.panic,
            "servers": servers,
            "left_out": left_out,
        }
        return _PreparedUpstream(upstream, context, _digest(context), tuple(warnings))

    def _addresses(self, upstream: Upstream, backend: Backend, warnings: list[str]) -> tuple[str, ...]:
        host, port = backend.address
        literal = ip_literal(host)
        if literal is not None:
            return (server_address(literal, port),)
        resolution = self.resolver.resolve(host)
        if resolution.error:
            kept = "keeps its last known address" if resolution.addresses else "left out"
            warnings.append(f"upstream {upstream.name}: backend {backend.hostname} {resolution.error}; {kept}")
        return tuple(server_address(a, port) for a in resolution.addresses)


def fail_timeout(duration: str) -> str:
    """nginx reads an upstream's fail_timeout in whole seconds ('500ms' is refused): round ms up."""
    if duration.endswith("ms"):
        return f"{math.ceil(duration_seconds(duration))}s"
    return duration


def _server(backend: Backend, role: Role, address: str) -> dict[str, Any]:
    return {
        "hostname": backend.hostname,
        "address": address,
        "weight": backend.weight,
        "max_fails": backend.max_fails,
        "fail_timeout": fail_timeout(backend.fail_timeout),
        "failover": backend.failover,
        "force_status": backend.force_status,
        "role": role.value,
    }


def render(
    state: DesiredState,
    *,
    health: Health | None = None,
    resolver: Resolver | None = None,
    templates: str | Path | None = None,
    limit: Iterable[str] | None = None,
) -> dict[str, RenderedAccessNode]:
    """The files of every access node of ``state``: see :class:`Renderer`.

    ``health`` maps upstream name → backend hostname → healthy (missing: up); ``resolver``
    defaults to the system's; ``templates`` is a directory of templates overriding the shipped.
    """
    return Renderer(templates, resolver).render(state, health, limit)
