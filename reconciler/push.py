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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from reconciler.apply import NodeResult
from reconciler.manifest.model import AccessNode
from reconciler.plan import StoreRef
from reconciler.render import RenderedAccessNode

log = logging.getLogger("obreconcile.push")

TEST_PUSH_DELAY = "OBRECONCILE_TEST_PUSH_DELAY"
"""Test hook: seconds a push waits after its master check (tests/controller pause a master there)."""


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
    result: str = ""  # last result: converged | unchanged | failed
    error: str = ""
    failures: int = 0
    pushes: int = 0
    reloads: int = 0
    last_push: float = 0.0  # monotonic
    retry_at: float = 0.0  # monotonic
    when: float = field(default_factory=time.time)

    def converged_to(self, job: Job) -> bool:
        return (
            job.rendered is not None
            and self.result in ("converged", "unchanged")
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
        self.busy = False
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
            self.busy = True
            self.state.last_push = loop.time()
            self.job = Job(job.node, job.rendered, job.model, job.store, job.since)  # drift asked for: done now
            try:
                result = await self.push(job)
            finally:
                self.busy = False
            self.state.pushes += 1
            if result.ok:
                self.state.failures, self.state.retry_at = 0, 0.0
                self.state.revision, self.state.store_revision = job.rendered.revision, job.store.revision
                self.state.result, self.state.error = result.status, ""
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
        self.state.result, self.state.error = "failed", error
        delay = min(self.retry_initial * 2 ** (self.state.failures - 1), self.retry_max)
        self.state.retry_at = loop.time() + delay
        log.warning("push: %s failed (%s); retrying in %.1fs", job.node.name, error, delay)
        loop.call_later(delay, self._wake.set)


def push_delay_for_tests() -> float:
    try:
        return float(os.environ.get(TEST_PUSH_DELAY, "0") or 0)
    except ValueError:
        return 0.0
