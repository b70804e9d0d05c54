"""serve's obreconcile_certificate_expiry_seconds: from each push's plan, seconds left at scrape time."""

from __future__ import annotations

import asyncio
import re
import time

from reconciler.deploy.apply import NodeResult, NodeStatus
from reconciler.deploy.plan import CertificateExpiry, NodePlan, StoreRef
from reconciler.errors import Step
from reconciler.manifest.model import AccessNode, Connection
from reconciler.metrics import Metrics
from reconciler.serve.push import Job, Pusher, PushSettings


def expiry(metrics: Metrics) -> dict[tuple[str, str, str], float]:
    out = {}
    for line in metrics.text().decode().splitlines():
        match = re.fullmatch(
            r'obreconcile_certificate_expiry_seconds\{access_node="(.*?)",path="(.*?)",upstream="(.*?)"\} (\S+)', line
        )
        if match:
            out[(match[1], match[3], match[2])] = float(match[4])
    return out


def test_each_push_replaces_its_nodes_certificates() -> None:
    async def scenario() -> Metrics:
        metrics = Metrics()

        async def record(_: object) -> None:
            pass

        pusher = Pusher(PushSettings(), metrics, record)
        node = AccessNode("lb1", "ops", Connection("local"))
        job = Job(node, None, {}, StoreRef("s", 1), time.monotonic())
        soon = time.time() + 3 * 86400
        plan = NodePlan("lb1", "r", None, (), (), certificates=(CertificateExpiry("web", "/c/web.pem", soon),))
        pusher.record(job, NodeResult("lb1", NodeStatus.UNCHANGED, plan))
        assert 3 * 86400 - 60 < expiry(metrics)[("lb1", "web", "/c/web.pem")] <= 3 * 86400
        pusher.record(job, NodeResult("lb1", NodeStatus.FAILED, None, Step.CONNECT, "refused"))  # nothing read: kept
        assert ("lb1", "web", "/c/web.pem") in expiry(metrics)
        pusher.record(job, NodeResult("lb1", NodeStatus.UNCHANGED, NodePlan("lb1", "r", None, (), ())))
        assert expiry(metrics) == {}  # the upstream no longer names it
        await pusher.close()
        return metrics

    asyncio.run(scenario())
