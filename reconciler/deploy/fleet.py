"""Across access nodes: which ones (--limit), how many at once (--forks), in which batches (--serial).

``plan_fleet`` observes every targeted access node (read only, no lock) and plans it;
``apply_fleet`` converges them. A node that fails never stops the others, except that with
``serial`` the rollout stops after the first batch with a failure (the rest are ``skipped``).
Transports share one SSH connection pool for the run; every node gets its own thread.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from reconciler.deploy.apply import INTERRUPTED, ApplySettings, NodeResult, NodeStatus, apply_node
from reconciler.deploy.facts import observe, tls_references
from reconciler.deploy.operator_read import settled
from reconciler.deploy.plan import ModelCache, NodePlan, StoreRef, node_model, plan_node, settle
from reconciler.errors import ObreconcileError, Step
from reconciler.health.state import MASTER_LOCK, UsedHealth, used_health
from reconciler.manifest.model import KINDS, AccessNode, DesiredState, build_object
from reconciler.render.renderer import Health, Prepared, RenderedAccessNode, Renderer
from reconciler.store import Store
from reconciler.store.base import ObjectKey
from reconciler.transport import ConnectionPool, SSHSettings, Transport, open_transport, prefetch


@dataclass(frozen=True)
class FleetSettings:
    forks: int = 10
    serial: int | None = None
    limit: tuple[str, ...] = ()
    ssh: SSHSettings = field(default_factory=SSHSettings)
    apply: ApplySettings = field(default_factory=ApplySettings)


@dataclass(frozen=True)
class NodePlanResult:
    """The plan of one node, the live text of files it changes (for diffs), or why none."""

    access_node: str
    plan: NodePlan | None
    desired: dict[str, str] = field(default_factory=dict)  # path -> text of changed files
    live: dict[str, str] = field(default_factory=dict)  # path -> live text of changed files
    error: str = ""


def merged_state(manifests: DesiredState, store: Store, kept_api: Sequence[ObjectKey]) -> DesiredState:
    """What the store holds after a sync: the manifests plus the API objects it keeps."""
    if not kept_api:
        return manifests
    kept = store.get_many(list(kept_api))
    by_kind: dict[str, dict[str, Any]] = {kind: dict(manifests.of_kind(kind)) for kind in KINDS}
    for (kind, name), stored in kept.items():
        by_kind[kind][name] = build_object(kind, stored.body)
    return DesiredState.from_kinds(by_kind)


def targets(state: DesiredState, limit: Iterable[str]) -> list[AccessNode]:
    """The access nodes to work on, sorted by name; unknown ``--limit`` names are an error."""
    wanted = set(limit)
    unknown = wanted - set(state.access_nodes)
    if unknown:
        raise ObreconcileError(f"--limit names unknown access nodes: {', '.join(sorted(unknown))}")
    return [state.access_nodes[n] for n in sorted(state.access_nodes) if not wanted or n in wanted]


def prefetch_connections(state: DesiredState, settings: FleetSettings, pool: ConnectionPool) -> None:
    """Start connecting to the targeted access nodes of ``state`` now (see ``transport.prefetch``),
    so that key exchanges overlap the store sync and rendering. Unknown ``--limit`` names are
    left for ``targets`` to refuse."""
    wanted = set(settings.limit)
    nodes = [node for name, node in sorted(state.access_nodes.items()) if not wanted or name in wanted]
    prefetch(nodes, pool, settings.ssh, workers=settings.forks)


@contextmanager
def _pool(pool: ConnectionPool | None) -> Iterator[ConnectionPool]:
    """The caller's pool (the caller closes it), or one for this call."""
    with nullcontext(pool) if pool is not None else ConnectionPool() as opened:
        yield opened


def _open(node: AccessNode, settings: FleetSettings, pool: ConnectionPool) -> Transport:
    return open_transport(node, settings.ssh, pool=pool)


def stored_health(store: Store, state: DesiredState) -> UsedHealth:
    """The health apply and plan render ``state`` with: the store's, while a controller keeps it
    current (``reconciler.health.state.used_health``); serve renders the same records."""
    return used_health(state, store.health_records(), store.lock_holder(MASTER_LOCK))


def plan_fleet(
    state: DesiredState,
    store: StoreRef,
    renderer: Renderer,
    settings: FleetSettings,
    on_result: Callable[[NodePlanResult], None] | None = None,
    pool: ConnectionPool | None = None,
    health: Health | None = None,
) -> list[NodePlanResult]:
    """Observe and plan every targeted access node (read only); ``health`` as for ``apply_fleet``."""
    nodes = targets(state, settings.limit)
    manifests = ModelCache()  # each upstream's manifest form, once per run
    prepared: Prepared = {}  # each upstream's template context, once per run
    with _pool(pool) as pool:

        def one(node: AccessNode) -> NodePlanResult:
            try:
                rendered = renderer.render_access_node(state, node, health, prepared)
                with _open(node, settings, pool) as transport:
                    model = node_model(state, node, manifests)
                    facts = observe(node, transport, with_model=True, tls=tls_references(model))
                    rendered = settle(rendered, facts)
                    rendered, _, _ = settled(node, rendered, facts, transport)
                    plan = plan_node(rendered, facts, model, store, settings.apply.force)
                    changed = [f.path for f in plan.files]
                    live = _live_texts(transport, node, [f.path for f in plan.files if f.old_digest])
                result = NodePlanResult(
                    node.name, plan, {p: rendered.files[p] for p in changed if p in rendered.files}, live
                )
            except ObreconcileError as e:
                result = NodePlanResult(node.name, None, error=str(e))
            if on_result is not None:
                on_result(result)
            return result

        with ThreadPoolExecutor(max_workers=max(1, settings.forks)) as pool_executor:
            return list(pool_executor.map(one, nodes))


def _live_texts(transport: Transport, node: AccessNode, paths: Sequence[str]) -> dict[str, str]:
    if not paths:
        return {}
    base = node.nginx.config_dir
    found = transport.read_files([posixpath.join(base, p) for p in paths])
    return {p: (found[posixpath.join(base, p)] or b"").decode("utf-8", "replace") for p in paths}


def apply_fleet(
    state: DesiredState,
    store: StoreRef,
    renderer: Renderer,
    settings: FleetSettings,
    expected_facts: dict[str, str] | None = None,
    on_result: Callable[[NodeResult], None] | None = None,
    health: Health | None = None,
    pool: ConnectionPool | None = None,
) -> list[NodeResult]:
    """Converge every targeted access node; results in the order of the nodes' names.

    ``health``: upstream -> backend hostname -> up, for the selection (``stored_health``, or
    converge's checks); none: all up.
    ``pool``: the caller's connections (``prefetch_connections``); none: this call's own.
    """
    nodes = targets(state, settings.limit)
    batches = (
        [nodes[i : i + settings.serial] for i in range(0, len(nodes), settings.serial)] if settings.serial else [nodes]
    )
    rendered: dict[str, Future[RenderedAccessNode]] = {node.name: Future() for node in nodes}
    results: dict[str, NodeResult] = {}
    manifests = ModelCache()  # each upstream's manifest form, once per run
    with _pool(pool) as pool, ThreadPoolExecutor(max_workers=max(1, settings.forks)) as executor:

        def one(node: AccessNode) -> NodeResult:
            result = _apply_one(node, rendered[node.name], state, store, settings, pool, expected_facts, manifests)
            if on_result is not None:
                on_result(result)
            return result

        for index, batch in enumerate(batches):
            running = [executor.submit(one, node) for node in batch]
            if index == 0:  # while the first batch connects, locks and observes
                _render(renderer, state, nodes, health, rendered)
            for future in running:
                result = future.result()
                results[result.access_node] = result
            if settings.apply.interrupted or (settings.serial and not all(r.ok for r in results.values())):
                break
    why = INTERRUPTED if settings.apply.interrupted else "an earlier --serial batch failed"
    for node in nodes:
        if node.name not in results:
            skipped = NodeResult(node.name, NodeStatus.SKIPPED, error=why)
            results[node.name] = skipped
            if on_result is not None:
                on_result(skipped)
    return [results[n.name] for n in nodes]


def _render(
    renderer: Renderer,
    state: DesiredState,
    nodes: Sequence[AccessNode],
    health: Health | None,
    into: Mapping[str, Future[RenderedAccessNode]],
) -> None:
    prepared: Prepared = {}  # each upstream's template context, once for every node
    try:
        for node in nodes:
            try:
                into[node.name].set_result(renderer.render_access_node(state, node, health, prepared))
            except ObreconcileError as e:
                into[node.name].set_exception(e)
    except BaseException as e:  # a bug (or ^C): no worker may wait for its files forever
        for future in into.values():
            if not future.done():
                future.set_exception(e)
        raise


def _apply_one(
    node: AccessNode,
    rendered: Future[RenderedAccessNode],
    state: DesiredState,
    store: StoreRef,
    settings: FleetSettings,
    pool: ConnectionPool,
    expected_facts: dict[str, str] | None,
    manifests: ModelCache,
) -> NodeResult:
    try:
        transport = _open(node, settings, pool)
    except ObreconcileError as e:
        return NodeResult(node.name, NodeStatus.FAILED, step=Step.CONNECT, error=str(e))
    with transport:
        expected = expected_facts.get(node.name) if expected_facts is not None else None
        return apply_node(
            node, rendered, node_model(state, node, manifests), transport, store, settings.apply, expected
        )
