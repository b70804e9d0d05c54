"""Plans and apply results as people read them (text like Terraform's) and as CI reads them (JSON).

Text goes through a rich Console: colour on a terminal, plain otherwise. Every value from a
manifest or a node is escaped before it is printed, so it is never read as rich markup.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from reconciler.deploy.apply import NodeStatus
from reconciler.deploy.plan import SYMBOL, Op
from reconciler.store import DeployState
from reconciler.store.sync import Destroy, SyncAction, SyncPlan

if TYPE_CHECKING:  # rich is imported only when text is printed: JSON output never needs it
    from rich.console import Console

    from reconciler.deploy.apply import NodeResult
    from reconciler.deploy.fleet import NodePlanResult
    from reconciler.health.state import UsedHealth
    from reconciler.render.renderer import RefusedUpstream

_COLOUR = {"+": "green", "~": "yellow", "-": "red", "!": "magenta"}
_SYNC_SYMBOL = {SyncAction.ADD: "+", SyncAction.CHANGE: "~", SyncAction.REMOVE: "-", SyncAction.TAKEOVER: "!"}


def escape(text: str) -> str:
    """``text`` with rich markup escaped, so a value from a manifest or a node prints as is."""
    from rich.markup import escape as escape_markup

    return escape_markup(text)


def _line(console: Console, symbol: str, text: str) -> None:
    console.print(f"  [{_COLOUR[symbol]}]{symbol}[/] {escape(text)}", highlight=False, soft_wrap=True)


STORE_CREATED = "store created now: every object is new"


def print_sync(console: Console, store_url: str, sync: SyncPlan, created: bool = False) -> None:
    console.print(f"[bold]Store[/] {escape(store_url)} (revision {sync.base_revision}):", highlight=False)
    if created:  # a fresh checkout's default store, or a new file: say so before "6 to add"
        console.print(f"  [yellow]{STORE_CREATED}[/]", highlight=False)
    if not sync.changes:
        console.print("  no changes: the store already says what the manifests say", highlight=False)
    for change in sync.changes:
        symbol = _SYNC_SYMBOL[change.action]
        note = (
            " (created through the API, now declared in Git: Git takes it over)"
            if change.action == SyncAction.TAKEOVER
            else ""
        )
        origin = f" ({change.new_provenance.origin})" if change.new_body is not None else ""
        if change.action == SyncAction.REMOVE and change.kind == "AccessNode":
            note = f" ({DeployState.ORPHANED}: its nginx keeps serving its last files, nothing converges it)"
        _line(console, symbol, f"{change.kind}/{change.name}{origin}{note}")
    destroy = sync.destroy
    if destroy is not None:
        console.print(
            f"  [bold red]destroy[/]: removes {escape(destroy.summary())}; apply refuses it without --allow-destroy",
            highlight=False,
            soft_wrap=True,
        )
    if sync.kept_api:
        kept = ", ".join(f"{k}/{n}" for k, n in sync.kept_api[:5]) + (" ..." if len(sync.kept_api) > 5 else "")
        console.print(
            f"  kept {len(sync.kept_api)} objects created through the API ({escape(kept)}); --prune-api removes them",
            highlight=False,
        )


def print_node_plan(console: Console, result: NodePlanResult) -> None:
    if result.plan is None:
        console.print(
            f"[bold]{escape(result.access_node)}[/]: [red]cannot plan[/]: {escape(result.error)}", highlight=False
        )
        return
    plan = result.plan
    head = f"[bold]{escape(plan.access_node)}[/]"
    if not plan.changed:
        console.print(f"{head}: no changes (revision {plan.revision})", highlight=False)
        _print_health(console, plan.health)
        _print_refused(console, plan.refused_upstreams)
        return
    console.print(f"{head}: revision {plan.live_revision or '(none)'} -> {plan.revision}", highlight=False)
    _print_health(console, plan.health)
    _print_refused(console, plan.refused_upstreams)
    if plan.refused:
        console.print(f"  [red]refused[/]: {escape(plan.refused)}", highlight=False)
    for change in plan.objects:
        symbol = SYMBOL[change.op]
        detail = f" {change.field}: {_short(change.old)} -> {_short(change.new)}" if change.field else ""
        if change.field and change.op == Op.ADD:
            detail = f" {change.field}: {_short(change.new)}"
        elif change.field and change.op == Op.REMOVE:
            detail = f" {change.field} (was {_short(change.old)})"
        _line(console, symbol, f"{change.object}{detail}")
    for item in plan.drift:
        console.print(f"  [magenta]drift[/]: {escape(item)}", highlight=False)
    if plan.reload_only:
        console.print(f"  [yellow]reload[/]: {escape(plan.reload_only)}", highlight=False)
    for warning in plan.warnings:
        console.print(f"  [yellow]warning[/]: {escape(warning)}", highlight=False)
    for file in plan.files:
        _line(console, SYMBOL[file.op], f"{file.path}{' (drift)' if file.drift else ''}")
        old = result.live.get(file.path, "").splitlines(keepends=True)
        new = result.desired.get(file.path, "").splitlines(keepends=True)
        for line in difflib.unified_diff(old, new, f"live/{file.path}", f"desired/{file.path}", n=2):
            colour = (
                "green"
                if line.startswith("+")
                else "red"
                if line.startswith("-")
                else "cyan"
                if line.startswith("@@")
                else ""
            )
            text = escape(line.rstrip("\n"))
            console.print(f"    [{colour}]{text}[/]" if colour else f"    {text}", highlight=False, soft_wrap=True)


def _print_refused(console: Console, refused: Sequence[RefusedUpstream]) -> None:
    for r in refused:
        console.print(f"  [bold red]refused[/]: {escape(str(r))}", highlight=False, soft_wrap=True)


def refused_upstreams(results: Sequence[NodeResult]) -> list[dict[str, Any]]:
    """Every upstream refused on an access node of ``results`` (JSON), node by node."""
    return [{"access_node": r.access_node, **u.to_dict()} for r in results for u in r.refused_upstreams]


def refused_summary(results: Sequence[NodeResult]) -> str:
    """'' or the summary's words for the refused upstreams: 'upstream web refused on 2 access nodes ...'."""
    where: dict[str, set[str]] = {}
    for result in results:
        for refused in result.refused_upstreams:
            where.setdefault(refused.upstream, set()).add(result.access_node)
    if not where:
        return ""
    nodes = len({n for names in where.values() for n in names})
    names = ", ".join(sorted(where))
    return (
        f"{len(where)} upstream{'s' * (len(where) != 1)} refused ({names}) on {nodes} access "
        f"node{'s' * (nodes != 1)}: left at {'their' if len(where) != 1 else 'its'} last good rendering, "
        "the rest converged"
    )


def print_refused_results(console: Console, results: Sequence[NodeResult]) -> None:
    """apply's and converge's lines for every refused upstream, after the summary (on stderr)."""
    for result in results:
        for refused in result.refused_upstreams:
            console.print(
                f"[bold red]refused[/] {escape(result.access_node)}: {escape(str(refused))}",
                highlight=False,
                soft_wrap=True,
            )


def results_ok(results: Sequence[NodeResult]) -> bool:
    """apply's and converge's exit 0: every node converged (or was already) and none refused an upstream."""
    return all(r.ok and not r.refused_upstreams for r in results)


def _print_health(console: Console, notes: Sequence[str]) -> None:
    for note in notes:
        console.print(f"  [cyan]health[/]: {escape(note)}", highlight=False, soft_wrap=True)


def print_health(console: Console, used: UsedHealth) -> None:
    """Which health the render used (plan's second line, under the store's)."""
    console.print(
        f"[bold]Health[/]: {escape(used.describe().removeprefix('health: '))}", highlight=False, soft_wrap=True
    )


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


def plan_summary(sync: SyncPlan, results: Sequence[NodePlanResult]) -> dict[str, int]:
    counts = {str(a): 0 for a in SyncAction}
    for change in sync.changes:
        counts[str(change.action)] += 1
    return {
        "store_changes": len(sync.changes),
        **{f"store_{k}": v for k, v in counts.items()},
        "nodes_to_change": sum(1 for r in results if r.plan is not None and r.plan.changed),
        "nodes_unchanged": sum(1 for r in results if r.plan is not None and not r.plan.changed),
        "nodes_failed": sum(1 for r in results if r.plan is None),
        "nodes_refused": sum(1 for r in results if r.plan is not None and r.plan.refused),
        "upstreams_refused": len({u.upstream for r in results if r.plan is not None for u in r.plan.refused_upstreams}),
    }


def print_plan_summary(console: Console, summary: dict[str, int]) -> None:
    console.print(
        f"[bold]Plan:[/] store: {summary['store_add']} to add, {summary['store_change']} to change, "
        f"{summary['store_remove']} to remove, {summary['store_takeover']} to take over; access nodes: "
        f"{summary['nodes_to_change']} to change, {summary['nodes_unchanged']} unchanged, "
        f"{summary['nodes_failed']} could not be planned"
        + (
            f"; {summary['upstreams_refused']} upstream(s) refused (kept as they are live)"
            if summary["upstreams_refused"]
            else ""
        )
        + ".",
        highlight=False,
        soft_wrap=True,
    )


def sync_to_dict(sync: SyncPlan) -> dict[str, Any]:
    return {
        "base_revision": sync.base_revision,
        "changes": [
            {"action": str(c.action), "kind": c.kind, "name": c.name, "origin": c.new_provenance.origin}
            for c in sync.changes
        ],
        "kept_api": [f"{k}/{n}" for k, n in sync.kept_api],
        "destroy": _destroy_dict(sync.destroy),
    }


def _destroy_dict(destroy: Destroy | None) -> dict[str, Any] | None:
    if destroy is None:
        return None
    return {
        "reasons": [str(r) for r in destroy.reasons],
        "removed": [f"{k}/{n}" for k, n in destroy.removed],
        "count": len(destroy.removed),
        "stored": destroy.stored,
    }


def plan_document(
    store_url: str, sync: SyncPlan, results: Sequence[NodePlanResult], health: UsedHealth, created: bool = False
) -> dict[str, Any]:
    """The JSON form of a plan: the same facts as the text, one document."""
    summary = plan_summary(sync, results)
    return {
        "store": {"url": store_url, "created": created, **sync_to_dict(sync)},
        "health": health.to_dict(),
        "access_nodes": [
            r.plan.to_dict() if r.plan is not None else {"access_node": r.access_node, "error": r.error}
            for r in results
        ],
        "summary": summary,
        "changes": bool(summary["store_changes"] or summary["nodes_to_change"]),
    }


def result_line(result: NodeResult) -> str:
    """One line per access node for people (also printed as each finishes, off a terminal)."""
    name = escape(result.access_node)
    refused = result.refused_upstreams
    also = f"; [bold red]refused[/] {escape(', '.join(r.upstream for r in refused))}" if refused else ""
    if result.status == NodeStatus.UNCHANGED:
        return f"[green]ok[/] {name}: unchanged{also}"
    if result.status == NodeStatus.CONVERGED:
        files = len(result.plan.files) if result.plan else 0
        return (
            f"[green]ok[/] {name}: converged ({files} file{'s' * (files != 1)} changed, reloaded) "
            f"in {result.seconds:.2f}s{also}"
        )
    if result.status == NodeStatus.SKIPPED:
        return f"[yellow]skipped[/] {name}: {escape(result.error)}"
    back = " (rolled back to the previous release)" if result.rolled_back else ""
    return f"[red]FAILED[/] {name} at {result.step}{back}: {escape(result.error)}"


def apply_document(
    store_url: str, revision: int, results: Sequence[NodeResult], sync: dict[str, Any]
) -> dict[str, Any]:
    return {
        "store": {"url": store_url, "revision": revision, **sync},
        "access_nodes": [r.to_dict() for r in results],
        "summary": {
            "converged": sum(1 for r in results if r.status == NodeStatus.CONVERGED),
            "unchanged": sum(1 for r in results if r.status == NodeStatus.UNCHANGED),
            "failed": sum(1 for r in results if r.status == NodeStatus.FAILED),
            "skipped": sum(1 for r in results if r.status == NodeStatus.SKIPPED),
        },
        "refused_upstreams": refused_upstreams(results),
        "ok": results_ok(results),
    }
