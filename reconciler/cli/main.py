"""The `obreconcile` command line: parse options, call the core, print. Nothing else lives here.

Every option can also be set by an ``OBRECONCILE_<OPTION>`` environment variable, the option's
name in capitals with ``_`` for ``-`` (``OBRECONCILE_STORE``, ``OBRECONCILE_FORKS``,
``OBRECONCILE_KNOWN_HOSTS``, ``OBRECONCILE_DETAILED_EXITCODE=1``); each command's ``--help``
lists them. Values go through the option's own checks (``OBRECONCILE_FORKS=0`` is refused as
``--forks 0`` is). ``--store`` and ``--output`` are accepted after the command too. Defaults
come from the shared configuration file (``reconciler/cli/config.py``) when there is one.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from reconciler.cli.context import (
    DEFAULT_STORE,
    Context,
    load_kept,
    load_or_exit,
    manifest_paths,
    max_file_size,
    pass_context,
    report_problems,
)
from reconciler.errors import ManifestError, ObreconcileError

if TYPE_CHECKING:
    from reconciler.cli.status import StoreStatus
    from reconciler.manifest.model import DesiredState

# Commands defined in other modules, imported only when run (or listed by --help): a CLI start
# imports what its command uses (plan/apply: paramiko; serve: aiohttp, asyncio), nothing more.
LAZY_COMMANDS = {
    "plan": "reconciler.cli.rollout:plan_command",
    "apply": "reconciler.cli.rollout:apply_command",
    "converge": "reconciler.cli.serve:converge_command",
    "serve": "reconciler.cli.serve:serve_command",
}


ENVVAR_PREFIX = "OBRECONCILE"


def _late_global(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """``--store`` or ``--output`` given after the command: it wins over the group's."""
    if value is None or ctx.get_parameter_source(param.name or "") is not click.core.ParameterSource.COMMANDLINE:
        return
    shared = ctx.find_object(Context)
    assert shared is not None
    if param.name == "store":
        shared.store, shared.store_is_default = value, False
    else:
        shared.output = value


def share_global_options(command: click.Command) -> click.Command:
    """Every option of ``command`` from ``OBRECONCILE_<OPTION>`` (click's own prefix would be
    ``OBRECONCILE_<COMMAND>_<OPTION>``), listed in ``--help``; ``--store`` and ``--output``
    accepted after the command name as well."""
    command.context_settings.setdefault("auto_envvar_prefix", ENVVAR_PREFIX)
    names = {p.name for p in command.params}
    if "store" not in names:
        command.params.append(
            click.Option(
                ["--store"],
                metavar="URL",
                expose_value=False,
                allow_from_autoenv=False,
                callback=_late_global,
                help="The same as obreconcile --store (OBRECONCILE_STORE), given after the command.",
            )
        )
    if "output" not in names:
        command.params.append(
            click.Option(
                ["--output"],
                type=click.Choice(["text", "json"]),
                expose_value=False,
                allow_from_autoenv=False,
                callback=_late_global,
                help="The same as obreconcile --output (OBRECONCILE_OUTPUT), given after the command.",
            )
        )
    for param in command.params:
        if isinstance(param, click.Option) and param.allow_from_autoenv:
            param.show_envvar = True
            long = max(param.opts, key=len).lstrip("-").replace("-", "_")
            if param.envvar is None and long != param.name:  # --out (out_file), --name (host_name)
                param.envvar = f"{ENVVAR_PREFIX}_{long.upper()}"
    return command


class LazyGroup(click.Group):
    """A click group whose ``lazy`` subcommands (name -> ``module:attribute``) are imported on use.

    Every subcommand's options read ``OBRECONCILE_<OPTION>`` (``share_global_options``), and
    the shared configuration file gives their defaults (click's ``default_map``).
    """

    def __init__(self, *args: Any, lazy: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        super().add_command(share_global_options(cmd), name)

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        from reconciler.cli.config import find_config, load_config

        config = load_config(find_config())
        extra.setdefault("default_map", config.default_map())
        context = super().make_context(info_name, args, parent, **extra)
        context.meta["obreconcile.config"] = config.path
        return context

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """The subcommand, imported; then the objects of start-up are frozen (see ``main``)."""
        resolved = super().resolve_command(ctx, args)
        gc.freeze()  # every later collection skips them: imported modules live as long as the process
        gc.enable()
        return resolved

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module, _, attribute = self.lazy[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attribute)
            if not isinstance(command, click.Command):
                raise TypeError(f"{self.lazy[cmd_name]} is not a click command")
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from reconciler import __version__

    click.echo(f"obreconcile, version {__version__}")
    ctx.exit()


@click.group(
    cls=LazyGroup,
    lazy=LAZY_COMMANDS,
    context_settings={"auto_envvar_prefix": "OBRECONCILE", "help_option_names": ["-h", "--help"]},
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    allow_from_autoenv=False,
    callback=_print_version,
    help="Show the version and exit.",
)
@click.option(
    "--store",
    default=None,
    show_envvar=True,
    help=f"Desired-state store: sqlite:///PATH or etcd://HOST:PORT[/PREFIX] (default: the shared configuration's, else {DEFAULT_STORE}). An SQLite file's directory must exist.",
)
@click.option(
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    show_envvar=True,
    help="text for people, json (one document on stdout) for CI.",
)
@click.pass_context
def cli(ctx: click.Context, store: str | None, output: str) -> None:
    """obreconcile: declarative reconciler for fleets of nginx load balancers.

    Validate YAML manifests of upstreams, access nodes, checks, users and groups; render
    nginx configuration; push it to every access node over SSH and reload nginx safely.

    Every option also reads OBRECONCILE_<OPTION> (OBRECONCILE_STORE, OBRECONCILE_FORKS...);
    defaults come from obreconcile.yaml, the nearest from the current directory up.
    """
    ctx.obj = Context(store or DEFAULT_STORE, output, store is None, ctx.meta.get("obreconcile.config"))


@cli.command()
@manifest_paths
@max_file_size
@pass_context
def validate(ctx: Context, paths: tuple[str, ...], max_file_size: int) -> None:
    """Load and validate manifests; touch nothing else.

    PATHS are files or directories (walked in sorted order, hidden entries skipped,
    *.yaml and *.yml taken). Every problem is reported at once as
    FILE:LINE:COL: Kind/name: field: message. Exit 0 when valid, 1 when not.
    """
    try:
        state = load_kept(paths, max_file_size)
    except ManifestError as e:
        report_problems(ctx, e.problems)
        sys.exit(1)
    counts = _counts(state)
    if ctx.output == "json":
        ctx.emit_json({"valid": True, "errors": [], "objects": counts})
        return
    summary = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
    ctx.out.print(f"[green]valid[/green]: {summary or 'no objects'}")


def _counts(state: DesiredState) -> dict[str, int]:
    from reconciler.manifest.model import KINDS

    return {kind: len(state.of_kind(kind)) for kind in KINDS}


@cli.command("render")
@manifest_paths
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Write each access node's files under DIR/<access node>/.",
)
@click.option(
    "--templates",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Directory of templates used before the shipped ones (see docs/render.md).",
)
@click.option("--limit", multiple=True, metavar="NAME", help="Only this access node (repeatable).")
@max_file_size
@pass_context
def render_command(
    ctx: Context,
    paths: tuple[str, ...],
    out_dir: Path,
    templates: str | None,
    limit: tuple[str, ...],
    max_file_size: int,
) -> None:
    """Render each access node's nginx configuration into DIR/<access node>/.

    Backend hostnames are resolved now (a name that does not resolve is a warning, see
    docs/render.md); every backend counts as up. Files the new rendering no longer has are
    removed; nothing else in DIR is touched. An upstream the renderer refuses (a template
    error, a refused value) is reported and its files in DIR are left as they are, the rest
    is written. Exit 0, or 1 when the manifests are invalid or an upstream was refused.
    """
    from reconciler.render.directory import write_access_node
    from reconciler.render.renderer import Renderer

    state = load_or_exit(ctx, paths, max_file_size)
    rendered = Renderer(templates).render(state, limit=limit or None)
    results = {name: write_access_node(out_dir, node) for name, node in rendered.items()}
    if ctx.output == "json":
        ctx.emit_json(
            {
                "access_nodes": [
                    {
                        "name": name,
                        "revision": node.revision,
                        "directory": str(results[name].directory),
                        "files": list(node.files),
                        "written": list(results[name].written),
                        "removed": list(results[name].removed),
                        "warnings": list(node.warnings),
                        "refused_upstreams": [r.to_dict() for r in node.refused],
                    }
                    for name, node in rendered.items()
                ]
            }
        )
    else:
        from rich.markup import escape  # text only: JSON output never imports rich

        for name, node in rendered.items():
            done = results[name]
            for warning in node.warnings:
                ctx.err.print(f"[yellow]warning[/yellow]: {name}: {escape(warning)}", highlight=False, soft_wrap=True)
            for refused in node.refused:
                ctx.err.print(
                    f"[bold red]refused[/] {escape(name)}: {escape(str(refused))}",
                    highlight=False,
                    soft_wrap=True,
                )
            ctx.out.print(
                f"{name}: revision {node.revision}, {len(node.files)} files in {done.directory} "
                f"({len(done.written)} written, {len(done.removed)} removed, {len(node.warnings)} warnings"
                + (f", {len(node.refused)} upstreams refused" if node.refused else "")
                + ")",
                markup=False,
                soft_wrap=True,
            )
    if any(node.refused for node in rendered.values()):
        sys.exit(1)


@cli.command("hash-password")
@pass_context
def hash_password_command(ctx: Context) -> None:
    """Read a password without echo and print its argon2id hash.

    On a terminal the password is asked twice; otherwise the first line of standard input
    is taken, so that `printf '%s\\n' "$PW" | obreconcile hash-password` works in scripts.
    """
    from reconciler.passwords import hash_password, new_password_problem

    if sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    problem = new_password_problem(password)
    if problem:
        raise ObreconcileError(f"refusing this password: {problem}")
    digest = hash_password(password)
    if ctx.output == "json":
        ctx.emit_json({"password_hash": digest})
    else:
        click.echo(digest)


@cli.command()
@click.option(
    "--detailed-exitcode",
    is_flag=True,
    help="Exit 2 when an access node is not converged (failed, behind, never deployed, orphaned) "
    "or left an upstream refused.",
)
@pass_context
def status(ctx: Context, detailed_exitcode: bool) -> None:
    """Show the store's health and revision, the master, and each access node's last deploy.

    Per access node: the revision deployed there; converged, behind (converged at an older
    revision than the store's), failed, or orphaned (deployed once, its AccessNode removed since:
    its nginx keeps its last files); and the last error ("never deployed" until apply has run).
    An upstream the renderer refused on a node (left at its last good rendering) is listed
    under the node. Exit 0; 1 when the store cannot be read; with --detailed-exitcode 2 when
    any access node is not converged or has a refused upstream (a CI gate).
    """
    from reconciler.cli.status import read_status

    with ctx.open_store() as store:
        report = read_status(store)
    _print_status(ctx, report)
    if detailed_exitcode and not report.converged:
        sys.exit(2)


def _print_status(ctx: Context, report: StoreStatus) -> None:
    if ctx.output == "json":
        ctx.emit_json(report.to_dict())
        return
    health = "[green]healthy[/green]" if report.healthy else "[red]unhealthy[/red]"
    ctx.out.print(f"store     {report.kind} {report.url}: {health} ({report.detail})", soft_wrap=True)
    ctx.out.print(f"revision  {report.revision}")
    ctx.out.print(f"master    {report.master or 'none'}", markup=False)
    ctx.out.print(f"access nodes: {len(report.access_nodes)}")
    for node in report.access_nodes:
        line = f"  {node.name}  {node.state}"
        if node.deployed_revision is not None:
            behind = f" (store at {report.revision})" if node.deployed_revision != report.revision else ""
            line += f" at revision {node.deployed_revision}{behind}"
        if node.error:
            line += f": {node.error}"
        ctx.out.print(line, markup=False, soft_wrap=True)
        for refused in node.refused:  # RefusedUpstream.to_dict()'s words
            ctx.out.print(
                f"    refused upstream {refused.get('upstream')}: {refused.get('message')}; kept as it is live: "
                f"{', '.join(refused.get('paths', ()))}",
                markup=False,
                soft_wrap=True,
            )


def main() -> None:
    """Entry point: run the CLI; an ObreconcileError is printed, never a traceback.

    Start-up only allocates what the process keeps (modules, classes, schemas): the garbage
    collector stays off until the command is imported (~25 ms of CPU), and at exit every
    object is frozen, so that the interpreter's final collection does not walk them all
    once more (~50 ms).
    """
    gc.disable()
    try:
        _run(cli)
    finally:
        gc.freeze()


def _name_the_variable(error: click.ClickException) -> click.ClickException:
    """A bad value that came from ``OBRECONCILE_<OPTION>`` says so (click names only the option)."""
    if not isinstance(error, click.BadParameter) or error.ctx is None or error.param is None:
        return error
    param, ctx = error.param, error.ctx
    if not param.name or ctx.get_parameter_source(param.name) is not click.core.ParameterSource.ENVIRONMENT:
        return error
    variable = param.envvar or f"{ctx.auto_envvar_prefix}_{param.name.upper()}"
    return click.BadParameter(f"{error.message} (from the environment variable {variable})", ctx, param)


def _run(command: Callable[..., Any]) -> None:
    try:
        command(standalone_mode=False, prog_name="obreconcile")
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        _name_the_variable(e).show()
        sys.exit(e.exit_code)
    except ObreconcileError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as e:
        if os.environ.get("OBRECONCILE_DEBUG"):
            raise
        click.echo(f"internal error: {type(e).__name__}: {e} (set OBRECONCILE_DEBUG=1 for a traceback)", err=True)
        sys.exit(1)
