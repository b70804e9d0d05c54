"""Load manifest files into documents that remember where every value came from.

YAML is composed by libyaml (CSafeLoader when PyYAML has it) into nodes that carry their
marks; values are then built here, not by PyYAML's constructor, so that the loader can:

- refuse duplicate keys (PyYAML silently keeps the last one),
- refuse every tag but plain YAML's (no ``!!python/...``),
- refuse alias bombs (expanded size is counted, shared nodes are built once),
- refuse deep nesting before libyaml's recursive composer sees it (it crashes near 50,000),
  with the same located message whatever libyaml's own limits (its scanner's, since 0.2.5),
- keep each document's root node, so an error is located by walking the node tree along
  the error's path only when an error is reported (no cost on the happy path).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.resolver import BaseResolver

from reconciler.errors import Problem
from reconciler.manifest.model import whole_number

try:
    _Parser: type = yaml.CSafeLoader
except AttributeError:  # PyYAML built without libyaml
    _Parser = yaml.SafeLoader

DEFAULT_MAX_FILE_SIZE = 256 * 1024 * 1024
MAX_DEPTH = 64
MAX_EXPANDED_NODES = 2_000_000  # per document, after aliases are expanded

PathPart = str | int

_TAG = "tag:yaml.org,2002:"
_STR, _MAP, _SEQ = _TAG + "str", _TAG + "map", _TAG + "seq"
_constructor = SafeConstructor()
_SCALAR_BUILDERS = {
    _TAG + "int": _constructor.construct_yaml_int,
    _TAG + "float": lambda node: whole_number(_constructor.construct_yaml_float(node)),
    _TAG + "bool": _constructor.construct_yaml_bool,
    _TAG + "null": _constructor.construct_yaml_null,
}
# A plain scalar that YAML 1.1 would read as a date stays the text it is.
_TEXT_TAGS = {_STR, _TAG + "timestamp"}

# libyaml's composer recurses once per nesting level: it slows down quadratically and crashes
# near 50,000 levels, before the builder below can refuse anything deeper than MAX_DEPTH.
# Such depths need thousands of brackets, very deep indentation or long runs of '- ';
# only a file showing one of these hints pays for the exact count of libyaml's events.
_SUSPECT_BRACKETS = 4096
_DEEP_INDENT = re.compile(r"^[ \t]{1024,}", re.M)
_INDENT_SPACES = " " * 1024
_COMPACT_RUN = re.compile(r"(?:[-?][ \t]+){16}")
# What every compact run starts with (its first two entries); each has a one-character literal
# prefix, which the regex engine finds much faster than the character class above (a 5 MiB
# file: 12 ms where _COMPACT_RUN alone takes 190).
_COMPACT_STARTS = (re.compile(r"-[ \t]+[-?]"), re.compile(r"\?[ \t]+[-?]"))


class _PlainResolver:
    """PyYAML's resolver, the same answers for less: composing spent a third of its time there.

    ``BaseResolver.resolve`` is called once per node (the composer calls back into Python for
    every scalar) and builds the list of candidate resolvers on every call; here each first
    character's candidates (PyYAML's own table, its wildcard ones appended, in its order) are
    looked up once, and a plain scalar with none (most keys and names) is a string at once.
    Path resolvers, which this loader never registers, would need PyYAML's own resolve: a
    parser that has some keeps it (``_fast``).
    """

    _candidates: ClassVar[dict[str, tuple[tuple[str, re.Pattern[str]], ...]]] = {}
    _wildcard: ClassVar[tuple[tuple[str, re.Pattern[str]], ...]] = ()

    def resolve(self, kind: type[yaml.Node], value: str, implicit: tuple[bool, bool]) -> str:
        if kind is yaml.ScalarNode:
            if implicit[0]:
                for tag, regexp in self._candidates.get(value[:1], self._wildcard):
                    if regexp.match(value):
                        return tag
            return _STR
        return _SEQ if kind is yaml.SequenceNode else _MAP

    def descend_resolver(self, current_node: yaml.Node | None, current_index: object) -> None:
        """No path resolvers: nothing to track (PyYAML's returns at once too, after a test)."""

    def ascend_resolver(self) -> None:
        """As ``descend_resolver``."""


def _fast(parser: type[BaseResolver]) -> type:
    """``parser`` with ``_PlainResolver`` when it has PyYAML's standard resolver only."""
    defaults = (parser.DEFAULT_SCALAR_TAG, parser.DEFAULT_SEQUENCE_TAG, parser.DEFAULT_MAPPING_TAG)
    if parser.yaml_path_resolvers or defaults != (_STR, _SEQ, _MAP):
        return parser
    table = parser.yaml_implicit_resolvers
    wildcard = tuple(table.get(None, ()))
    candidates = {first: (*resolvers, *wildcard) for first, resolvers in table.items() if first is not None}
    attributes = {"_candidates": candidates, "_wildcard": wildcard}
    return type(f"Plain{parser.__name__}", (_PlainResolver, parser), attributes)


_Loader: type = _fast(_Parser)


CachedDocument = tuple[int, tuple[int, int], Any]  # its index in the file, where its root starts, its data


class FileCache(Protocol):
    """What ``load_file`` asks of a cache of loaded files (``reconciler.manifest.cache``)."""

    def get(self, name: str, raw: bytes) -> list[CachedDocument] | None: ...

    def keep(self, name: str, raw: bytes, documents: list[CachedDocument]) -> None: ...


@dataclass(frozen=True)
class Document:
    """One YAML document of a manifest file."""

    file: str
    index: int
    data: Any
    node: yaml.Node | None  # None: from the manifest cache, composed from ``raw`` when located
    raw: bytes | None = field(default=None, repr=False, compare=False)
    start: tuple[int, int] = field(default=(1, 1), repr=False, compare=False)  # a cached root's place

    def root(self) -> yaml.Node:
        """The document's YAML node (a cached document's is composed again, once, on first use)."""
        if self.node is None:
            assert self.raw is not None, "a document has its node or the bytes it was loaded from"
            node = list(yaml.compose_all(self.raw.decode("utf-8"), Loader=_Loader))[self.index]
            object.__setattr__(self, "node", node)
            return node  # type: ignore[no-any-return]
        return self.node

    def locate(self, path: Iterable[PathPart], key: bool = False) -> tuple[int, int]:
        """1-based (line, column) of the value at ``path`` (of its key when ``key``).

        Walks as far as the path exists; a missing field is located at its parent.
        """
        parts = list(path)
        if not parts and self.node is None:
            return self.start  # (every object's source line: no need to compose a cached file)
        node = self.root()
        mark = node.start_mark
        for i, part in enumerate(parts):
            child = _child(node, part, want_key=key and i == len(parts) - 1)
            if child is None:
                break
            node = child
            mark = node.start_mark
        return mark.line + 1, mark.column + 1


def _child(node: yaml.Node, part: PathPart, want_key: bool) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == part:
                return k if want_key else v  # type: ignore[no-any-return]
    elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
        if 0 <= part < len(node.value):
            return node.value[part]  # type: ignore[no-any-return]
    return None


class _Refused(Exception):
    """A document that cannot be built; carries the node at fault."""

    def __init__(self, node: yaml.Node, message: str) -> None:
        super().__init__(message)
        self.node = node
        self.message = message


class _Builder:
    """Builds Python values from composed nodes, with the loader's limits."""

    def __init__(self) -> None:
        self.built: dict[int, tuple[Any, int]] = {}

    def build(self, node: yaml.Node, depth: int = 0) -> tuple[Any, int]:
        """Return (value, expanded size) of ``node``."""
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node), 1
        if depth >= MAX_DEPTH:
            raise _Refused(node, f"nesting deeper than {MAX_DEPTH} levels is not allowed")
        seen = self.built.get(id(node))
        if seen is not None:  # an alias: built once, its expanded size counted every time
            value, size = seen
        elif isinstance(node, yaml.MappingNode):
            value, size = self._mapping(node, depth)
        elif isinstance(node, yaml.SequenceNode):
            value, size = self._sequence(node, depth)
        else:  # pragma: no cover - composer yields only these three
            raise _Refused(node, f"unexpected YAML node {type(node).__name__}")
        if size > MAX_EXPANDED_NODES:
            raise _Refused(
                node,
                f"aliases expand to more than {MAX_EXPANDED_NODES:,} values (an alias bomb?)",
            )
        return value, size

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        tag = node.tag
        if tag in _TEXT_TAGS:
            return node.value
        builder = _SCALAR_BUILDERS.get(tag)
        if builder is None:
            raise _Refused(node, _tag_message(tag))
        try:
            return builder(node)
        except (ConstructorError, ValueError) as e:
            raise _Refused(node, f"cannot read {node.value!r} as {tag[len(_TAG) :]}") from e

    def _mapping(self, node: yaml.MappingNode, depth: int) -> tuple[dict[str, Any], int]:
        if node.tag != _MAP:
            raise _Refused(node, _tag_message(node.tag))
        self.built[id(node)] = ({}, 1)  # placeholder: a recursive alias sees an empty map
        result: dict[str, Any] = {}
        size = 1
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in _TEXT_TAGS:
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag in _SCALAR_BUILDERS:
                    key = key_node.value  # `80: x` is the key "80"; schemas decide if it may be
                else:
                    raise _Refused(key_node, "mapping keys must be plain strings")
            else:
                key = key_node.value
            if key in result:
                raise _Refused(key_node, f"duplicate key {key!r} (YAML would keep only the last one)")
            value, child_size = self.build(value_node, depth + 1)
            result[key] = value
            size += child_size
        self.built[id(node)] = (result, size)
        return result, size

    def _sequence(self, node: yaml.SequenceNode, depth: int) -> tuple[list[Any], int]:
        if node.tag != _SEQ:
            raise _Refused(node, _tag_message(node.tag))
        self.built[id(node)] = ([], 1)
        result = []
        size = 1
        for item in node.value:
            value, child_size = self.build(item, depth + 1)
            result.append(value)
            size += child_size
        self.built[id(node)] = (result, size)
        return result, size


def _tag_message(tag: str) -> str:
    shown = "!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag
    return f"the tag {shown} is not allowed (only plain YAML: maps, lists, strings, numbers, booleans, null)"


def discover(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], list[Problem]]:
    """Manifest files under ``paths``: directories walked in sorted order, hidden entries
    skipped, ``*.yaml``/``*.yml`` taken; a file named explicitly is taken whatever its name."""
    files: list[Path] = []
    problems: list[Problem] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = list(_walk(path))
            if not found:  # a wrong or empty path must never read as "nothing is declared"
                problems.append(Problem(str(path), 0, 0, message="directory holds no manifest files (*.yaml, *.yml)"))
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            problems.append(Problem(str(path), 0, 0, message="no such file or directory"))
    return files, problems


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and name.endswith((".yaml", ".yml")):
                yield Path(dirpath) / name


def load_file(
    path: Path, max_file_size: int = DEFAULT_MAX_FILE_SIZE, cache: FileCache | None = None
) -> tuple[list[Document], list[Problem]]:
    """Every document of one file, or the problems that stop it being read.

    ``cache``: a file whose bytes it knows is not composed again (``reconciler.manifest.cache``)."""
    name = str(path)
    try:
        size = path.stat().st_size
        if size > max_file_size:
            return [], [
                Problem(
                    name, 0, 0, message=f"file is {size:,} bytes, over the limit of {max_file_size:,} (--max-file-size)"
                )
            ]
        raw = path.read_bytes()
    except OSError as e:
        return [], [Problem(name, 0, 0, message=f"cannot read: {e.strerror or e}")]
    if cache is None:
        return load_bytes(name, raw)
    cached = cache.get(name, raw)
    if cached is not None:
        return [Document(name, index, data, None, raw, start) for index, start, data in cached], []
    docs, problems = load_bytes(name, raw)
    if not problems:
        cache.keep(name, raw, [(doc.index, doc.locate(()), doc.data) for doc in docs])
    return docs, problems


def load_bytes(name: str, raw: bytes) -> tuple[list[Document], list[Problem]]:
    """Documents of one manifest file given as bytes (``name`` is used in messages)."""
    if b"\x00" in raw:
        return [], [Problem(name, 1, 1, message="not a text file (it contains NUL bytes)")]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        return [], [Problem(name, line, 1, message="not a UTF-8 text file")]
    deep = _too_deep(text)
    if deep is not None:
        return [], [_too_deep_problem(name, deep)]
    try:
        nodes = list(yaml.compose_all(text, Loader=_Loader))
    except (yaml.MarkedYAMLError, RecursionError) as e:
        # Below the hints' 4,096 brackets, libyaml refuses nesting past its own limit with its
        # own words, and PyYAML's pure-Python composer runs out of stack: either way the same
        # refusal as ours, at the same place.
        deep = _too_deep(text, exact=True)
        if deep is not None:
            return [], [_too_deep_problem(name, deep)]
        if isinstance(e, RecursionError):
            raise
        return [], [_yaml_problem(name, text, e)]
    except yaml.YAMLError as e:
        return [], [Problem(name, 1, 1, message=f"YAML error: {e}")]
    docs: list[Document] = []
    problems: list[Problem] = []
    for index, node in enumerate(nodes):
        if isinstance(node, yaml.ScalarNode) and node.tag == _TAG + "null" and node.value in ("", "~", "null"):
            continue  # an empty document, e.g. after a trailing '---'
        try:
            data, _ = _Builder().build(node)
        except _Refused as e:
            mark = e.node.start_mark
            problems.append(Problem(name, mark.line + 1, mark.column + 1, message=e.message))
            continue
        docs.append(Document(name, index, data, node))
    if not docs and not problems:
        problems.append(Problem(name, 1, 1, message="file holds no manifest documents"))
    return docs, problems


def _too_deep_problem(name: str, where: tuple[int, int]) -> Problem:
    return Problem(name, where[0], where[1], message=f"nesting deeper than {MAX_DEPTH} levels is not allowed")


def _yaml_problem(name: str, text: str, e: yaml.MarkedYAMLError) -> Problem:
    mark = e.problem_mark or e.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    problem = e.problem or "invalid YAML"
    at_tab = mark is not None and text[mark.index : mark.index + 1] == "\t"
    if at_tab or "tab" in problem:
        problem = "a tab character where YAML allows only spaces (indent with spaces)"
    elif e.context:
        problem = f"{e.context}, {problem}"
    return Problem(name, line, column, message=f"YAML syntax error: {problem}")


def _too_deep(text: str, exact: bool = False) -> tuple[int, int] | None:
    """(line, column) where nesting passes MAX_DEPTH, or None.

    Cheap hints first (see _SUSPECT_BRACKETS) unless ``exact``; only when one fires are the
    parser's events counted, stopping at the first level too deep. Depths the hints miss are
    small enough for libyaml's composer, and the builder refuses them.

    libyaml since 0.2.5 refuses flow nesting past 1,000 levels in its scanner, which reads a
    whole flow collection ahead before it yields its first event: its refusal comes before
    the events that would reach depth 65, but after the place where level 65 starts. The text
    up to that refusal is then counted again with libyaml (fast; a cut flow collection is
    refused only after its events), and, if that finds nothing, the whole text with PyYAML's
    pure-Python parser, which reads at most about 1,024 characters ahead (exact, but about
    0.2 s for a thousand brackets: its scanner walks one possible key per flow level per token).
    """
    if not exact:
        brackets = text.count("[") + text.count("{")
        if brackets < _SUSPECT_BRACKETS and not _deep_indent(text) and not _compact_run(text):
            return None
    try:
        return _first_too_deep(text, _Loader)
    except yaml.MarkedYAMLError as e:
        refused_at = e.problem_mark.index if e.problem_mark is not None else None
    except yaml.YAMLError:
        refused_at = None
    if issubclass(_Loader, yaml.SafeLoader):
        return None  # a syntax error: the real parse reports it
    if refused_at:
        try:
            found = _first_too_deep(text[:refused_at], _Loader)
        except yaml.YAMLError:
            found = None
        if found is not None:
            return found
    try:
        return _first_too_deep(text, yaml.SafeLoader)
    except yaml.YAMLError:
        return None  # a syntax error before any level too deep: the real parse reports it


def _deep_indent(text: str) -> bool:
    """Whether a line starts with 1,024 spaces or tabs (``_DEEP_INDENT``; without a tab in the
    text, a substring test says the same in a hundredth of the time)."""
    if "\t" in text:
        return _DEEP_INDENT.search(text) is not None
    return text.startswith(_INDENT_SPACES) or "\n" + _INDENT_SPACES in text


def _compact_run(text: str) -> bool:
    """Whether ``_COMPACT_RUN`` matches: looked for only where one of its starts is."""
    return any(start.search(text) for start in _COMPACT_STARTS) and _COMPACT_RUN.search(text) is not None


def _first_too_deep(text: str, loader: type) -> tuple[int, int] | None:
    depth = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            mark = event.start_mark
            if depth > MAX_DEPTH and mark is not None:
                return mark.line + 1, mark.column + 1
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
    return None


def load_paths(
    paths: Iterable[str | os.PathLike[str]],
    max_file_size: int = DEFAULT_MAX_FILE_SIZE,
    cache: FileCache | None = None,
) -> tuple[list[Document], list[Problem]]:
    """Documents of every manifest file under ``paths``, and every problem met reading them."""
    files, problems = discover(paths)
    docs: list[Document] = []
    for path in files:
        file_docs, file_problems = load_file(path, max_file_size, cache)
        docs.extend(file_docs)
        problems.extend(file_problems)
    return docs, problems
