"""What every command of the CLI shares: the global options' Context, common options, printing
manifest problems. The commands live in main.py (manifests, store), rollout.py (plan, apply) and serve.py.
"""

from __future__ import annotations

import gc
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from reconciler.errors import ManifestError, Problem
from reconciler.manifest.load import DEFAULT_MAX_FILE_SIZE

if TYPE_CHECKING:
    from rich.console import Console

    from reconciler.manifest.model import DesiredState
    from reconciler.store import Store, TemplateSet
    from reconciler.transport import SSHSettings

DEFAULT_STORE = "sqlite:///.obreconcile/state.db"


@dataclass
class Context:
    """What every command gets from the global options.

    ``out`` and ``err`` are rich Consoles made on first use (importing rich costs a CLI start
    ~60 ms; JSON output never needs it).
    """

    store: str
    output: str
    store_is_default: bool = False  # no --store, variable or configuration file named one
    config: Path | None = None  # the shared configuration file read (obreconcile.yaml)

    def open_store(self) -> Store:
        """The store of ``--store``; only the default one's directory is created when missing."""
        from reconciler.store import open_store

        return open_store(self.store, create_directory=self.store_is_default)

    @cached_property
    def out(self) -> Console:
        return _console(stderr=False)

    @cached_property
    def err(self) -> Console:
        return _console(stderr=True)

    def emit_json(self, document: Any) -> None:
        click.echo(json.dumps(document, indent=2, sort_keys=True))


def _console(*, stderr: bool) -> Console:
    from rich.console import Console

    # soft_wrap: a long line stays one line (grep-able, and rich never breaks a path or a diff)
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


pass_context = click.make_pass_decorator(Context)

manifest_paths = click.argument(
    "paths", nargs=-1, required=True, type=click.Path(exists=False, dir_okay=True, file_okay=True)
)
max_file_size = click.option(
    "--max-file-size",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_FILE_SIZE,
    show_default=True,
    help="Largest manifest file read, in bytes.",
)


verify_timeout_option = click.option(
    "--verify-timeout",
    type=click.FloatRange(0.5),
    default=10.0,
    show_default=True,
    help="Seconds for nginx to serve the new revision after a reload.",
)
"""apply's and serve's: a node whose nginx takes longer (a large configuration) is rolled back."""


def connection_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """How commands that reach access nodes connect (plan, apply, serve, converge)."""
    options = [
        click.option(
            "--forks",
            type=click.IntRange(1, 500),
            default=10,
            show_default=True,
            help="Access nodes worked on in parallel.",
        ),
        click.option(
            "--known-hosts",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="known_hosts file (default: ~/.ssh/known_hosts or UserKnownHostsFile).",
        ),
        click.option(
            "--accept-new-host-keys",
            is_flag=True,
            help="Record the host key of a host never seen before (a changed key is always refused).",
        ),
        click.option(
            "--connect-timeout",
            type=click.FloatRange(0.1),
            default=10.0,
            show_default=True,
            help="Seconds to set up an SSH connection.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def ssh_settings(options: dict[str, Any]) -> SSHSettings:
    """The SSHSettings of ``connection_options``' values (imported here: paramiko comes with it)."""
    from reconciler.transport import SSHSettings

    return SSHSettings(
        known_hosts=options["known_hosts"],
        accept_new_host_keys=options["accept_new_host_keys"],
        connect_timeout=options["connect_timeout"],
    )


templates_option = click.option(
    "--templates",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Directory of templates used before the shipped ones (*.j2). apply records them in the store: "
    "serve and converge render with the store's templates only.",
)


def declared_templates(directory: str | None) -> TemplateSet | None:
    """The templates of ``--templates`` (or obreconcile.yaml's) as the store records them: every
    *.j2 file, and where they are relative to the manifests' root (the current directory's)."""
    if directory is None:
        return None
    from reconciler.manifest.root import manifests_root, relative_to_root
    from reconciler.render.templates import read_templates
    from reconciler.store import TemplateSet

    path = Path(directory).absolute()
    origin = relative_to_root(str(path), manifests_root([path.parent]))
    return TemplateSet(read_templates(directory), origin)


def report_problems(ctx: Context, problems: list[Problem]) -> None:
    if ctx.output == "json":
        ctx.emit_json({"valid": False, "errors": [p.to_dict() for p in problems]})
        return
    for problem in problems:
        ctx.out.print(str(problem), markup=False, highlight=False, soft_wrap=True)
    files = len({p.file for p in problems})
    ctx.err.print(
        f"[red]invalid[/red]: {len(problems)} problem{'s' * (len(problems) != 1)} in {files} file{'s' * (files != 1)}"
    )


def load_or_exit(ctx: Context, paths: tuple[str, ...], max_file_size: int) -> DesiredState:
    """The manifests' desired state; on problems print them all and exit 1."""
    try:
        return load_kept(paths, max_file_size)
    except ManifestError as e:
        report_problems(ctx, e.problems)
        exit_with(1)


def load_kept(paths: tuple[str, ...], max_file_size: int) -> DesiredState:
    """``load_desired_state`` for a command that keeps the state until it exits: what is left
    of the load is frozen (``gc.freeze``), so that no later collection walks it.

    The load runs without cyclic collection (``gc_pause``); re-enabled at its end, the next
    allocation collected the youngest generation, which then held every object the load had
    allocated and kept (10,000 upstreams: about 0.9 s), and later full collections walked them
    all again. Freezing moves them aside at no cost; the load's garbage is freed by reference
    counting before, and the frozen objects are the process's until it exits.

    Files loaded before with the same bytes come from the manifest cache (the user's cache
    directory: ``reconciler.manifest.cache``); every check runs on them all the same.
    """
    from reconciler.manifest.cache import ManifestCache
    from reconciler.manifest.validate import load_desired_state

    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return load_desired_state(paths, max_file_size, ManifestCache())
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def exit_with(code: int) -> NoReturn:
    sys.exit(code)
