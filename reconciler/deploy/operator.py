"""The access node's own nginx.conf: the http-level directives it sets that obreconcile renders too.

``http/_default.conf`` sets ``server_names_hash_bucket_size`` and ``server_names_hash_max_size``
when the access node's server names need them (``reconciler.render.renderer.server_names_hash``).
nginx refuses a directive set twice in ``http {}``, so when the operator's configuration (the
nginx.conf ``nginx -t`` reads, and the files it includes outside ``config_dir``) sets one,
``_default.conf`` leaves it out, and when the operator's value is smaller than what the names
need, the push to that node is refused (``settle``), naming the file, the line and the value.

Reading the operator's configuration (``operator_read.read_operator``): the files are fetched over the
transport and parsed with crossplane on the controller, include by include (one round trip per
level of includes), never with ``nginx -T`` (a full parse of the node's configuration, seconds
on a node with 10,000 upstreams). It happens only when the render sets one of the directives,
and its answer is recorded in the live release (``RECORD``, ``RECORD_PATHS``) with the digest of
every file it read: the facts round trip (``record_command``) prints the record and the current
digests of those files (one ``sha256sum``, no process at all on a node without a record), so
later applies read the configuration again only when one of its files changed, appeared or
went away.
"""

from __future__ import annotations

import json
import os
import posixpath
import shlex
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import crossplane  # type: ignore[import-untyped]
from crossplane.analyzer import enter_block_ctx  # type: ignore[import-untyped]
from crossplane.errors import NgxParserBaseException  # type: ignore[import-untyped]

from reconciler.deploy.layout import NodeLayout
from reconciler.errors import NodeError, Step
from reconciler.render.renderer import HASH_DIRECTIVES, RenderedAccessNode, server_names_hash

RECORD = ".obreconcile/operator.json"  # in the release: what the operator's configuration sets
RECORD_PATHS = ".obreconcile/operator.paths"  # nginx.conf and the include patterns, one a line
DEFAULT_CONF = "/etc/nginx/nginx.conf"  # Debian's and nginx.org's --conf-path
MAX_ROUNDS = 16  # levels of includes followed
NEWLINE_IFS = "IFS='\n'"  # shell: field splitting on newlines only, so a pattern's words are its matches
Context = tuple[str, ...]


@dataclass(frozen=True)
class Setting:
    """One directive the operator's configuration sets in ``http {}``, and where."""

    directive: str
    value: str
    file: str
    line: int

    @property
    def number(self) -> int:
        """The value as nginx reads it (a plain number for these directives); 0 when it is not one."""
        return int(self.value) if self.value.isdigit() else 0


@dataclass(frozen=True)
class OperatorConfig:
    """What was read of the operator's configuration: the hash directives it sets in ``http {}``,
    every file read (path -> sha256) and the patterns followed (nginx.conf, then each include)."""

    conf: str
    settings: Mapping[str, Setting] = field(default_factory=dict)
    files: Mapping[str, str] = field(default_factory=dict)
    patterns: tuple[str, ...] = ()

    def to_json(self) -> bytes:
        document = {
            "conf": self.conf,
            "settings": {d: [s.value, s.file, s.line] for d, s in sorted(self.settings.items())},
            "files": dict(sorted(self.files.items())),
            "patterns": list(self.patterns),
        }
        return (json.dumps(document, sort_keys=True, separators=(",", ":")) + "\n").encode()

    @classmethod
    def from_json(cls, raw: str) -> OperatorConfig | None:
        """The record, or None when it cannot be read (then the configuration is read again)."""
        try:
            data = json.loads(raw)
            settings = {str(d): Setting(str(d), str(v), str(f), int(n)) for d, (v, f, n) in data["settings"].items()}
            files = {str(p): str(h) for p, h in data["files"].items()}
            return cls(str(data["conf"]), settings, files, tuple(str(p) for p in data["patterns"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def record(self) -> dict[str, bytes]:
        """The files that record it in a release (relative path -> content)."""
        return {RECORD: self.to_json(), RECORD_PATHS: "".join(f"{p}\n" for p in self.patterns).encode()}


# --- which nginx.conf ---------------------------------------------------------------------------


def conf_from_command(command: str) -> str | None:
    """The nginx.conf a ``test_command`` names with ``-c`` after its ``nginx`` word (relative to
    its ``-p`` prefix), or None (a command that is not nginx's own, or says no ``-c``)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    start = next((i + 1 for i, word in enumerate(words) if posixpath.basename(word) == "nginx"), None)
    if start is None:
        return None
    options: dict[str, str] = {}
    for i in range(start, len(words)):
        word = words[i]
        if word in ("-c", "-p") and i + 1 < len(words):
            options[word] = words[i + 1]
        elif word[:2] in ("-c", "-p") and len(word) > 2:
            options[word[:2]] = word[2:]
    if "-c" not in options:
        return None
    return posixpath.normpath(posixpath.join(options.get("-p", "/"), options["-c"]))


def conf_from_version(text: str) -> str:
    """nginx.conf from ``nginx -V``'s ``--conf-path`` (relative to ``--prefix``); Debian's default."""
    options: dict[str, str] = {}
    for word in text.split():
        if word.startswith("--") and "=" in word:
            key, _, value = word[2:].partition("=")
            options[key] = value
    conf = options.get("conf-path", DEFAULT_CONF)
    return posixpath.normpath(posixpath.join(options.get("prefix", "/"), conf))


# --- parsing (pure, crossplane) -----------------------------------------------------------------


@dataclass(frozen=True)
class ParsedFile:
    settings: tuple[Setting, ...]
    includes: tuple[tuple[str, Context], ...]  # (pattern as written, context of the include)


def parse_file(path: str, text: str, context: Context = ()) -> ParsedFile:
    """The hash directives one file sets in ``http {}`` and the includes it has, by crossplane.

    ``context`` is where the file is included (``("http",)`` for a file included in ``http {}``).
    A file crossplane cannot parse raises ``ValueError`` naming ``path`` and the line."""
    with tempfile.TemporaryDirectory(prefix="obr-operator-") as directory:
        local = os.path.join(directory, "nginx.conf")
        with open(local, "w", encoding="utf-8") as f:
            f.write(text)
        try:
            payload = crossplane.parse(local, single=True, catch_errors=False, check_ctx=False, check_args=False)
        except NgxParserBaseException as e:
            raise ValueError(f"{path}:{e.lineno or 0}: {e.strerror}") from e
    for error in payload["errors"]:  # syntax errors are reported here, whatever catch_errors says
        raise ValueError(f"{path}:{error.get('line') or 0}: {str(error['error']).split(' in ', 1)[0]}")
    settings: list[Setting] = []
    includes: list[tuple[str, Context]] = []

    def walk(statements: Sequence[Mapping[str, Any]], ctx: Context) -> None:
        for statement in statements:
            directive, args = statement["directive"], statement.get("args") or []
            if directive in HASH_DIRECTIVES and ctx == ("http",):
                settings.append(Setting(directive, args[0] if args else "", path, int(statement["line"])))
            elif directive == "include" and args:
                includes.append((args[0], ctx))
            if "block" in statement:
                walk(statement["block"], tuple(enter_block_ctx(statement, ctx)))

    walk(payload["config"][0]["parsed"], context)
    return ParsedFile(tuple(settings), tuple(includes))


def absolute_pattern(pattern: str, conf: str) -> str:
    """An include's pattern as nginx reads it: relative ones are relative to nginx.conf's directory."""
    return posixpath.normpath(posixpath.join(posixpath.dirname(conf), pattern))


def managed(path: str, layout: NodeLayout) -> bool:
    """Whether ``path`` is obreconcile's own (the managed directory or its releases)."""
    return any(path == d or path.startswith(d + "/") for d in (layout.config_dir, layout.releases))


# --- settling a render against it (pure) --------------------------------------------------------


def need(rendered: RenderedAccessNode, directive: str) -> str:
    """Why ``rendered`` sets ``directive`` to its value, in words: '10,000 server names need'."""
    count, longest = rendered.server_names
    by_length = server_names_hash(["x" * longest])["bucket_size"] or 64
    if directive == "server_names_hash_bucket_size" and by_length >= rendered.names_hash[directive]:
        return f"a server name of {longest} characters needs"
    return f"{count:,} server names need"


def settle(rendered: RenderedAccessNode, operator: OperatorConfig) -> RenderedAccessNode:
    """``rendered`` without the hash directives the operator's configuration sets; ``NodeError``
    (step plan) when one of its values is smaller than what the server names need."""
    problems = []
    for directive, value in sorted(rendered.names_hash.items()):
        setting = operator.settings.get(directive)
        if setting is not None and setting.number < value:
            problems.append(
                f"nginx.conf sets {directive} {setting.value} ({setting.file}:{setting.line}); "
                f"{need(rendered, directive)} at least {value}: raise it or remove it"
            )
    if problems:
        raise NodeError(rendered.name, Step.PLAN, "; ".join(problems))
    return rendered.leaving_out(frozenset(operator.settings))


# --- the record in the live release, checked by the facts round trip ----------------------------


def record_command(layout: NodeLayout) -> str:
    """The record (one JSON line) and ``sha256sum`` lines of the files its patterns match now;
    nothing (and no process) when the live release has no record."""
    record = shlex.quote(posixpath.join(layout.config_dir, RECORD))
    paths = shlex.quote(posixpath.join(layout.config_dir, RECORD_PATHS))
    return (
        f'[ -f {paths} ] || exit 0; while IFS= read -r l; do printf "%s\\n" "$l"; done < {record}; '
        f"set --; {NEWLINE_IFS}; while read -r p; do for f in $p; do case $f in {skip_managed(layout)}) continue ;; "
        f'esac; [ -f "$f" ] && set -- "$@" "$f"; done; done < {paths}; [ $# -eq 0 ] || sha256sum -- "$@"'
    )


def skip_managed(layout: NodeLayout) -> str:
    """A shell ``case`` pattern matching the managed directory's files and the releases'."""
    return f"{shlex.quote(layout.config_dir)}/*|{shlex.quote(layout.releases)}/*"


def parse_record(text: str) -> OperatorConfig | None:
    """The recorded configuration when every file it read is unchanged (same paths, same digests);
    None when there is no record or anything changed (it is read again when needed)."""
    first, _, rest = text.partition("\n")
    if not first.strip():
        return None
    record = OperatorConfig.from_json(first)
    if record is None:
        return None
    current = {}
    for line in rest.splitlines():
        digest, _, path = line.partition("  ")
        if len(digest) == 64 and path:
            current[path] = digest
    return record if current == dict(record.files) else None
