"""`obreconcile plan` and `obreconcile apply`: click commands only; the work is in reconciler.deploy.fleet."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from reconciler.cli.context import (
    Context,
    connection_options,
    declared_templates,
    load_or_exit,
    max_file_size,
    pass_context,
    ssh_settings,
    templates_option,
    verify_timeout_option,
)
from reconciler.cli.interrupt import EXIT_INTERRUPTED, interruptible
from reconciler.cli.report import (
    apply_document,
    escape,
    plan_document,
    plan_summary,
    print_health,
    print_node_plan,
    print_plan_summary,
    print_refused_results,
    print_sync,
    refused_summary,
    result_line,
    results_ok,
)
from reconciler.deploy.apply import ApplySettings, NodeResult, default_deployer
from reconciler.deploy.fleet import (
    FleetSettings,
    apply_fleet,
    merged_state,
    plan_fleet,
    prefetch_connections,
    stored_health,
    targets,
)
from reconciler.deploy.plan import StoreRef
from reconciler.deploy.planfile import SavedPlan, read_saved_plan, write_saved_plan
from reconciler.errors import DestroyRefused, PlanError
from reconciler.manifest.model import DesiredState
from reconciler.render.renderer import Health, Renderer
from reconciler.store import Store, TemplateSet
from reconciler.store.sync import plan_sync, sync_manifests
from reconciler.transport import ConnectionPool


def fleet_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options plan and apply share (SPEC.md §2's common options)."""
    options: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
        click.option("--limit", multiple=True, metavar="NAME", help="Only this access node (repeatable)."),
        connection_options,
        templates_option,
        click.option(
            "--prune-api",
            is_flag=True,
            help="Also remove objects created through the API that the manifests do not declare.",
        ),
        click.option("--force", is_flag=True, help="Push even to nodes that run a newer store revision (fencing)."),
        max_file_size,
    ]
    return functools.reduce(lambda c, option: option(c), reversed(options), command)


def _settings(options: dict[str, Any], **apply: Any) -> FleetSettings:
    return FleetSettings(
        forks=options["forks"],
        serial=options.get("serial"),
        limit=tuple(options["limit"]),
        ssh=ssh_settings(options),
        apply=ApplySettings(force=options["force"], **apply),
    )


@click.command("plan")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@fleet_options
@click.option("--detailed-exitcode", is_flag=True, help="Exit 2 when there are changes, 0 when none, 1 on error.")
@click.option(
    "--out",
    "out_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Save the plan for `apply PLAN.json`.",
)
@pass_context
def plan_command(
    ctx: Context, /, paths: tuple[str, ...], detailed_exitcode: bool, out_file: Path | None, **options: Any
) -> None:
    """Show what apply would do: manifests against the store, the store against every access node.

    Reads only: nothing is written to the store or to any access node. Per access node the
    plan lists upstreams and nodes that change, then each file with a unified diff, and any
    drift (files changed by hand). Exit 0, or with --detailed-exitcode 2 when there are
    changes; 1 when the manifests are invalid or an access node cannot be planned.
    """
    manifests = load_or_exit(ctx, paths, options["max_file_size"])
    settings = _settings(options)
    declared = declared_templates(options["templates"])
    with ConnectionPool() as pool:
        prefetch_connections(manifests, settings, pool)
        renderer = Renderer(declared.sources if declared else None)
        with ctx.open_store() as store:
            renderer.resolver.remember(store.known_addresses())  # (plan records nothing back)
            templates = templates_change(declared, store.templates())
            sync = plan_sync(store, manifests, options["prune_api"])
            state = merged_state(manifests, store, sync.kept_api)
            ref = StoreRef(store.store_id(), sync.base_revision + (1 if sync.changes else 0))
            targets(state, settings.limit)
            health = stored_health(store, state)
            results = plan_fleet(state, ref, renderer, settings, pool=pool, health=health.health)
            store_url, created = store.url, store.created
    if out_file is not None:
        write_saved_plan(
            out_file, manifests, ref.store_id, sync.base_revision, options["prune_api"], settings.limit, results
        )
    document = plan_document(store_url, sync, results, health, created)
    document["templates"] = templates
    document["changes"] = document["changes"] or templates["change"]
    if ctx.output == "json":
        ctx.emit_json(document)
    else:
        print_sync(ctx.out, store_url, sync, created)
        if templates["change"]:
            ctx.out.print(f"  [yellow]~[/] {escape(templates['text'])}", highlight=False, soft_wrap=True)
        print_health(ctx.out, health)
        for result in results:
            print_node_plan(ctx.out, result)
        print_plan_summary(ctx.out, plan_summary(sync, results))
        if out_file is not None:
            ctx.out.print(
                f"Saved the plan to {out_file}: `obreconcile apply {out_file}` applies exactly this.", markup=False
            )
    if any(r.plan is None or r.plan.refused_upstreams for r in results):  # apply would exit 1 too
        sys.exit(1)
    if detailed_exitcode and document["changes"]:
        sys.exit(2)


@click.command("apply")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@fleet_options
@click.option(
    "--serial",
    type=click.IntRange(min=1),
    default=None,
    help="Roll out in batches of N access nodes; stop after a batch with a failure.",
)
@click.option(
    "--lock-timeout",
    type=click.FloatRange(1),
    default=60.0,
    show_default=True,
    help="Seconds to wait for another apply's lock on a node.",
)
@verify_timeout_option
@click.option(
    "--allow-destroy",
    is_flag=True,
    help="Apply even when the sync removes every object, an AccessNode or most of the store.",
)
@pass_context
def apply_command(
    ctx: Context,
    /,
    paths: tuple[str, ...],
    lock_timeout: float,
    verify_timeout: float,
    allow_destroy: bool,
    **options: Any,
) -> None:
    """Sync the manifests into the store, then converge every access node.

    PATHS are manifest files and directories, or one plan saved by `plan --out PLAN.json`
    (refused when the store or any access node changed since it was made). On each access
    node: lock, stage the new release, nginx -t, switch, reload, verify, roll back on failure.
    A node that fails never stops the others (but --serial stops after a failed batch).
    A sync that removes every object, an AccessNode or more than half of the store (and more
    than 10 objects) is refused, nothing written, unless --allow-destroy.
    SIGINT or SIGTERM: no node is started any more, the ones in hand finish, every result is
    recorded and printed, exit 130 (a second signal leaves at once).
    Exit 0 when every targeted access node converged, 1 otherwise.
    """
    settings = _settings(options, lock_timeout=lock_timeout, verify_timeout=verify_timeout)
    saved = read_saved_plan(Path(paths[0])) if len(paths) == 1 and paths[0].endswith(".json") else None
    manifests = saved.manifests if saved else load_or_exit(ctx, paths, options["max_file_size"])
    if saved:
        settings = FleetSettings(**{**settings.__dict__, "limit": saved.limit})
    prune_api = saved.prune_api if saved else options["prune_api"]
    declared = declared_templates(options["templates"])
    with ConnectionPool() as pool:
        prefetch_connections(manifests, settings, pool)
        renderer = Renderer(declared.sources if declared else None)
        with ctx.open_store() as store:
            renderer.resolver.remember(store.known_addresses())  # a name that stops resolving keeps them
            if saved:
                _check_saved_plan(saved, store, manifests, renderer, settings, pool)
            sync = plan_sync(store, manifests, prune_api)
            state = merged_state(manifests, store, sync.kept_api)
            targets(state, settings.limit)  # a bad --limit is refused before the store is written
            destroy = sync.destroy
            if destroy is not None and not allow_destroy:
                raise DestroyRefused(destroy.refusal())
            with interruptible() as interrupt:
                settings = replace(settings, apply=replace(settings.apply, interrupt=interrupt))
                synced = sync_manifests(store, manifests, prune_api, sync)
                if templates_change(declared, store.templates())["change"]:  # before any push: serve renders with them
                    store.record_templates(declared)
                ref = StoreRef(store.store_id(), synced.revision)
                expected = saved.expected_facts() if saved else None
                health = stored_health(store, state)
                results = _converge(ctx, state, ref, renderer, settings, expected, pool, health.health)
            store.record_addresses(renderer.resolver.learned())
            by = f"apply {settings.apply.deployed_by or default_deployer()}"
            store.record_deploys([r for x in results if (r := x.record(synced.revision, by)) is not None])
            sync_summary = {
                "changes": [{"action": str(c.action), "kind": c.kind, "name": c.name} for c in synced.changes],
                "writes": synced.writes,
            }
            store_url = store.url
    interrupted = interrupt.is_set()
    if ctx.output == "json":
        ctx.emit_json(apply_document(store_url, synced.revision, results, sync_summary) | {"interrupted": interrupted})
    else:
        failed = [r for r in results if not r.ok]
        ctx.out.print(
            f"[bold]Apply:[/] store revision {synced.revision} ({synced.writes} objects written); "
            f"{sum(r.status == 'converged' for r in results)} converged, {sum(r.status == 'unchanged' for r in results)} "
            f"unchanged, {sum(r.status == 'failed' for r in results)} failed, {sum(r.status == 'skipped' for r in results)} skipped.",
            highlight=False,
            soft_wrap=True,
        )
        if refused := refused_summary(results):
            ctx.out.print(f"[bold red]{escape(refused)}[/]", highlight=False, soft_wrap=True)
        for result in failed:
            ctx.err.print(result_line(result), highlight=False, soft_wrap=True)
        print_refused_results(ctx.err, results)
        if interrupted:
            ctx.err.print("[yellow]interrupted[/]: the access nodes above that were skipped were not changed")
    if interrupted:
        sys.exit(EXIT_INTERRUPTED)
    if not results_ok(results):  # a node failed, or an upstream was refused (the rest converged)
        sys.exit(1)


def templates_change(declared: TemplateSet | None, stored: TemplateSet | None) -> dict[str, Any]:
    """What apply would record as the templates every render uses (plan's ``templates``)."""

    def name(t: TemplateSet | None) -> str:
        return f"{t.origin or 'custom'} (digest {t.digest})" if t is not None else "the shipped ones"

    change = (declared.digest if declared else None) != (stored.digest if stored else None)
    return {
        "declared": {"origin": declared.origin, "digest": declared.digest} if declared else None,
        "stored": {"origin": stored.origin, "digest": stored.digest} if stored else None,
        "change": change,
        "text": f"templates: {name(stored)} -> {name(declared)}" if change else "",
    }


def _converge(
    ctx: Context,
    state: DesiredState,
    ref: StoreRef,
    renderer: Renderer,
    settings: FleetSettings,
    expected: dict[str, str] | None,
    pool: ConnectionPool,
    health: Health,
) -> list[NodeResult]:
    """apply_fleet with a progress bar on a terminal, else one line per access node as it ends."""
    total = len(targets(state, settings.limit))
    if ctx.output == "json":
        return apply_fleet(state, ref, renderer, settings, expected, pool=pool, health=health)
    if not ctx.out.is_terminal:
        return apply_fleet(
            state,
            ref,
            renderer,
            settings,
            expected,
            lambda r: ctx.out.print(result_line(r), highlight=False, soft_wrap=True),
            pool=pool,
            health=health,
        )
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = (TextColumn("[bold]converging"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=ctx.out, transient=True) as progress:
        task = progress.add_task("apply", total=total)

        def done(result: NodeResult) -> None:
            progress.console.print(result_line(result), highlight=False, soft_wrap=True)
            progress.advance(task)

        return apply_fleet(state, ref, renderer, settings, expected, done, pool=pool, health=health)


def _check_saved_plan(
    saved: SavedPlan,
    store: Store,
    manifests: DesiredState,
    renderer: Renderer,
    settings: FleetSettings,
    pool: ConnectionPool,
) -> None:
    """Refuse the saved plan before anything changes when the store or a node moved since."""
    if store.store_id() != saved.store_id:
        raise PlanError("the saved plan was made against another store: plan again with this --store")
    if store.revision() != saved.store_revision:
        raise PlanError(
            f"the store moved since the plan was made (revision {saved.store_revision} -> {store.revision()}): plan again"
        )
    sync = plan_sync(store, manifests, saved.prune_api)
    state = merged_state(manifests, store, sync.kept_api)
    ref = StoreRef(saved.store_id, saved.store_revision + (1 if sync.changes else 0))
    moved = []
    health = stored_health(store, state).health
    for result in plan_fleet(state, ref, renderer, settings, pool=pool, health=health):
        expected = saved.nodes.get(result.access_node)
        if result.plan is None:
            moved.append(f"{result.access_node}: {result.error}")
        elif expected is None:
            moved.append(f"{result.access_node}: not in the saved plan")
        elif result.plan.facts_digest != expected["facts_digest"]:
            moved.append(f"{result.access_node}: its live configuration changed")
        elif result.plan.revision != expected["revision"]:
            moved.append(
                f"{result.access_node}: its rendered files changed (revision {expected['revision']} -> "
                f"{result.plan.revision}: a backend's health or a DNS answer changed)"
            )
    if moved:
        raise PlanError("the saved plan is out of date, nothing was applied:\n  " + "\n  ".join(moved))
