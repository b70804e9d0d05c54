"""The desired model and backend selection → the exact files of every access node.

``render(state)`` answers, per access node, a mapping of relative path → file text for its
managed directory (``nginx.config_dir``), laid out as docs/render.md describes:

    http/_default.conf        default server of the access node's http port (+ revision)
    http/<upstream>.conf      one per http upstream: upstream ob_<name> + its server block
    stream/<upstream>.conf    one per tcp upstream: stream upstream ob_<name> + its server

Output is deterministic: the same model, health and resolver answers give byte-identical
files. Each upstream file's body is rendered first; the access node's revision
(:func:`revision_of`) is a digest of those bodies, the access node's own settings and the
templates; then the header (``header.conf.j2``: version and access node, not the revision) is
put in front of every file and the default server (which answers the revision) is rendered.
The revision is in that one file only, so a change to one upstream changes two files: its own
and ``http/_default.conf``. Templates: see
:mod:`reconciler.render.templates`; every value printed passes :func:`reconciler.render.finaliser.refuse_unsafe`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import jinja2

from reconciler import __version__, gc_pause
from reconciler.errors import RenderError
from reconciler.health.select import Role, Selection, select
from reconciler.manifest.model import (
    HASH_KEY,
    HEADER_NAME,
    HEADER_VALUE,
    HEADER_VARIABLES,
    RESERVED_HEADERS,
    AccessNode,
    Backend,
    Balancing,
    DesiredState,
    HttpProxy,
    Method,
    RetryCondition,
    TcpProxy,
    Upstream,
    duration_seconds,
)
from reconciler.render.finaliser import SAFE_VALUE
from reconciler.render.templates import (
    Templates,
    attributes_read,
    engine_digest,
    make_environment,
    printed_verbatim,
    templates_digest,
)
from reconciler.resolve import CANONICAL_IPV4, Resolver, SystemResolver, ip_literal

BLOCK_PREFIX = "ob_"
DEFAULT_FILE = "http/_default.conf"
# the http-level directives _default.conf may set (docs/render.md), by their template key
HASH_DIRECTIVES = {"server_names_hash_bucket_size": "bucket_size", "server_names_hash_max_size": "max_size"}
TEMPLATES = {
    "header": "header.conf.j2",
    "default": "http_default.conf.j2",
    "http": "http_upstream.conf.j2",
    "tcp": "stream_upstream.conf.j2",
    "host": "http_host.conf.j2",
}
DIRECTORIES = {"http": "http", "tcp": "stream"}

Health = Mapping[str, Mapping[str, bool]]
IPV4_HOSTPORT = re.compile(rf"{CANONICAL_IPV4.pattern}(:[1-9][0-9]{{0,4}})?")


@dataclass(frozen=True)
class RefusedUpstream:
    """An upstream the renderer refused on one access node: the node converges without it.

    The files in ``paths`` (its own file, and the file of every server name it shares by
    path) are kept as they are live: neither rewritten nor removed, and where the node has
    none (a first deploy) it gets none. ``message`` says why (the ``RenderError``'s words,
    without the access node and upstream names), ``field`` and ``value`` where in the
    template context and which value, when known.
    """

    upstream: str
    message: str
    field: str = ""
    value: str = ""
    paths: tuple[str, ...] = ()

    def __str__(self) -> str:
        """For people: why, and which files stay as they are live."""
        return f"upstream {self.upstream}: {self.message}; kept as it is live: {', '.join(self.paths)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "upstream": self.upstream,
            "message": self.message,
            "field": self.field,
            "value": self.value,
            "paths": list(self.paths),
        }


class RenderedFiles(Mapping[str, str]):
    """An access node's files, relative path → text; each file is rendered when it is first read.

    A run reads only the files it needs: plan those whose inputs changed since the live release
    (:meth:`RenderedAccessNode.settle`), deploy those that travel.
    """

    def __init__(self, header: str, texts: Mapping[str, str], pending: Mapping[str, Callable[[], str]]) -> None:
        self._header = header
        self._texts = dict(texts)  # rendered: header included
        self._pending = {p: r for p, r in pending.items() if p not in self._texts}  # path → its body's rendering
        self._paths = sorted(self._texts.keys() | self._pending.keys())
        self._digests: dict[str, str] = {}

    def __getitem__(self, path: str) -> str:
        text = self._texts.get(path)
        if text is None:
            text = self._texts[path] = self._header + self._pending[path]()
        return text

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)

    def __contains__(self, path: object) -> bool:
        return path in self._texts or path in self._pending

    def __repr__(self) -> str:
        return f"RenderedFiles({self._paths!r})"

    def replacing(self, path: str, text: str) -> RenderedFiles:
        """The same files with ``path``'s text replaced (the others rendered when read, as here)."""
        return RenderedFiles(self._header, {**self._texts, path: text}, self._pending)

    def rendered(self, path: str) -> bool:
        """Whether ``path`` was rendered already (what a run rendered: apply's ``rendered``)."""
        return path in self._texts

    def digest(self, path: str) -> str:
        """The sha256 (hex) of the file's text."""
        digest = self._digests.get(path)
        if digest is None:
            digest = self._digests[path] = sha256_hex(self[path])
        return digest


@dataclass(frozen=True)
class RenderedAccessNode:
    """The files of one access node's managed directory, and what rendering reported.

    ``inputs``: relative path → the digest of everything an upstream's (or a shared name's)
    file is rendered from (:func:`input_digest`); a deploy records them in the node's marker
    beside the files' digests. ``render_access_node`` answers an access node that is not
    *settled* yet: its upstream files are rendered by :meth:`settle`, which knows what the live
    release was rendered from and renders only the others. ``digests`` (every file's sha256) is
    set once settled; ``refused`` is final then (a user's template or the finaliser refusing an
    upstream shows only when its file is rendered).
    """

    name: str
    revision: str
    files: Mapping[str, str]
    warnings: tuple[str, ...] = ()
    health: tuple[str, ...] = ()  # what health changed: 'upstream web: app1:8080 down (health); tier 1 in use'
    refused: tuple[RefusedUpstream, ...] = ()  # upstreams left at their last good rendering, by name
    inputs: Mapping[str, str] = field(default_factory=dict)
    digests: Mapping[str, str] | None = None  # relative path → sha256, once settled
    pending: _Pending | None = field(default=None, compare=False, repr=False)
    # the http-level directives http/_default.conf sets (HASH_DIRECTIVES): name -> value
    names_hash: Mapping[str, int] = field(default_factory=dict)
    server_names: tuple[int, int] = (0, 0)  # how many server names, and the longest one's length
    # http/_default.conf leaving out each non-empty subset of ``names_hash`` (see ``leaving_out``)
    defaults: Mapping[frozenset[str], str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def kept(self) -> frozenset[str]:
        """The paths of the refused upstreams: the live file stays as it is (or absent)."""
        return frozenset(path for r in self.refused for path in r.paths)

    def settle(
        self, inputs: Mapping[str, str] | None = None, digests: Mapping[str, str] | None = None
    ) -> RenderedAccessNode:
        """This access node with every file known: ``inputs`` and ``digests`` are what the live
        release's marker recorded. A file whose input digest is the recorded one is not rendered
        (its recorded sha256 stands for it); every other file is rendered now, and an upstream
        whose file a template refuses is refused here. A settled node answers itself."""
        if self.digests is not None:
            return self
        if self.pending is None:  # built from texts (tests, a caller's own files)
            return replace(self, digests={p: sha256_hex(t) for p, t in self.files.items()})
        return self.pending.settle(self, inputs or {}, digests or {})

    def leaving_out(self, directives: frozenset[str]) -> RenderedAccessNode:
        """The same files with ``http/_default.conf`` not setting ``directives`` (the access node's
        own nginx.conf sets them: nginx refuses a duplicate); a settled node only. The revision
        stays: it is a digest of what the upstream files are made of."""
        omitted = frozenset(directives) & frozenset(self.names_hash)
        if not omitted:
            return self
        left_out = frozenset(d for subset in self.defaults for d in subset) - frozenset(self.names_hash)
        default = self.defaults[omitted | left_out]
        files = (
            self.files.replacing(DEFAULT_FILE, default)
            if isinstance(self.files, RenderedFiles)
            else {**self.files, DEFAULT_FILE: default}
        )
        digests = None if self.digests is None else {**self.digests, DEFAULT_FILE: sha256_hex(default)}
        kept = {k: v for k, v in self.names_hash.items() if k not in omitted}
        return replace(self, files=files, names_hash=kept, digests=digests)


@dataclass(frozen=True)
class _PreparedUpstream:
    """An upstream's template context (None when it is not rendered), warnings, and what health
    changed; ``error`` when the renderer refused it (its context is None then)."""

    upstream: Upstream
    context: dict[str, Any] | None
    warnings: tuple[str, ...]
    health: str = ""
    error: RenderError | None = None
    digest: str = ""  # of the context: the part of its files' inputs that no access node changes
    names: str = "null"  # the JSON of its server names (an http upstream's; a tcp upstream has none)
    # its file's body by what the body is made of (:meth:`Renderer._shared`): rendered once for
    # every access node whose template reads the same of it (at most BODIES kept)
    bodies: dict[str, str] = field(default_factory=dict, compare=False, repr=False)


Prepared = dict[str, _PreparedUpstream]  # upstream name → its prepared context, shared by access nodes
# printed in place of the listen value in a body shared by access nodes on other ports, then
# replaced (Renderer._shared): a value no manifest can guess (random for each process)
LISTEN_MARK = f"obr-listen-{secrets.token_hex(12)}"
BODIES = 16  # an upstream's rendered bodies kept (distinct listen settings, template sets, shared names)


@dataclass(frozen=True)
class _Pending:
    """What :meth:`RenderedAccessNode.settle` needs to render an access node's upstream files."""

    header: str
    bodies: Mapping[str, Callable[[], str]]  # path → its body's rendering (upstream and shared-name files)
    owners: Mapping[str, Upstream]  # an upstream file's path → its upstream
    shared: Mapping[str, tuple[str, ...]]  # a shared name's file → the upstreams sharing it
    # the default file, and its variants without hash directives (``defaults``), given the revision
    # and whether the websockets map is needed
    default: Callable[[str, bool], tuple[str, dict[frozenset[str], str]]]
    websockets: bool  # an upstream rendered here uses websockets
    revision: Callable[[Mapping[str, str], Iterable[str]], str]  # revision_of for this access node

    def settle(
        self, node: RenderedAccessNode, known_inputs: Mapping[str, str], known: Mapping[str, str]
    ) -> RenderedAccessNode:
        texts: dict[str, str] = {}
        digests: dict[str, str] = {}
        failed: dict[str, RefusedUpstream] = {}

        def render(path: str) -> RenderError | None:
            recorded = known.get(path)
            if recorded is not None and known_inputs.get(path) == node.inputs[path]:
                digests[path] = recorded
                return None
            try:
                texts[path] = self.header + self.bodies[path]()
            except RenderError as e:  # a user's template or the finaliser refusing this upstream
                return e
            digests[path] = sha256_hex(texts[path])
            return None

        for path, upstream in self.owners.items():
            if (error := render(path)) is not None:
                failed[upstream.name] = _refusal(upstream.name, upstream, error)
        refusals = {r.upstream: r for r in node.refused} | failed
        for path, names in self.shared.items():
            if any(n in refusals for n in names):  # kept as it is live, with its upstreams
                for n in names:
                    if n in refusals:
                        refusals[n] = _kept_too(refusals[n], path)
            elif (error := render(path)) is not None:  # kept as it is live; its upstreams' own files are rendered
                for n in names:
                    refusals[f"{n}\0{path}"] = _refusal(n, None, error, (path,))
        refused = tuple(refusals[key] for key in sorted(refusals))
        kept = {path for r in refused for path in r.paths}
        inputs = {p: i for p, i in node.inputs.items() if p not in kept}
        # a refused upstream counts by its paths alone, as when its context was refused
        revision = self.revision(inputs, kept) if len(refused) > len(node.refused) else node.revision
        # a kept file may use the websockets map: it is rendered while anything is refused
        texts[DEFAULT_FILE], defaults = self.default(revision, bool(refused) or self.websockets)
        digests[DEFAULT_FILE] = sha256_hex(texts[DEFAULT_FILE])
        files = RenderedFiles(
            self.header,
            {p: t for p, t in texts.items() if p not in kept},
            {p: r for p, r in self.bodies.items() if p not in kept},
        )
        return replace(
            node,
            revision=revision,
            defaults=defaults,
            files=files,
            refused=refused,
            inputs=inputs,
            digests={p: d for p, d in sorted(digests.items()) if p not in kept},
            pending=None,
        )


def revision_of(
    node_context: Mapping[str, Any], inputs: Mapping[str, str], templates: str, kept: Iterable[str] = ()
) -> str:
    """The revision of an access node: 16 hex digits of a sha256 over what its files are made of.

    ``node_context`` is the access node's template context, ``inputs`` its upstream and shared-
    name files' input digests (relative path → :func:`input_digest`), ``templates`` the template
    set's digest, ``kept`` the paths of upstreams refused before any file of theirs could be
    rendered (their live text, unknown here, stays as it is: the path alone stands for it, so
    that the revision does not depend on an error's wording).
    """
    digest = hashlib.sha256()
    document = {"version": __version__, "templates": templates, "access_node": node_context}
    digest.update(json.dumps(document, sort_keys=True, separators=(",", ":")).encode())
    for path in sorted(inputs):
        digest.update(f"\0{path}\0{inputs[path]}".encode())
    for path in sorted(kept):
        digest.update(f"\0kept\0{path}".encode())
    return digest.hexdigest()[:16]


def input_digest(*parts: str) -> str:
    """32 hex digits of a sha256 over ``parts`` and the renderer's own code (:func:`engine_digest`)."""
    return hashlib.sha256("\0".join((engine_digest(), *parts)).encode()).hexdigest()[:32]


def sha256_hex(text: str) -> str:
    """The sha256 (hex) of ``text`` in UTF-8: a file's digest, as the node's ``sha256sum`` says it."""
    return hashlib.sha256(text.encode()).hexdigest()


# compact JSON with sorted keys, one encoder for the run (json.dumps with arguments makes one per
# call: a quarter of digesting an upstream's context); contexts are trees, never cycles
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), check_circular=False)


def _json(value: Any) -> str:
    return _ENCODER.encode(value)


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

    def __init__(self, templates: Templates = None, resolver: Resolver | None = None) -> None:
        self.resolver: Resolver = resolver if resolver is not None else SystemResolver()
        self.use_templates(templates)

    def use_templates(self, templates: Templates) -> None:
        """Render with ``templates`` from now on (the resolver and what it learned are kept)."""
        self.environment = make_environment(templates)
        try:
            self.templates_digest = templates_digest(self.environment)
            self._templates = {key: self.environment.get_template(name) for key, name in TEMPLATES.items()}
            # template key → what it reads of access_node, and whether it prints ``listen`` only as
            # it is (one entry: the workers of several access nodes fill it at once)
            self._reads: dict[str, tuple[frozenset[str] | None, bool]] = {}
        except jinja2.TemplateSyntaxError as e:
            raise RenderError(f"template {e.filename or e.name}:{e.lineno}: {e.message}") from e
        except jinja2.TemplateError as e:
            raise RenderError(f"template: {e}") from e

    def render(
        self, state: DesiredState, health: Health | None = None, limit: Iterable[str] | None = None
    ) -> dict[str, RenderedAccessNode]:
        """Every access node of ``state`` (only those named in ``limit`` when given), by name,
        settled with nothing known of a live release: every file rendered."""
        wanted = set(limit) if limit is not None else None
        if wanted is not None and (unknown := wanted - set(state.access_nodes)):
            raise RenderError(f"--limit names unknown access nodes: {', '.join(sorted(unknown))}")
        prepared: Prepared = {}
        out = {}
        for name in sorted(state.access_nodes):
            if wanted is None or name in wanted:
                node = state.access_nodes[name]
                out[name] = self.render_access_node(state, node, health, prepared).settle()
        return out

    def render_access_node(
        self,
        state: DesiredState,
        node: AccessNode,
        health: Health | None = None,
        prepared: Prepared | None = None,
    ) -> RenderedAccessNode:
        """The files of one access node; ``prepared`` caches upstreams across access nodes."""
        with gc_pause.paused():
            return self._render_access_node(state, node, health, {} if prepared is None else prepared)

    def _render_access_node(
        self, state: DesiredState, node: AccessNode, health: Health | None, prepared: Prepared
    ) -> RenderedAccessNode:
        upstreams: list[_PreparedUpstream] = []
        failed: dict[str, tuple[Upstream | None, RenderError]] = {}  # refused: name -> (model or None, why)
        for name in sorted(set(node.upstreams)):
            upstream = state.upstreams.get(name)
            if upstream is None:
                failed[name] = None, RenderError("unknown upstream: the desired state has no such Upstream")
                continue
            if name not in prepared:
                try:
                    prepared[name] = self._prepare(upstream, (health or {}).get(name, {}))
                except RenderError as e:  # refused on every access node serving it (cached as such)
                    prepared[name] = _PreparedUpstream(upstream, None, (), error=e)
            p = prepared[name]
            if p.error is not None:
                failed[name] = upstream, p.error
            else:
                upstreams.append(p)
        http_listen = listen_value(node.listen_address, node.http_port)
        node_context = {
            "name": node.name,
            "http_port": node.http_port,
            "listen_address": node.listen_address,
            "config_dir": node.nginx.config_dir,
            "http_listen": http_listen,
        }
        refused_http = [u for u, _ in failed.values() if u is not None and u.listen.protocol == "http"]
        if any(p.context is not None and p.context.get("tls") for p in upstreams) or any(u.tls for u in refused_http):
            node_context.update(  # only then, so that nodes without tls keep their revision
                https_port=node.https_port,
                https_listen=listen_value(node.listen_address, node.https_port),
                http2=node.http2 is True,
            )
        base = {"version": __version__, "access_node": node_context}
        common = (self.templates_digest, _json(base))  # every file's inputs begin with these
        # a refused upstream keeps its place among the names it shares: their files are kept too
        routes = host_routes(upstreams, refused_http)
        refusals = {name: _refusal(name, upstream, error) for name, (upstream, error) in failed.items()}
        bodies: dict[str, Callable[[], str]] = {}
        views: dict[str, str] = {}  # what each template sees of this access node (Renderer._shared)
        inputs: dict[str, str] = {}
        owners: dict[str, Upstream] = {}
        for p in upstreams:
            if p.context is None:
                continue
            protocol = p.upstream.listen.protocol
            listen = (
                listen_value(node.listen_address, p.upstream.listen.port or 0) if protocol == "tcp" else http_listen
            )
            path = f"{DIRECTORIES[protocol]}/{p.upstream.name}.conf"
            context: dict[str, Any] = {**base, "listen": listen, "upstream": p.context}
            alone = p.names  # the JSON of the server names it alone serves here: usually all of its own
            if protocol == "http":
                names = context["server_names"] = [n for n in p.context["server_names"] if len(routes[n]) == 1]
                if len(names) != len(p.context["server_names"]):
                    alone = _json(names)
            made_of: tuple[str, ...] = (p.digest, alone)  # + the listen value and the node: its inputs
            inputs[path] = input_digest(*common, protocol, listen, *made_of)
            render = partial(self._template, protocol)
            bodies[path] = partial(self._shared, p, protocol, render, context, node_context, views, *made_of)
            owners[path] = p.upstream
        digests = {p.upstream.name: p.digest for p in upstreams}
        shared: dict[str, tuple[str, ...]] = {}
        for host, sharing in sorted(routes.items()):
            if len(sharing) > 1:
                path = host_file(host)
                if any(u["name"] in refusals for u in sharing):  # kept as it is live, with its upstreams
                    for u in sharing:
                        if u["name"] in refusals:
                            refusals[u["name"]] = _kept_too(refusals[u["name"]], path)
                    continue
                shared[path] = tuple(u["name"] for u in sharing)
                made_of = (host, *(digests[n] for n in shared[path]))
                inputs[path] = input_digest(*common, "host", http_listen, *made_of)
                host_context = self._host_context(host, sharing, base, http_listen)
                owner = prepared[shared[path][0]]  # its bodies keep the file's (made of every sharer's digest)
                bodies[path] = partial(
                    self._shared, owner, "host", self._host, host_context, node_context, views, *made_of
                )
        refused = tuple(refusals[key] for key in sorted(refusals))
        kept = {path for r in refused for path in r.paths}
        templates = self.templates_digest

        def revision(inputs: Mapping[str, str], kept: Iterable[str]) -> str:
            return revision_of(node_context, inputs, templates, kept)

        names = [n for p in upstreams if p.context is not None for n in p.context["server_names"]]
        names += [n for u in refused_http for n in u.listen.server_names]
        names_hash = server_names_hash(names)
        default_context = {**base, "listen": http_listen, "names_hash": names_hash}
        header = self._render("header", node.name, base)  # no revision: a change rewrites only its file

        def default(revision: str, websockets: bool) -> tuple[str, dict[frozenset[str], str]]:
            context = {**default_context, "revision": revision, "websockets": websockets}
            return header + self._render("default", node.name, context), self._defaults(node.name, header, context)

        pending = _Pending(
            header,
            bodies,
            owners,
            shared,
            default,
            any(p.context is not None and p.context["proxy"].get("websockets") for p in upstreams),
            revision,
        )
        warnings = tuple(w for p in upstreams for w in p.warnings)
        notes = tuple(p.health for p in upstreams if p.health)
        files = RenderedFiles(header, {}, bodies)  # settle() adds the default file
        first = revision(inputs, kept)  # settle() computes it again when a template refuses an upstream
        setting = {d: v for d, key in HASH_DIRECTIVES.items() if (v := names_hash[key]) is not None}
        sizes = (len(names), max(map(len, names), default=0)) if setting else (0, 0)
        return RenderedAccessNode(
            node.name, first, files, warnings, notes, refused, inputs, None, pending, setting, sizes
        )

    def _host_context(
        self, host: str, shared: list[dict[str, Any]], base: dict[str, Any], http_listen: str
    ) -> dict[str, Any]:
        """The context of a server name's file several upstreams share by path."""
        return {
            **base,
            "listen": http_listen,
            "server_name": host,
            "routes": [{"upstream": u} for u in shared],
            "has_root": any(u["path"] == "/" for u in shared),
            "tls": shared[0]["tls"],
        }

    def _host(self, context: dict[str, Any]) -> str:
        """The file of a server name several upstreams share by path."""
        if any(r["upstream"]["tls"] != context["tls"] for r in context["routes"]):
            raise RenderError(f"the upstreams sharing server name {context['server_name']} differ in tls")
        return self._template("host", context)

    def _shared(
        self,
        prepared: _PreparedUpstream,
        key: str,
        render: Callable[[dict[str, Any]], str],
        context: dict[str, Any],
        node: dict[str, Any],
        views: dict[str, str],
        *made_of: str,
    ) -> str:
        """A file's body, rendered once for every access node whose template sees the same of it.

        ``render`` renders ``context`` with template ``key``; ``made_of`` is everything of the
        context but the access node (``node``), the listen value and the version (digests of the
        upstreams' contexts, the names); of the access node, only what the template reads
        (:func:`attributes_read`), or all of it when that is not known. The body is a function of
        those: nodes that differ only in their name and directory (the header says which node it
        is) share it (``views``: what each template sees of this access node, by template key).
        When the template prints ``listen`` only as it is (:func:`printed_verbatim`), the body is
        rendered with ``LISTEN_MARK`` in its place and the node's own value put in by a replace:
        nodes that differ in their http port too (one host, several nginx) share it. A refusal
        is never kept: each node reports it.
        """
        known = self._reads.get(key)
        if known is None:
            name = TEMPLATES[key]
            known = self._reads[key] = (
                attributes_read(self.environment, name, "access_node"),
                printed_verbatim(self.environment, name, "listen"),
            )
        reads, verbatim = known
        view = views.get(key)
        if view is None:
            view = views[key] = _json(node if reads is None else {k: node[k] for k in reads if k in node})
        listen = context["listen"]
        marked = verbatim and SAFE_VALUE.fullmatch(listen) is not None  # else the finaliser says why
        made = input_digest(self.templates_digest, key, view, LISTEN_MARK if marked else listen, *made_of)
        body = prepared.bodies.get(made)
        if body is None:
            body = render({**context, "listen": LISTEN_MARK}) if marked else render(context)
            if len(prepared.bodies) >= BODIES:
                prepared.bodies.clear()
            prepared.bodies[made] = body
        return body.replace(LISTEN_MARK, listen) if marked else body

    def _defaults(self, node: str, header: str, context: dict[str, Any]) -> dict[frozenset[str], str]:
        """The default server's file leaving out each non-empty subset of the hash directives it
        sets (for an access node whose nginx.conf sets them: deploy/operator.py)."""
        names_hash = context["names_hash"]
        setting = [d for d, key in HASH_DIRECTIVES.items() if names_hash[key] is not None]
        defaults = {}
        for omitted in subsets(setting):
            without = {**names_hash, **{HASH_DIRECTIVES[d]: None for d in omitted}}
            defaults[omitted] = header + self._render("default", node, {**context, "names_hash": without})
        return defaults

    def _render(self, key: str, node: str, context: dict[str, Any]) -> str:
        """A file of the access node itself (its failure fails the access node's render)."""
        try:
            return self._template(key, context)
        except RenderError as e:
            raise RenderError(f"access node {node}: {e}", access_node=node, field=e.field, value=e.value) from e

    def _template(self, key: str, context: dict[str, Any]) -> str:
        try:
            return self._templates[key].render(context)
        except RenderError:
            raise
        except jinja2.TemplateSyntaxError as e:  # of a template it includes: where
            raise RenderError(f"template {TEMPLATES[key]}: {e.name or e.filename}:{e.lineno}: {e.message}") from e
        except Exception as e:  # a user's template may raise anything: name it, never a traceback
            raise RenderError(f"template {TEMPLATES[key]}: {e}") from e

    def _prepare(self, upstream: Upstream, health: Mapping[str, bool]) -> _PreparedUpstream:
        """Resolve, select and build the template context of one upstream (access-node independent)."""
        warnings: list[str] = []
        if not upstream.nodes:
            warnings.append(f"upstream {upstream.name}: has no backends, not rendered")
            return _PreparedUpstream(upstream, None, tuple(warnings))
        addresses = {b.hostname: self._addresses(upstream, b, warnings) for b in upstream.nodes}
        left_out = sorted(h for h, a in addresses.items() if not a)
        resolvable = (
            replace(upstream, nodes=tuple(b for b in upstream.nodes if addresses[b.hostname])) if left_out else upstream
        )
        selection = select(resolvable, health)
        if selection.panic:
            warnings.append(
                f"upstream {upstream.name}: panic, no backend is eligible: every backend not forced down is enabled"
            )
        noted = health_note(upstream, selection, health) if health else ""
        if not any(s.role is Role.ENABLED for s in selection.backends):
            warnings.append(f"upstream {upstream.name}: no backend can be enabled, not rendered")
            return _PreparedUpstream(upstream, None, tuple(warnings), noted)
        servers = [
            {
                "hostname": backend.hostname,
                "address": address,
                "weight": backend.weight,
                "max_fails": backend.max_fails,
                "fail_timeout": fail_timeout(backend.fail_timeout),
                "failover": backend.failover,
                "force_status": backend.force_status,
                "role": role.value,
            }
            for backend, role in selection.backends
            for address in addresses[backend.hostname]
        ]
        context = {
            "name": upstream.name,
            "block_name": BLOCK_PREFIX + upstream.name,
            "protocol": upstream.listen.protocol,
            "server_names": list(upstream.listen.server_names),
            "port": upstream.listen.port,
            "path": upstream.listen.path,
            "strip_path": upstream.listen.strip_path is True,
            "min_servers": upstream.min_servers,
            "panic": selection.panic,
            "servers": servers,
            "left_out": left_out,
            "balancing": balancing_context(upstream.name, upstream.balancing),
            "proxy": proxy_context(upstream),
            "tls": tls_context(upstream),
            "access": access_context(upstream),
        }
        digest = sha256_hex(_json(context))
        names = _json(context["server_names"]) if upstream.listen.protocol == "http" else "null"
        return _PreparedUpstream(upstream, context, tuple(warnings), noted, digest=digest, names=names)

    def _addresses(self, upstream: Upstream, backend: Backend, warnings: list[str]) -> tuple[str, ...]:
        ipv4 = IPV4_HOSTPORT.fullmatch(backend.hostname)
        if ipv4 is not None:  # the common case, in one step
            return (backend.hostname if ipv4[1] else backend.hostname + ":80",)
        host, port = backend.address
        literal = ip_literal(host)
        if literal is not None:
            return (server_address(literal, port),)
        resolution = self.resolver.resolve(host)
        if resolution.error:
            kept = "keeps its last known address" if resolution.addresses else "left out"
            warnings.append(f"upstream {upstream.name}: backend {backend.hostname} {resolution.error}; {kept}")
        return tuple(server_address(a, port) for a in resolution.addresses)


def balancing_context(upstream: str, balancing: Balancing) -> dict[str, Any]:
    """The template context of a balancing method: ``key`` is the hash variable's name without ``$``.

    The key is checked against the allow-list here too (the finaliser refuses ``$``, so the
    template prints the ``$`` itself): nothing but an allow-listed variable reaches nginx.
    """
    try:
        method = Method(balancing.method)
    except ValueError:
        raise RenderError(
            f"upstream {upstream}: refusing upstream.balancing.method value {balancing.method!r}",
            field="upstream.balancing.method",
            value=repr(balancing.method),
        ) from None
    key = None
    if method is Method.HASH:
        match = HASH_KEY.fullmatch(balancing.key or "")
        if match is None:
            raise RenderError(
                f"upstream {upstream}: refusing upstream.balancing.key value {balancing.key!r}: "
                "only $remote_addr, $request_uri, $host and $cookie_NAME may be hashed on",
                field="upstream.balancing.key",
                value=repr(balancing.key),
            )
        key = match[1]
    return {"method": method.value, "key": key, "consistent": balancing.consistent is True}


def health_note(upstream: Upstream, selection: Selection, health: Mapping[str, bool]) -> str:
    """What health changed in an upstream's selection, for plan ('' when nothing did):
    ``upstream web: app1:8080 down (health); tier 1 in use``."""
    unhealthy = [
        s for s in selection.backends if s.backend.force_status == "normal" and not health.get(s.backend.hostname, True)
    ]
    if not unhealthy:
        return ""
    if selection.panic:
        parts = [
            f"{', '.join(s.backend.hostname for s in unhealthy)} failing: panic, every backend not forced down enabled"
        ]
    else:
        parts = [f"{s.backend.hostname} down (health)" for s in unhealthy]
        lowest = min(b.failover for b in upstream.nodes)
        failover = sorted({s.backend.failover for s in selection.backends if s.role is Role.ENABLED} - {lowest})
        if failover:  # tiers above the first that serve because of it
            parts.append(f"tier {', '.join(map(str, failover))} in use")
    return f"upstream {upstream.name}: " + "; ".join(parts)


def host_routes(
    upstreams: Iterable[_PreparedUpstream], refused: Iterable[Upstream] = ()
) -> dict[str, list[dict[str, Any]]]:
    """Every server name of the rendered http upstreams → their contexts, longest path first.

    A name with one upstream is served by that upstream's own file; a name several upstreams
    share by path gets a file of its own (:func:`host_file`) with one location per upstream.
    ``refused`` upstreams (not rendered) take their place by their names and path alone.
    """
    routes: dict[str, list[dict[str, Any]]] = {}
    for p in upstreams:
        if p.context is not None and p.context["protocol"] == "http":
            for name in p.context["server_names"]:
                routes.setdefault(name, []).append(p.context)
    for upstream in refused:
        for name in upstream.listen.server_names:
            routes.setdefault(name, []).append({"name": upstream.name, "path": upstream.listen.path})
    for shared in routes.values():
        shared.sort(key=lambda u: (-len(u["path"]), u["path"]))
    return routes


def host_file(server_name: str) -> str:
    """The file of a server name several upstreams share: ``*`` (not allowed in names there) as ``~``."""
    return f"http/_host.{server_name.replace('*', '~')}.conf"


def access_context(upstream: Upstream) -> dict[str, Any]:
    """Allowed and denied networks (each parsed again: nothing but a network reaches nginx) and
    the rate limit with its zone size."""
    networks: dict[str, list[str]] = {}
    for key in ("allow", "deny"):
        networks[key] = []
        for i, text in enumerate(getattr(upstream.access, key)):
            try:
                networks[key].append(str(ipaddress.ip_network(text, strict=True)))
            except (ValueError, TypeError):
                raise _refuse(upstream.name, f"upstream.access.{key}[{i}]", text, "not an IP network") from None
    limit = upstream.access.rate_limit
    rate = None
    if limit is not None:
        numbers = (limit.rps, limit.burst, limit.clients)
        if not all(type(n) is int and n >= 0 for n in numbers) or limit.rps < 1:
            raise _refuse(upstream.name, "upstream.access.rate_limit", limit, "whole numbers")
        rate = {"rps": limit.rps, "burst": limit.burst, "zone_megabytes": limit.zone_megabytes}
    return {**networks, "rate_limit": rate, "any": bool(networks["allow"] or networks["deny"] or rate)}


def tls_context(upstream: Upstream) -> dict[str, Any] | None:
    """An upstream's TLS termination for the templates (None without it; http upstreams only)."""
    tls = upstream.tls
    if tls is None:
        return None
    if upstream.listen.protocol == "tcp":
        raise _refuse(upstream.name, "upstream.tls", tls, "tls is for http upstreams")
    hsts = tls.hsts
    return {
        "certificate": tls.certificate,
        "key": tls.key,
        "redirect_http": tls.redirect_http is True,
        "hsts": None
        if hsts is None
        else {
            "max_age": hsts.max_age,
            "include_subdomains": hsts.include_subdomains is True,
            "preload": hsts.preload is True,
        },
    }


def _refuse(upstream: str, field: str, value: Any, allowed: str) -> RenderError:
    return RenderError(
        f"upstream {upstream}: refusing {field} value {value!r}: {allowed}", field=field, value=repr(value)
    )


def _refusal(name: str, upstream: Upstream | None, error: RenderError, paths: tuple[str, ...] = ()) -> RefusedUpstream:
    """What is reported of a refused upstream, and the files it keeps (its own by default: both
    candidates when its protocol is unknown)."""
    if not paths:
        protocols = [upstream.listen.protocol] if upstream is not None else list(DIRECTORIES)
        paths = tuple(sorted(f"{DIRECTORIES[p]}/{name}.conf" for p in protocols))
    message = str(error).removeprefix(f"upstream {name}: ")
    return RefusedUpstream(name, message, error.field, error.value, paths)


def _kept_too(refusal: RefusedUpstream, path: str) -> RefusedUpstream:
    return replace(refusal, paths=tuple(sorted({*refusal.paths, path})))


def proxy_context(upstream: Upstream) -> dict[str, Any]:
    """The template context of an upstream's proxy settings, every allow-list checked again."""
    proxy = upstream.proxy
    if upstream.listen.protocol == "tcp":
        if proxy == HttpProxy():
            proxy = TcpProxy()  # a model built without it (tests, API code): the tcp defaults
        if not isinstance(proxy, TcpProxy):
            raise _refuse(upstream.name, "upstream.proxy", proxy, "a tcp upstream takes tcp proxy settings")
        return {
            "connect_timeout": proxy.connect_timeout,
            "timeout": proxy.timeout,
            "proxy_protocol": proxy.proxy_protocol is True,
        }
    if not isinstance(proxy, HttpProxy):
        raise _refuse(upstream.name, "upstream.proxy", proxy, "an http upstream takes http proxy settings")
    headers = []
    for i, header in enumerate(proxy.headers):
        where = f"upstream.proxy.headers[{i}]"
        if not HEADER_NAME.fullmatch(header.name) or header.name.lower() in RESERVED_HEADERS:
            raise _refuse(upstream.name, f"{where}.name", header.name, "not an allowed header name")
        if (header.value is None) == (header.variable is None):
            raise _refuse(upstream.name, where, header, "one of value and variable")
        if header.variable is not None and header.variable not in HEADER_VARIABLES:
            raise _refuse(upstream.name, f"{where}.variable", header.variable, "not an allow-listed variable")
        if header.value is not None and not HEADER_VALUE.fullmatch(header.value):
            raise _refuse(upstream.name, f"{where}.value", header.value, "not in the safe character class")
        variable = header.variable[1:] if header.variable else None
        headers.append({"name": header.name, "value": header.value, "variable": variable})
    conditions = []
    for i, condition in enumerate(proxy.retries.conditions):
        try:
            conditions.append(RetryCondition(condition).value)
        except ValueError:
            raise _refuse(
                upstream.name, f"upstream.proxy.retries.conditions[{i}]", condition, "not a condition"
            ) from None
    if proxy.backend_protocol not in ("http", "https"):
        raise _refuse(upstream.name, "upstream.proxy.backend_protocol", proxy.backend_protocol, "http or https")
    tls = proxy.backend_tls
    https = proxy.backend_protocol == "https"
    return {
        "connect_timeout": proxy.connect_timeout,
        "send_timeout": proxy.send_timeout,
        "read_timeout": proxy.read_timeout,
        "client_max_body_size": proxy.client_max_body_size,
        "buffering": proxy.buffering is not False,
        "websockets": proxy.websockets is True,
        "retries": {"conditions": conditions, "tries": proxy.retries.tries, "timeout": proxy.retries.timeout},
        "keepalive": proxy.keepalive,
        "headers": headers,
        "scheme": proxy.backend_protocol,
        # any of the directives rendered only when set (one test in the template for the usual case)
        "extra": bool(
            proxy.retries.tries
            or proxy.retries.timeout != "0"
            or proxy.buffering is False
            or proxy.client_max_body_size is not None
            or https
        ),
        "tls": None
        if not https
        else {
            "server_name": tls.server_name if tls else None,
            "verify": tls is None or tls.verify is not False,
            "ca_certificate": tls.ca_certificate if tls else None,
        },
    }


def server_names_hash(names: Sequence[str]) -> dict[str, int | None]:
    """nginx's ``server_names_hash_{bucket,max}_size`` when its defaults (64, 512) would not do.

    A name takes ``align8(10 + len)`` bytes in a bucket that keeps 8 for its end: with the
    default bucket, a name of 48 characters or more makes nginx refuse the configuration.
    With more than 512 names nginx wants a larger hash, and buckets that hold several names.
    """
    longest = max((len(n) for n in names), default=0)
    needed = (10 + longest + 7) // 8 * 8 + 8
    bucket = 64
    while bucket < needed:
        bucket *= 2
    max_size = None
    if len(names) > 512:
        bucket = max(bucket, 128)
        max_size = 1 << (len(names) - 1).bit_length()
    return {"bucket_size": bucket if bucket > 64 else None, "max_size": max_size}


def subsets(items: Iterable[str]) -> list[frozenset[str]]:
    """Every non-empty subset of ``items``."""
    out: list[frozenset[str]] = []
    for item in items:
        out += [s | {item} for s in out] + [frozenset({item})]
    return out


def fail_timeout(duration: str) -> str:
    """nginx reads an upstream's fail_timeout in whole seconds ('500ms' is refused): round ms up."""
    if duration.endswith("ms"):
        return f"{math.ceil(duration_seconds(duration))}s"
    return duration


def render(
    state: DesiredState,
    *,
    health: Health | None = None,
    resolver: Resolver | None = None,
    templates: Templates = None,
    limit: Iterable[str] | None = None,
) -> dict[str, RenderedAccessNode]:
    """The files of every access node of ``state``: see :class:`Renderer`.

    ``health`` maps upstream name → backend hostname → healthy (missing: up); ``resolver``
    defaults to the system's; ``templates`` is a directory of templates overriding the shipped.
    """
    return Renderer(templates, resolver).render(state, health, limit)
