"""The same store contents give the same bytes, whether apply or serve renders them."""

from __future__ import annotations

from pathlib import Path

from reconciler.deploy.fleet import stored_health
from reconciler.health.monitor import Monitor
from reconciler.health.probe import Prober
from reconciler.health.state import MASTER_LOCK, HealthSource, probes_of
from reconciler.render.renderer import Renderer
from reconciler.resolve import StaticResolver
from reconciler.store import HealthRecord, open_store, sync_manifests
from tests.render.desired import access_node, state_of, upstream

CHECK = {"kind": "Check", "name": "fast", "base_check": "tcp", "interval": "1s"}


def test_apply_and_serve_render_identical_files_from_the_same_store(tmp_path: Path) -> None:
    web = upstream(
        "web",
        "10.0.0.1:80",
        "10.0.0.2:80",
        {"hostname": "10.0.0.3:80", "failover": 1},
        checks=["fast"],
        min_servers=2,
        listen={"server_names": ["web.example.com"]},
    )
    state = state_of([CHECK, web, access_node("lb1:80", "web"), access_node("lb2:80", "web")])
    with open_store(f"sqlite:///{tmp_path}/state.db") as store:
        sync_manifests(store, state)
        store.record_health([HealthRecord("web", "10.0.0.1:80", "fast", "down", 3)])
        assert stored_health(store, state).source is HealthSource.STALE  # no controller: not used
        lease = store.acquire_lock(MASTER_LOCK, "ctl-1", 10)
        assert lease is not None
        used = stored_health(store, state)  # what apply and plan render with
        monitor = Monitor(Prober(1), lambda upstream: None)  # what serve renders with
        monitor.load(store.health_records())
        monitor.probes = probes_of(state)
        snapshot = store.snapshot().desired_state()  # serve reads the state back from the store
    assert used.source is HealthSource.CONTROLLER and used.health == monitor.health()
    resolver = StaticResolver({})
    applied = Renderer(resolver=resolver).render(state, used.health)
    served = Renderer(resolver=resolver).render(snapshot, monitor.health())
    assert {n: r.files for n, r in applied.items()} == {n: r.files for n, r in served.items()}
    assert "10.0.0.1:80" in applied["lb1:80"].files["http/web.conf"]
    assert " down;" in applied["lb1:80"].files["http/web.conf"]
    assert applied["lb1:80"].health == ("upstream web: 10.0.0.1:80 down (health); tier 1 in use",)
