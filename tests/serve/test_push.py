"""A node's worker on its own (no SSH): pushes only what differs, once per window, backoff on failure."""

from __future__ import annotations

import asyncio
import itertools
import time

from reconciler.deploy.apply import NodeResult, NodeStatus
from reconciler.deploy.plan import StoreRef
from reconciler.errors import Step
from reconciler.manifest.model import AccessNode, Connection
from reconciler.render.renderer import RenderedAccessNode
from reconciler.serve.push import Job, NodeWorker

NODE = AccessNode("lb1:80", "ops", Connection("local"))


def job(revision: str, drift: bool = False) -> Job:
    return Job(NODE, RenderedAccessNode(NODE.name, revision, {}), {}, StoreRef("s", 1), time.monotonic(), drift)


class FakeNode:
    def __init__(self, failures: int = 0) -> None:
        self.pushes: list[tuple[float, str]] = []
        self.failures = failures

    async def push(self, job: Job) -> NodeResult:
        assert job.rendered is not None
        self.pushes.append((time.monotonic(), job.rendered.revision))
        await asyncio.sleep(0.01)
        if self.failures:
            self.failures -= 1
            return NodeResult(NODE.name, NodeStatus.FAILED, step=Step.CONNECT, error="unreachable")
        return NodeResult(NODE.name, NodeStatus.CONVERGED, reloaded=True)


async def _settle(worker: NodeWorker, seconds: float) -> None:
    await asyncio.sleep(seconds)
    await worker.stop()


def test_pushes_are_coalesced_to_one_per_window_and_the_newest_job_wins() -> None:
    async def scenario() -> FakeNode:
        node = FakeNode()
        worker = NodeWorker(NODE.name, node.push, lambda: True, coalesce=0.3)
        worker.start()
        worker.offer(job("r1"))
        await asyncio.sleep(0.05)
        for revision in ("r2", "r3", "r4"):  # arrive during the window after the first push
            worker.offer(job(revision))
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)
        worker.offer(job("r4"))  # what the node runs already: nothing to do
        await _settle(worker, 0.4)
        assert worker.state.revision == "r4" and worker.state.reloads == 2
        return node

    node = asyncio.run(scenario())
    assert [r for _, r in node.pushes] == ["r1", "r4"]
    assert node.pushes[1][0] - node.pushes[0][0] >= 0.3


def test_a_drift_check_pushes_even_when_nothing_changed() -> None:
    async def scenario() -> FakeNode:
        node = FakeNode()
        worker = NodeWorker(NODE.name, node.push, lambda: True, coalesce=0.05)
        worker.start()
        worker.offer(job("r1"))
        await asyncio.sleep(0.1)
        worker.offer(job("r1", drift=True))
        await _settle(worker, 0.2)
        return node

    assert [r for _, r in asyncio.run(scenario()).pushes] == ["r1", "r1"]


def test_failures_back_off_exponentially_and_a_non_master_never_pushes() -> None:
    async def scenario() -> FakeNode:
        node = FakeNode(failures=4)
        worker = NodeWorker(NODE.name, node.push, lambda: True, coalesce=0.0, retry_initial=0.1, retry_max=0.15)
        worker.start()
        worker.offer(job("r1"))
        await asyncio.sleep(0.1 + 0.15 * 3 + 0.3)
        await worker.stop()
        assert worker.state.result == "converged" and worker.state.failures == 0
        return node

    node = asyncio.run(scenario())
    times = [t for t, _ in node.pushes]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) == 5
    assert gaps[0] >= 0.1 and all(g >= 0.15 for g in gaps[1:])  # 0.1, then 0.2, 0.4, 0.8 capped at 0.15
    assert gaps[3] < 0.35

    async def follower() -> FakeNode:
        node = FakeNode()
        worker = NodeWorker(NODE.name, node.push, lambda: False, coalesce=0.0)
        worker.start()
        worker.offer(job("r1"))
        await _settle(worker, 0.1)
        return node

    assert asyncio.run(follower()).pushes == []
