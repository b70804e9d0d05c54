"""Reading the access node's own nginx configuration over the transport (see ``operator``).

nginx.conf (``-c`` of the node's test command, else nginx's ``--conf-path``) and every file it
includes outside ``config_dir`` are fetched, one round trip per level of includes, and parsed
on the controller by crossplane (``operator.parse_file``). Only when the render sets a hash
directive and the live release's record of the last reading is missing or stale.
"""

from __future__ import annotations

import hashlib
import posixpath
import secrets
import shlex

from reconciler.deploy.facts import Facts
from reconciler.deploy.layout import NodeLayout
from reconciler.deploy.operator import (
    MAX_ROUNDS,
    NEWLINE_IFS,
    Context,
    OperatorConfig,
    Setting,
    absolute_pattern,
    conf_from_command,
    conf_from_version,
    managed,
    parse_file,
    settle,
    skip_managed,
)
from reconciler.errors import NodeError, Step
from reconciler.manifest.model import AccessNode
from reconciler.render.renderer import RenderedAccessNode
from reconciler.transport.base import Transport


def files_command(pattern: str, layout: NodeLayout, mark: str) -> str:
    """Print every regular file ``pattern`` matches (outside the managed directory), each after a
    ``<mark> <path>`` line. The shell expands the glob as nginx would (sorted, no dot files)."""
    return (
        f"p={shlex.quote(pattern)}; {NEWLINE_IFS}; for f in $p; do case $f in {skip_managed(layout)}) continue ;; esac; "
        f'[ -f "$f" ] || continue; printf \'%s %s\\n\' {mark} "$f"; cat -- "$f"; printf \'\\n\'; done'
    )


def split_files(stdout: bytes, mark: str) -> dict[str, bytes]:
    """Path -> content from ``files_command``'s output (the newline after each file is not its own)."""
    out: dict[str, bytes] = {}
    for piece in stdout.split(f"{mark} ".encode())[1:]:
        path, _, content = piece.partition(b"\n")
        out[path.decode("utf-8", "replace")] = content[:-1] if content.endswith(b"\n") else content
    return out


def read_operator(node: AccessNode, transport: Transport) -> OperatorConfig:
    """Read the operator's configuration of ``node``: nginx.conf (``-c`` of its test command, else
    nginx's ``--conf-path``) and every file it includes outside ``config_dir``, one round trip per
    level of includes. ``NodeError`` (step plan) when nginx.conf is missing or cannot be parsed."""
    layout = NodeLayout.of(node)
    conf = conf_from_command(node.nginx.test_command)
    if conf is None:
        version = transport.run("nginx -V 2>&1")
        conf = conf_from_version(version.text)
    settings: dict[str, Setting] = {}
    files: dict[str, str] = {}
    patterns: list[str] = []
    pending: list[tuple[str, Context]] = [(conf, ())]
    for _ in range(MAX_ROUNDS):
        if not pending:
            break
        mark = f"obr-{secrets.token_hex(8)}"
        commands = {f"p{i}": files_command(p, layout, mark) for i, (p, _) in enumerate(pending)}
        results = transport.run_batch(commands)
        following: list[tuple[str, Context]] = []
        for i, (pattern, context) in enumerate(pending):
            patterns.append(pattern)
            found = split_files(results[f"p{i}"].stdout, mark)
            if pattern == conf and conf not in found:
                raise NodeError(node.name, Step.PLAN, f"cannot read the node's nginx.conf {conf}")
            for path, content in found.items():
                if path in files:
                    continue
                files[path] = hashlib.sha256(content).hexdigest()
                try:
                    parsed = parse_file(path, content.decode("utf-8", "replace"), context)
                except ValueError as e:
                    raise NodeError(node.name, Step.PLAN, f"cannot parse the node's nginx configuration: {e}") from e
                for setting in parsed.settings:
                    settings.setdefault(setting.directive, setting)
                for include, ctx in parsed.includes:
                    absolute = absolute_pattern(include, conf)
                    if not managed(absolute, layout) and absolute not in patterns:
                        if all(absolute != p for p, _ in following):
                            following.append((absolute, ctx))
        pending = following
    else:
        if pending:
            raise NodeError(node.name, Step.PLAN, f"{conf}: includes nest deeper than {MAX_ROUNDS} levels")
    return OperatorConfig(conf, settings, files, tuple(patterns))


def settled(
    node: AccessNode, rendered: RenderedAccessNode, facts: Facts, transport: Transport
) -> tuple[RenderedAccessNode, OperatorConfig | None, bool]:
    """``rendered`` settled against the operator's configuration (only when it sets a hash
    directive, and nginx is installed: the plan refuses a node without it), that configuration,
    and whether it was read now (the live release's record was missing or stale)."""
    if not rendered.names_hash or facts.nginx_version is None:
        return rendered, None, False
    operator = facts.operator if facts.operator is not None else read_operator(node, transport)
    return settle(rendered, operator), operator, facts.operator is None


def record_now(transport: Transport, layout: NodeLayout, operator: OperatorConfig) -> None:
    """Write the record of ``operator`` into the live release (an apply that changes nothing
    else), each file renamed into place; a failure only means the next apply reads it again."""
    parts = []
    for path, content in operator.record().items():
        target = shlex.quote(posixpath.join(layout.config_dir, path))
        parts.append(f"printf '%s' {shlex.quote(content.decode())} > {target}.tmp && mv -f -- {target}.tmp {target}")
    transport.run(" && ".join(parts))
