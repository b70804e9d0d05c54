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
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import nodes

from reconciler import __version__
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


class BytecodeCache(jinja2.FileSystemBytecodeCache):
    """Jinja2's compiled templates, kept between runs in Jinja2's own directory
    (``$TMPDIR/_jinja2-cache-UID``, mode 0700, refused when another user owns it): compiling the
    shipped templates is most of a ``Renderer()``'s start (~50 ms of CPU here, ~3 ms loaded from
    the cache).

    Jinja2 keys a template by its name and checks its source; the environment's options
    (``trim_blocks``, the finaliser) change the compiled code too, so this package's code is part
    of the key (:func:`engine_digest`). A cache that cannot be read or written is no error: the
    template is compiled, as without one.
    """

    def __init__(self, directory: str | None = None) -> None:
        super().__init__(directory, pattern="__obreconcile_%s.cache")

    def get_cache_key(self, name: str, filename: str | None = None) -> str:
        return f"{engine_digest()[:16]}-{super().get_cache_key(name, filename)}"

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        try:
            super().load_bytecode(bucket)
        except OSError:
            bucket.reset()

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        try:
            super().dump_bytecode(bucket)
        except OSError:
            pass


@cache
def bytecode_cache() -> BytecodeCache | None:
    """The cache of compiled templates, or None where Jinja2 finds no safe directory for it."""
    try:
        return BytecodeCache()
    except (RuntimeError, OSError):
        return None


@cache
def engine_digest() -> str:
    """A digest of this package's code and version: a change to how files are rendered (a
    filter, the finaliser, a context) is a change of every file's inputs."""
    digest = hashlib.sha256(__version__.encode())
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


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
        bytecode_cache=bytecode_cache(),
    )


def templates_digest(environment: jinja2.Environment) -> str:
    """A digest of every template the environment sees (a user's before the shipped ones)."""
    assert environment.loader is not None
    digest = hashlib.sha256()
    for name in sorted(environment.list_templates(extensions=["j2"])):
        source = environment.loader.get_source(environment, name)[0]
        digest.update(f"{name}\0{source}\0".encode())
    return digest.hexdigest()


def _trees(environment: jinja2.Environment, name: str) -> Iterator[tuple[nodes.Node | None, nodes.Node]] | None:
    """Every node, with its parent, of template ``name`` and of every template it extends,
    includes or imports; None when one of them is named by an expression or cannot be read or
    parsed (rendering then reports it). The caller must take a ``ContextReference`` (the whole
    context) as reading anything."""
    found: list[tuple[nodes.Node | None, nodes.Node]] = []
    seen: set[str] = set()
    pending = [name]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        assert environment.loader is not None
        try:
            source, filename, _ = environment.loader.get_source(environment, current)
            tree = environment.parse(source, current, filename)
        except jinja2.TemplateError:  # missing or broken: rendering says so, on every node
            return None
        for parent, node in _walk(tree):
            if isinstance(node, (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
                names = node.template.items if isinstance(node.template, (nodes.List, nodes.Tuple)) else [node.template]
                if not all(isinstance(n, nodes.Const) and isinstance(n.value, str) for n in names):
                    return None
                pending += [n.value for n in names if isinstance(n, nodes.Const)]
            found.append((parent, node))
    return iter(found)


def attributes_read(environment: jinja2.Environment, name: str, variable: str) -> frozenset[str] | None:
    """The attributes of the context variable ``variable`` that template ``name`` can read, and
    every template it extends, includes or imports: ``{{ access_node.https_listen }}`` reads
    ``https_listen``. None when the template may read the whole value or an attribute not known
    before it runs (the variable used alone, passed to a filter or a macro, assigned, an
    attribute read by a computed key or named like a method of a dict (``items``, ``get``), a
    template named by an expression, any attribute that begins with ``_``, a template that
    cannot be read or parsed, which rendering then reports): the renderer then takes the whole
    value as the template's input. The reads are the template's, whatever one render takes:
    ``{% if tls %}{{ access_node.https_port }}{% endif %}`` reads ``https_port``.
    """
    tree = _trees(environment, name)
    if tree is None:
        return None
    read: set[str] = set()
    for parent, node in tree:
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            return None
        if isinstance(node, (nodes.ContextReference, nodes.DerivedContextReference)):
            return None
        if isinstance(node, nodes.Name) and node.name == variable:
            if node.ctx != "load":
                return None
            if isinstance(parent, nodes.Getattr) and parent.node is node and parent.attr not in _METHODS:
                read.add(parent.attr)
            elif (
                isinstance(parent, nodes.Getitem)
                and parent.node is node
                and isinstance(parent.arg, nodes.Const)
                and isinstance(parent.arg.value, str)
                and not parent.arg.value.startswith("_")
            ):
                read.add(parent.arg.value)
            else:
                return None
    return frozenset(read)


# statements whose output a template can change after it was printed (a filter block, a block
# set, a macro or call block, whose output a filter can take), and the names of rendered output
# a template can call (a parent's block, ``self.block()``, a call block's caller)
_CAPTURING = (nodes.FilterBlock, nodes.AssignBlock, nodes.Macro, nodes.CallBlock, nodes.Import, nodes.FromImport)
_OUTPUT_NAMES = frozenset({"super", "self", "caller", "varargs", "kwargs"})


def printed_verbatim(environment: jinja2.Environment, name: str, variable: str) -> bool:
    """Whether template ``name`` (and every template it extends or includes) uses the context
    variable ``variable`` only printed as it is, ``{{ variable }}``, in output no filter or
    expression can take afterwards: then a render with any other value in its place gives the
    same text with that value replaced (the renderer renders an upstream once for access nodes
    that differ only in their ``listen`` value). False for anything else: the variable in an
    expression, a test, a filter, assigned; a filter block, a block set, a macro, a call block,
    an import; a parent's block or ``self.block()`` called inside an expression; the whole
    context read; a template named by an expression or that cannot be read."""
    tree = _trees(environment, name)
    if tree is None:
        return False
    found = list(tree)
    parents = {id(node): parent for parent, node in found}
    for parent, node in found:
        if isinstance(node, (*_CAPTURING, nodes.ContextReference, nodes.DerivedContextReference)):
            return False
        if isinstance(node, nodes.Name) and node.name == variable:
            if node.ctx != "load" or not isinstance(parent, nodes.Output):
                return False
        if isinstance(node, nodes.Name) and node.name in _OUTPUT_NAMES:
            # only super(), caller() or self.block() printed as they are
            callee = parent if node.name == "self" and isinstance(parent, nodes.Getattr) else node
            call = parents.get(id(callee)) if callee is not node else parent
            if not (isinstance(call, nodes.Call) and call.node is callee):
                return False
            if not isinstance(parents.get(id(call)), nodes.Output):
                return False
    return True


_METHODS = frozenset(dir(dict))  # access_node.items(), .get('name'): the whole value


def _walk(node: nodes.Node, parent: nodes.Node | None = None) -> Iterator[tuple[nodes.Node | None, nodes.Node]]:
    """Every node of a template's tree with its parent, depth first."""
    yield parent, node
    for child in node.iter_child_nodes():
        yield from _walk(child, node)
