"""The controller's Prometheus metrics, in one registry per controller (no global registry).

Names (all prefixed ``obreconcile_``): ``backend_up{upstream,backend}``,
``upstream_panic{upstream}``, ``check_duration_seconds{base_check}`` (histogram),
``checks_total{base_check,result}``, ``health_transitions_total{upstream,backend,check,to}``,
``applies_total{access_node,result}``, ``reloads_total{access_node,result}``,
``drift_detected_total{access_node}``, ``convergence_lag_seconds`` (histogram: from the change
that triggered a push to the node answering the new revision), ``master``, ``store_healthy``,
``store_revision``, ``fenced_pushes_total{access_node}``,
``access_node_converged{access_node}``, ``upstream_refused{access_node,upstream}`` (1 while the
renderer refuses the upstream there and its files are kept at their last good rendering; the
series goes when it renders again), ``certificate_expiry_seconds{access_node,upstream,path}``
(seconds until a certificate an upstream names expires, as the node's last push read it;
negative once expired; computed at each scrape).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CHECK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
LAG_BUCKETS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 20.0, 30.0, 60.0, 120.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.backend_up = Gauge(
            "obreconcile_backend_up",
            "1 when the backend passes every check of its upstream",
            ["upstream", "backend"],
            registry=r,
        )
        self.upstream_panic = Gauge(
            "obreconcile_upstream_panic", "1 when no backend is eligible and all are enabled", ["upstream"], registry=r
        )
        self.check_seconds = Histogram(
            "obreconcile_check_duration_seconds",
            "Time one check took",
            ["base_check"],
            buckets=CHECK_BUCKETS,
            registry=r,
        )
        self.checks = Counter("obreconcile_checks", "Checks run", ["base_check", "result"], registry=r)
        self.transitions = Counter(
            "obreconcile_health_transitions",
            "Rise/fall transitions of a check on a backend",
            ["upstream", "backend", "check", "to"],
            registry=r,
        )
        self.applies = Counter(
            "obreconcile_applies", "Applies on access nodes by result", ["access_node", "result"], registry=r
        )
        self.reloads = Counter(
            "obreconcile_reloads", "nginx reloads on access nodes by result", ["access_node", "result"], registry=r
        )
        self.drift = Counter(
            "obreconcile_drift_detected",
            "Hand edits found (and corrected) on access nodes",
            ["access_node"],
            registry=r,
        )
        self.fenced = Counter(
            "obreconcile_fenced_pushes",
            "Pushes refused by a node running a newer revision",
            ["access_node"],
            registry=r,
        )
        self.lag = Histogram(
            "obreconcile_convergence_lag_seconds",
            "From a change (health or desired state) to an access node serving it",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.converged = Gauge(
            "obreconcile_access_node_converged",
            "1 when the access node runs what the controller last rendered for it",
            ["access_node"],
            registry=r,
        )
        self.refused = Gauge(
            "obreconcile_upstream_refused",
            "1 while the renderer refuses the upstream on the access node (its files kept as they are live)",
            ["access_node", "upstream"],
            registry=r,
        )
        self.master = Gauge("obreconcile_master", "1 while this controller is the master", registry=r)
        self.store_healthy = Gauge("obreconcile_store_healthy", "1 while the store answers", registry=r)
        self.store_revision = Gauge("obreconcile_store_revision", "The desired-state revision last read", registry=r)
        self._check_children: dict[tuple[str, bool], tuple[Histogram, Counter]] = {}
        self.certificates = _CertificateExpiry()
        r.register(self.certificates)

    def observe_check(self, base_check: str, passed: bool, seconds: float) -> None:
        children = self._check_children.get((base_check, passed))
        if children is None:
            children = (
                self.check_seconds.labels(base_check),
                self.checks.labels(base_check, "pass" if passed else "fail"),
            )
            self._check_children[(base_check, passed)] = children
        children[0].observe(seconds)
        children[1].inc()

    def text(self) -> bytes:
        return bytes(generate_latest(self.registry))


class _CertificateExpiry(Collector):
    """``obreconcile_certificate_expiry_seconds``: not-after times by (access node, upstream,
    path), reported as seconds left at scrape time, so that the value never goes stale."""

    def __init__(self) -> None:
        self._not_after: dict[str, dict[tuple[str, str], float]] = {}

    def set_node(self, access_node: str, certificates: Iterable[tuple[str, str, float]]) -> None:
        """Replace what is known of ``access_node``'s certificates: (upstream, path, not_after)."""
        self._not_after[access_node] = {(u, p): t for u, p, t in certificates}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "obreconcile_certificate_expiry_seconds",
            "Seconds until a certificate an upstream names expires (negative: expired), as read on the access node",
            labels=["access_node", "upstream", "path"],
        )
        now = time.time()
        for node, certificates in sorted(self._not_after.items()):
            for (upstream, path), not_after in sorted(certificates.items()):
                family.add_metric([node, upstream, path], not_after - now)
        yield family
