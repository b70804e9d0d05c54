"""Pushing to one access node from ``serve``: at most once per coalescing window, retried with backoff.

The controller hands every access node's ``NodeWorker`` the latest ``Job`` (rendered files,
model, store revision) after each convergence pass; the worker's task pushes it when it
differs from what the node last converged to (or when a drift check is asked for), never
sooner than ``coalesce`` seconds after its previous push (so a node reloads at most once per
window), and after a failure waits ``retry_initial × 2^n`` seconds (capped at
``retry_max``) before trying the newest job again. Workers are independent: a node that
hangs or fails never holds back the others.

The push itself is ``apply_node`` in a thread (paramiko blocks), fenced by the job's
``StoreRef``: a node that runs a newer store revision refuses it. The thread's future is
shielded, so a shutdown finishes the push in hand (a node is never left mid-switch) instead
of abandoning it halfway.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from reconciler.deploy.apply import ApplySettings, NodeResult, NodeStatus, apply_node
from reconciler.deploy.plan import Refusal, StoreRef
from reconciler.errors import ObreconcileError, Step
from reconciler.manifest.model import AccessNode
from reconciler.metrics import Metrics
from reconciler.render.renderer import RefusedUpstream, RenderedAccessNode
from reconciler.store import DeployRecord
from reconciler.transport import ConnectionPool, SSHSettings, open_transport

log = logging.getLogger("obreconcile.push")

TEST_PUSH_DELAY = "OBRECONCILE_TEST_PUSH_DELAY"
"""Test hook: seconds a push waits after its master check (tests/serve pause a master there)."""


@dataclass(frozen=True)
class Job:
    node: AccessNode
    rendered: RenderedAccessNode | None  # None: rendering failed (``error``)
    model: dict[str, Any]
    store: StoreRef
    since: float  # monotonic time of the change this job carries
    drift: bool = False  # observe and plan even when nothing changed (the drift timer)
    error: str = ""


@dataclass
class NodeState:
    """What the controller knows of one access node (for /status and /metrics)."""

    name: str
    revision: str | None = None  # render revision last converged
    store_revision: int | None = None
    result: NodeStatus | None = None  # the last push's
    error: str = ""
    failures: int = 0
    pushes: int = 0
    reloads: int = 0
    last_push: float = 0.0  # monotonic
    retry_at: float = 0.0  # monotonic
    when: float = field(default_factory=time.time)
    refused: tuple[RefusedUpstream, ...] = ()  # upstreams the last push left at their last good rendering

    def converged_to(self, job: Job) -> bool:
        return (
            job.rendered is not None
            and self.result in (NodeStatus.CONVERGED, NodeStatus.UNCHANGED)
            and self.revision == job.rendered.revision
        )


Push = Callable[[Job], Awaitable[NodeResult]]


class NodeWorker:
    """One access node's pushes (see the module docstring)."""

    def __init__(
        self,
        name: str,
        push: Push,
        may_push: Callable[[], bool],
        coalesce: float,
        retry_initial: float = 2.0,
        retry_max: float = 120.0,
    ) -> None:
        self.state = NodeState(name)
        self.push, self.may_push = push, may_push
        self.coalesce, self.retry_initial, self.retry_max = coalesce, retry_initial, retry_max
        self.job: Job | None = None
        self.pending_since: float | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"push {self.state.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def offer(self, job: Job) -> None:
        """The newest job for this node: pushed when it differs from what the node runs."""
        if not job.drift and self.job is not None and self.job.drift:  # a drift check not run yet
            job = Job(job.node, job.rendered, job.model, job.store, job.since, True, job.error)
        self.job = job
        if self.needed(job) and self.pending_since is None:
            self.pending_since = job.since
        self._wake.set()

    def needed(self, job: Job) -> bool:
        return job.drift or not self.state.converged_to(job) or self.state.failures > 0

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            job = self.job
            if job is None or not self.needed(job):
                self.pending_since = None
                continue
            wait = max(self.state.last_push + self.coalesce, self.state.retry_at) - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            job = self.job
            if job is None or not self.needed(job) or not self.may_push():
                self.pending_since = None if job is None or not self.needed(job) else self.pending_since
                continue
            if job.rendered is None:
                self._failed(job, job.error)
                continue
            self.state.last_push = loop.time()
            self.job = Job(job.node, job.rendered, job.model, job.store, job.since)  # drift asked for: done now
            result = await self.push(job)
            self.state.pushes += 1
            if result.ok:
                self.state.failures, self.state.retry_at = 0, 0.0
                self.state.revision, self.state.store_revision = job.rendered.revision, job.store.revision
                self.state.result, self.state.error = result.status, ""
                self.state.refused = result.refused_upstreams
                self.state.reloads += result.reloaded
                self.pending_since = None
                if self.job is not None and self.needed(self.job):
                    self.pending_since = self.job.since
                    self._wake.set()
            else:
                self._failed(job, f"{result.step}: {result.error}" if result.step else result.error)
            self.state.when = time.time()

    def _failed(self, job: Job, error: str) -> None:
        loop = asyncio.get_running_loop()
        self.state.failures += 1
        self.state.result, self.state.error = NodeStatus.FAILED, error
        delay = min(self.retry_initial * 2 ** (self.state.failures - 1), self.retry_max)
        self.state.retry_at = loop.time() + delay
        log.warning("push: %s failed (%s); retrying in %.1fs", job.node.name, error, delay)
        loop.call_later(delay, self._wake.set)


@dataclass(frozen=True)
class PushSettings:
    forks: int = 10
    ssh: SSHSettings = field(default_factory=SSHSettings)
    apply: ApplySettings = field(default_factory=ApplySettings)


class Pusher:
    """Runs pushes (``apply_node``) in a thread pool with pooled SSH connections, and records them.

    Each result is counted in the metrics and handed to ``record_deploy`` even when the worker
    that asked for it is gone (a master stepping down mid-push): ``finish`` waits for the
    pushes in hand at shutdown.
    """

    def __init__(
        self,
        settings: PushSettings,
        telemetry: Metrics,
        record_deploy: Callable[[DeployRecord], Coroutine[Any, Any, None]],
    ) -> None:
        self.settings = settings
        self.telemetry = telemetry
        self.record_deploy = record_deploy
        self._pool = ConnectionPool()
        self._executor = ThreadPoolExecutor(max_workers=settings.forks + 2, thread_name_prefix="push")
        self._inflight: set[asyncio.Future[NodeResult]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._refused: dict[str, dict[str, str]] = {}  # access node -> upstream -> message, as last reported

    async def push(self, job: Job) -> NodeResult:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._push_safely, job)
        self._inflight.add(future)
        future.add_done_callback(self._inflight.discard)

        # recorded even when the worker is gone (a master stepping down mid-push)
        def record(done: asyncio.Future[NodeResult]) -> None:
            if not done.cancelled():
                self.record(job, done.result())

        future.add_done_callback(record)
        return await asyncio.shield(future)

    def _push_blocking(self, job: Job) -> NodeResult:
        assert job.rendered is not None
        delay = push_delay_for_tests()
        if delay:
            log.warning("push: %s at store revision %d in %.1fs (test hook)", job.node.name, job.store.revision, delay)
            time.sleep(delay)
        try:
            transport = open_transport(job.node, self.settings.ssh, pool=self._pool)
        except ObreconcileError as e:
            return NodeResult(job.node.name, NodeStatus.FAILED, step=Step.CONNECT, error=str(e))
        with transport:
            return apply_node(job.node, job.rendered, job.model, transport, job.store, self.settings.apply)

    def _push_safely(self, job: Job) -> NodeResult:
        try:
            return self._push_blocking(job)
        except Exception as e:  # a bug must not end the node's worker: report it as a failure
            log.exception("push: %s: unexpected error", job.node.name)
            return NodeResult(job.node.name, NodeStatus.FAILED, step=Step.INTERNAL, error=f"{type(e).__name__}: {e}")

    def record(self, job: Job, result: NodeResult) -> None:
        name = job.node.name
        fenced = result.refusal == Refusal.FENCED
        outcome = "refused" if fenced else result.status
        self.telemetry.applies.labels(name, outcome).inc()
        if fenced:
            self.telemetry.fenced.labels(name).inc()
            log.error("push: %s refused it: %s", name, result.error)
        if result.reloaded:
            self.telemetry.reloads.labels(name, "rolled_back" if result.rolled_back else "ok").inc()
        if result.plan is not None and result.plan.drift:
            self.telemetry.drift.labels(name).inc()
            log.warning("drift: %s: %s (corrected)", name, "; ".join(result.plan.drift))
        self.telemetry.converged.labels(name).set(1 if result.ok else 0)
        if result.plan is not None:  # a push that got as far as a plan knows what was refused
            self.report_refused(name, result.refused_upstreams)
        if result.plan is not None:
            self.telemetry.certificates.set_node(
                name, [(c.upstream, c.path, c.not_after) for c in result.plan.certificates]
            )
        if result.status == NodeStatus.CONVERGED:
            self.telemetry.lag.observe(time.monotonic() - job.since)
            log.info(
                "push: %s converged to %s (store revision %d) in %.2fs",
                name,
                job.rendered.revision if job.rendered else "?",
                job.store.revision,
                result.seconds,
            )
        record = result.record(job.store.revision, self.settings.apply.deployed_by)
        if record is None:  # a push is never skipped
            return
        task = asyncio.get_running_loop().create_task(self.record_deploy(record))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def report_refused(self, access_node: str, refused: tuple[RefusedUpstream, ...]) -> None:
        """Set the refused-upstream gauges of ``access_node`` to ``refused``; log what changed."""
        now = {r.upstream: r.message for r in refused}
        before = self._refused.get(access_node, {})
        for upstream in set(before) - set(now):
            self.telemetry.refused.remove(access_node, upstream)
            log.warning("render: %s: upstream %s renders again", access_node, upstream)
        for r in refused:
            self.telemetry.refused.labels(access_node, r.upstream).set(1)
            if before.get(r.upstream) != r.message:
                log.error("render: %s: %s", access_node, r)
        self._refused[access_node] = now

    def forget(self, access_node: str) -> None:
        """An access node no longer declared: its refused-upstream series go."""
        self.report_refused(access_node, ())
        self._refused.pop(access_node, None)

    async def finish(self, timeout: float) -> None:
        """Wait (up to ``timeout``) for the pushes in hand: a node is never left halfway."""
        if self._inflight:
            log.warning("shutdown: finishing %d push(es) in hand", len(self._inflight))
            await asyncio.wait(set(self._inflight), timeout=timeout)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self._pool.close)


def push_delay_for_tests() -> float:
    try:
        return float(os.environ.get(TEST_PUSH_DELAY, "0") or 0)
    except ValueError:
        return 0.0
