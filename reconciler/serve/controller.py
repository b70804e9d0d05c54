"""The controller of ``obreconcile serve``: election, health loop, convergence, drift timer.

One asyncio loop runs everything; blocking work (the store, paramiko) runs in threads.

- Election: every controller tries ``store.acquire_lock("master", host_name, ttl)`` every
  ``ttl/3`` seconds; the holder refreshes it at the same pace. Only the master runs checks
  and pushes. A master that cannot refresh its lease before ``ttl`` (measured on its own
  monotonic clock, which keeps running while the process is paused) stops at once; a push
  that was already on its way is fenced by the nodes (``StoreRef``: they refuse an older
  store revision than the one they run).
- Convergence: a health flip, a desired-state change (store watch) or the drift timer opens
  a coalescing window (``coalesce`` seconds); at its end one pass reads the desired state,
  renders every access node with the current health and hands each node's ``NodeWorker``
  (push.py) its job. Workers push only what differs, at most once per window each.
- Health records are written to the store once a second (changed ones only) and loaded by
  a new master, so rise/fall state survives a restart or a master change.

The controller is the API's ``ControllerView`` (reconciler/api/view.py): status, metrics and
management nodes are answered from memory, never by a blocking store call on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.deploy.apply import ApplySettings
from reconciler.deploy.plan import ModelCache, StoreRef, node_model
from reconciler.errors import ObreconcileError
from reconciler.health.monitor import CheckState, Monitor
from reconciler.health.probe import Prober
from reconciler.health.select import select
from reconciler.manifest.model import DesiredState, Upstream
from reconciler.metrics import Metrics
from reconciler.render.renderer import Renderer
from reconciler.resolve import ip_literal
from reconciler.serve.locks import MANAGEMENT_PREFIX, MASTER_LOCK
from reconciler.serve.push import Job, NodeWorker, Pusher, PushSettings
from reconciler.serve.status import StatusCache, StatusInput, build_status
from reconciler.store import DeployRecord, HealthRecord, Lock, Store, refused_by_upstream
from reconciler.transport import SSHSettings

log = logging.getLogger("obreconcile.controller")


@dataclass(frozen=True)
class ServeSettings:
    host_name: str
    drift_interval: float = 60.0
    coalesce: float = 1.0
    lease_ttl: int = 10
    retry_initial: float = 2.0
    retry_max: float = 120.0
    forks: int = 10
    ssh: SSHSettings = field(default_factory=SSHSettings)
    check_concurrency: int = 1000
    shutdown_timeout: float = 30.0
    token_purge_interval: float = 600.0  # seconds between the master's purges of expired tokens
    apply: ApplySettings = field(default_factory=ApplySettings)


class Seen:
    """Each upstream's inputs when last used (its model object and its health): which changed."""

    def __init__(self) -> None:
        self._inputs: dict[str, tuple[Upstream, dict[str, bool]]] = {}

    def same(self, name: str, upstream: Upstream, health: Mapping[str, bool]) -> bool:
        """``upstream`` is the one last remembered under ``name`` (or an equal one: the desired
        state read again) and its health is the same."""
        seen = self._inputs.get(name)
        return seen is not None and seen[1] == health and (seen[0] is upstream or seen[0] == upstream)

    def remember(self, name: str, upstream: Upstream, health: Mapping[str, bool]) -> None:
        self._inputs[name] = (upstream, dict(health))


class PassCache:
    """What one convergence pass prepared that the next may reuse (at 10,000 upstreams, building
    every upstream's context and every node's model anew each pass cost seconds of CPU).

    - The renderer's prepared upstreams (``Renderer.render_access_node``'s ``prepared``: an
      upstream's selected backends, addresses and template context): one is reused when its
      upstream is unchanged (the same object, or an equal one after the desired state was read
      again), its health is the same, and every backend is an IP literal. An upstream with a
      DNS-named backend is prepared every pass: its names resolve each time (docs/render.md).
    - Each access node's model (``node_model``): health is not part of it, so it is reused while
      the desired state is the same object (the controller reads it again only when the store's
      revision moved, or for a drift check).
    """

    def __init__(self) -> None:
        self._prepared: dict[str, Any] = {}
        self._seen = Seen()
        self._literal: dict[str, bool] = {}  # upstream name -> every backend an IP literal
        self._kept: set[str] = set()
        self._state: DesiredState | None = None
        self._models: dict[str, dict[str, Any]] = {}

    def prepared(self, state: DesiredState, health: Mapping[str, Mapping[str, bool]]) -> dict[str, Any]:
        """The last pass's prepared upstreams that still hold for ``state`` and ``health``."""
        kept = {}
        for name, prepared in self._prepared.items():
            upstream = state.upstreams.get(name)
            if (
                upstream is not None
                and self._literal.get(name, False)
                and self._seen.same(name, upstream, health.get(name, {}))
            ):
                kept[name] = prepared
        self._kept = set(kept)
        return kept

    def prepared_with(
        self, state: DesiredState, health: Mapping[str, Mapping[str, bool]], prepared: dict[str, Any]
    ) -> None:
        """Keep what this pass prepared (``prepared``, as the renderer left it), with its inputs."""
        seen, literal = Seen(), {}
        for name in prepared:
            upstream = state.upstreams.get(name)
            if upstream is not None:
                seen.remember(name, upstream, health.get(name, {}))
                literal[name] = self._literal[name] if name in self._kept else literal_backends(upstream)
        self._prepared, self._seen, self._literal = prepared, seen, literal

    def models(self, state: DesiredState) -> dict[str, dict[str, Any]]:
        """Access node name -> its model, for ``state`` (the caller fills in what is missing)."""
        if state is not self._state:
            self._state, self._models = state, {}
        return self._models


def literal_backends(upstream: Upstream) -> bool:
    """Every backend of ``upstream`` is an IP literal (nothing to resolve)."""
    return all(ip_literal(backend.address[0]) is not None for backend in upstream.nodes)


class Controller:
    def __init__(
        self, store: Store, settings: ServeSettings, renderer: Renderer | None = None, metrics: Metrics | None = None
    ) -> None:
        self.store = store
        self.settings = settings
        self.renderer = renderer or Renderer()
        self.telemetry = metrics or Metrics()
        self.host_name = settings.host_name
        self.lease: Lock | None = None
        self.lease_deadline = 0.0
        self.master_since: float | None = None
        self.state: DesiredState | None = None
        self.revision = 0
        self.store_id = ""
        self.workers: dict[str, NodeWorker] = {}
        self.cache = StatusCache()
        self.monitor: Monitor | None = None
        self.panic: list[str] = []
        self._pending_since: float | None = None  # monotonic: first change not yet rendered
        self._drift_asked = False
        self._trigger = asyncio.Event()
        self.pusher = Pusher(
            PushSettings(settings.forks, settings.ssh, settings.apply),
            self.telemetry,
            self._record_deploy,
        )
        self._registration: Lock | None = None
        self._templates = ""  # the digest of the store's templates the renderer uses ("" shipped)
        self._passes = PassCache()
        self._metered = Seen()  # the upstreams' inputs when their gauges were last set

    # ControllerView ---------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        master = self.is_master()
        return build_status(
            StatusInput(
                host_name=self.host_name,
                master=master,
                master_since=self.master_since,
                store_kind=self.store.kind,
                cache=self.cache,
                state=self.state,
                revision=self.revision,
                health=self.monitor.health() if master and self.monitor is not None else None,
                workers=self.workers,
                panic=tuple(self.panic),
            )
        )

    def metrics(self) -> bytes:
        return self.telemetry.text()

    def management_nodes(self) -> list[dict[str, Any]]:
        nodes: dict[str, dict[str, Any]] = {
            name: {"host_name": name, "master": name == self.cache.master, "since": None}
            for name in self.cache.management.values()
        }
        nodes[self.host_name] = {"host_name": self.host_name, "master": self.is_master(), "since": self.master_since}
        return [nodes[n] for n in sorted(nodes)]

    def refused_upstreams(self) -> dict[str, list[dict[str, Any]]]:
        if self.is_master():  # what the last push of each node left refused
            pairs = [(name, r.to_dict()) for name, w in self.workers.items() for r in w.state.refused]
        else:
            pairs = [(name, dict(r)) for name, record in self.cache.deploys.items() for r in record.refused]
        return refused_by_upstream(pairs)

    def check_results(self) -> Mapping[tuple[str, str, str], CheckState | HealthRecord]:
        if self.is_master() and self.monitor is not None:
            return self.monitor.states
        return self.cache.health  # a non-master: the store's records, read every second

    # master -----------------------------------------------------------------------------
    def is_master(self) -> bool:
        return self.lease is not None and time.monotonic() < self.lease_deadline

    async def _call(self, fn: Any, *args: Any) -> Any:
        """A store call in a thread; StoreErrors mark the store unhealthy and propagate."""
        try:
            result = await asyncio.to_thread(fn, *args)
        except ObreconcileError as e:
            self._store_failed(str(e))
            raise
        if not self.cache.store_ok:
            log.warning("store: answering again")
            self.cache.store_ok, self.cache.store_detail = True, "answering again"
            self.telemetry.store_healthy.set(1)
        return result

    def _store_failed(self, detail: str) -> None:
        if self.cache.store_ok:
            log.error("store: %s", detail)
        self.cache.store_ok, self.cache.store_detail = False, detail
        self.telemetry.store_healthy.set(0)

    async def _elect(self) -> None:
        ttl = self.settings.lease_ttl
        while True:
            started = time.monotonic()
            try:
                if self.lease is None:
                    lease = await self._call(self.store.acquire_lock, MASTER_LOCK, self.host_name, ttl)
                    if lease is not None:
                        self.lease, self.lease_deadline = lease, started + ttl
                        try:
                            await self._become_master()
                        except ObreconcileError as e:
                            await self._step_down(f"the store failed while taking over: {e}")
                elif await self._call(self.lease.refresh):
                    self.lease_deadline = started + ttl
                else:
                    await self._step_down("the master lease was lost")
                if self._registration is None:
                    self._registration = await self._call(
                        self.store.acquire_lock, MANAGEMENT_PREFIX + self.host_name, self.host_name, ttl
                    )
                elif not await self._call(self._registration.refresh):
                    self._registration = None
                self.cache.master = (
                    self.host_name if self.is_master() else await self._call(self.store.lock_holder, MASTER_LOCK)
                )
                self.cache.management = await self._call(self.store.lock_holders, MANAGEMENT_PREFIX)
            except ObreconcileError:
                pass
            if self.lease is not None and not self.is_master():
                await self._step_down("the master lease ran out (the store did not answer)")
            self.telemetry.master.set(1 if self.is_master() else 0)
            await asyncio.sleep(max(0.1, ttl / 3 - (time.monotonic() - started)))

    async def _become_master(self) -> None:
        log.warning("election: %s is now the master", self.host_name)
        self.master_since = time.time()
        self.store_id = await self._call(self.store.store_id)
        records = await self._call(self.store.health_records)
        self.renderer.resolver.remember(await self._call(self.store.known_addresses))
        self.state = None
        self.monitor = Monitor(self._prober, self._health_changed, self.telemetry)
        self.monitor.load(records)
        self._changed(drift=True)

    async def _step_down(self, why: str) -> None:
        log.warning("election: %s is no longer the master: %s", self.host_name, why)
        lease, self.lease, self.master_since = self.lease, None, None
        monitor, self.monitor = self.monitor, None
        if monitor is not None:
            await monitor.stop()
        for worker in self.workers.values():
            await worker.stop()
        self.workers.clear()
        if lease is not None:
            try:
                await asyncio.to_thread(lease.release)
            except ObreconcileError:
                pass

    # triggers ---------------------------------------------------------------------------
    def _health_changed(self, upstream: str) -> None:
        self._changed()

    def _changed(self, drift: bool = False) -> None:
        if self._pending_since is None:
            self._pending_since = time.monotonic()
        self._drift_asked = self._drift_asked or drift
        self._trigger.set()

    async def _watch(self) -> None:
        seen = 0
        while True:
            try:
                revision = await self._call(self.store.wait, seen, 1.0)
                if not self.is_master():
                    await self._call(self.cache.refresh, self.store)
            except ObreconcileError:
                await asyncio.sleep(1.0)
                continue
            if revision != seen:
                seen = revision
                self.telemetry.store_revision.set(revision)
                if self.is_master():
                    self._changed()

    async def _drift_timer(self) -> None:
        while True:
            await asyncio.sleep(self.settings.drift_interval)
            if self.is_master():
                self._changed(drift=True)

    async def _flush(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            await self.flush_health()

    async def flush_health(self) -> None:
        if self.monitor is None or not self.is_master():
            return
        records = self.monitor.take_dirty()
        if records:
            try:
                await self._call(self.store.record_health, records)
            except ObreconcileError:
                self.monitor.still_dirty(records)

    async def _purge_tokens_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.token_purge_interval)
            await self.purge_tokens()

    async def purge_tokens(self) -> int:
        """The master removes the records of expired tokens (every login leaves one); how many."""
        if not self.is_master():
            return 0
        try:
            purged: int = await self._call(self.store.purge_expired_tokens)
        except ObreconcileError:
            return 0
        if purged:
            log.info("tokens: purged %d expired token(s)", purged)
        return purged

    # convergence ------------------------------------------------------------------------
    async def _converge_loop(self) -> None:
        while True:
            await self._trigger.wait()
            since = self._pending_since or time.monotonic()
            await asyncio.sleep(max(0.0, since + self.settings.coalesce - time.monotonic()))
            self._trigger.clear()
            drift, self._drift_asked, self._pending_since = self._drift_asked, False, None
            if not self.is_master():
                continue
            try:
                await self.converge_pass(since, drift)
            except Exception as e:  # the store did not answer (or a bug): keep what runs, try again
                if isinstance(e, ObreconcileError):
                    log.error("convergence: %s", e)
                else:
                    log.exception("convergence: unexpected error")
                self._pending_since = since
                self._drift_asked = self._drift_asked or drift
                await asyncio.sleep(1.0)
                self._trigger.set()

    async def converge_pass(self, since: float, drift: bool) -> None:
        """Read the desired state, render with the current health, hand every node its job."""
        state = await self._desired()
        await self._follow_templates()
        if self.monitor is not None:
            self.monitor.configure(state)  # checks of new upstreams start, removed ones stop
        # the store holds the health this pass renders with before any node gets it, so that an
        # apply beside this controller renders the same files (reconciler/health/state.py)
        await self.flush_health()
        health = self.monitor.health() if self.monitor is not None else {}
        self._panic_metrics(state, health)
        down = sum(not up for hosts in health.values() for up in hosts.values())
        log.info(
            "convergence: pass at store revision %d, %d backend(s) down, %.2fs after the change%s",
            self.revision,
            down,
            time.monotonic() - since,
            " (drift check)" if drift else "",
        )
        jobs = await asyncio.to_thread(self._jobs, state, health, since, drift)
        learned = self.renderer.resolver.learned()
        if learned:  # so that a name that stops resolving keeps them after a restart too
            with contextlib.suppress(ObreconcileError):
                await self._call(self.store.record_addresses, learned)
        for name in set(self.workers) - set(jobs):
            await self.workers.pop(name).stop()
            with contextlib.suppress(KeyError):
                self.telemetry.converged.remove(name)
            self.pusher.forget(name)
        for name, job in jobs.items():
            worker = self.workers.get(name)
            if worker is None:
                worker = self.workers[name] = NodeWorker(
                    name,
                    self.pusher.push,
                    self.is_master,
                    self.settings.coalesce,
                    self.settings.retry_initial,
                    self.settings.retry_max,
                )
                worker.start()
            worker.offer(job)
            if not worker.state.converged_to(job):
                self.telemetry.converged.labels(name).set(0)

    async def _desired(self) -> DesiredState:
        """The desired state, read again only when the store's revision moved: every commit moves
        it (the etcd store's ``rev`` flips with the commit). A pass after a health change or for a
        drift check asks for the revision alone; at 10,000 upstreams reading every object and
        building the model again took seconds of each such pass."""
        revision = await self._call(self.store.revision)
        if self.state is None or revision != self.revision:
            snapshot = await self._call(self.store.snapshot)
            self.state = await asyncio.to_thread(snapshot.desired_state)
            self.revision = snapshot.revision
            self.telemetry.store_revision.set(self.revision)
        assert self.state is not None
        return self.state

    async def _follow_templates(self) -> None:
        """Render with the templates the store names (apply records them), never with others."""
        stored = await self._call(self.store.templates)
        digest = stored.digest if stored is not None else ""
        if digest != self._templates:
            await asyncio.to_thread(self.renderer.use_templates, stored.sources if stored is not None else None)
            self._templates = digest
            self._passes = PassCache()
            log.warning(
                "templates: rendering with %s",
                f"{stored.origin or 'custom'} ({digest})" if stored else "the shipped ones",
            )

    def _jobs(
        self, state: DesiredState, health: dict[str, dict[str, bool]], since: float, drift: bool
    ) -> dict[str, Job]:
        ref = StoreRef(self.store_id, self.revision)
        prepared = self._passes.prepared(state, health)
        models = self._passes.models(state)
        manifests = ModelCache()  # each upstream's manifest form and its JSON, once for every node
        jobs = {}
        for name in sorted(state.access_nodes):
            node = state.access_nodes[name]
            try:
                rendered = self.renderer.render_access_node(state, node, health, prepared)
                if name not in models:
                    models[name] = node_model(state, node, manifests)
                jobs[name] = Job(node, rendered, models[name], ref, since, drift)
            except ObreconcileError as e:
                jobs[name] = Job(node, None, {}, ref, since, drift, f"render: {e}")
        self._passes.prepared_with(state, health, prepared)
        return jobs

    def _panic_metrics(self, state: DesiredState, health: dict[str, dict[str, bool]]) -> None:
        """Panic and backend gauges; an upstream whose model and health did not change since the
        last pass keeps its gauges (at 10,000 upstreams, setting them all took 0.4 s of the loop)."""
        panic = []
        was = set(self.panic)
        for name, upstream in state.upstreams.items():
            up = health.get(name, {})
            if self._metered.same(name, upstream, up):
                if name in was:
                    panic.append(name)
                continue
            selection = select(upstream, up)
            if selection.panic:
                panic.append(name)
            self.telemetry.upstream_panic.labels(name).set(1 if selection.panic else 0)
            for backend in upstream.nodes:
                self.telemetry.backend_up.labels(name, backend.hostname).set(1 if up.get(backend.hostname, True) else 0)
            self._metered.remember(name, upstream, up)
        if sorted(panic) != self.panic:
            for name in set(panic) - set(self.panic):
                log.error("upstream %s: panic: no backend is eligible, every backend not forced down is enabled", name)
        self.panic = sorted(panic)

    async def _record_deploy(self, record: DeployRecord) -> None:
        if not self.is_master():  # a former master's late result must not overwrite the new master's
            return
        try:
            await self._call(self.store.record_deploy, record)
        except ObreconcileError:
            pass

    # running ----------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then shut down cleanly (see ``shutdown``)."""
        async with Prober(self.settings.check_concurrency, self.renderer.resolver) as prober:
            self._prober = prober
            tasks = [
                asyncio.create_task(self._supervised(name, loop), name=name)
                for name, loop in (
                    ("elect", self._elect),
                    ("watch", self._watch),
                    ("converge", self._converge_loop),
                    ("drift", self._drift_timer),
                    ("flush", self._flush),
                    ("tokens", self._purge_tokens_loop),
                    ("store health", self._store_health),
                )
            ]
            try:
                await stop.wait()
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await self.shutdown()

    async def _supervised(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run one of the controller's loops; a bug in it is logged and the loop started again."""
        while True:
            try:
                await loop()
                return
            except Exception:
                log.exception("%s loop: unexpected error; starting it again in 1s", name)
                await asyncio.sleep(1.0)

    async def shutdown(self) -> None:
        """Finish the pushes in hand (up to ``shutdown_timeout``), save health, release leases."""
        for worker in self.workers.values():
            await worker.stop()
        await self.pusher.finish(self.settings.shutdown_timeout)
        await self.flush_health()
        if self.lease is not None:
            await self._step_down("shutting down")
        if self._registration is not None:
            try:
                await asyncio.to_thread(self._registration.release)
            except ObreconcileError:
                pass
        self.telemetry.master.set(0)
        await self.pusher.close()

    async def _store_health(self) -> None:
        while True:
            try:
                health = await asyncio.to_thread(self.store.check_health)
                self.cache.store_ok, self.cache.store_detail = health.ok, health.detail
            except ObreconcileError as e:
                self._store_failed(str(e))
            self.telemetry.store_healthy.set(1 if self.cache.store_ok else 0)
            # every store call also reports failures at once; SQLite's check reads the whole file
            await asyncio.sleep(2.0 if self.store.kind == "etcd" else 15.0)
