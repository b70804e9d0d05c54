"""The store contract: every test runs unchanged against SQLite and a real etcd."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

from reconciler.errors import ConflictError
from reconciler.store import (
    AuditEntry,
    Delete,
    DeployRecord,
    DeployResult,
    HealthRecord,
    Provenance,
    Put,
    Store,
    TemplateSet,
)
from reconciler.store.etcd import MAX_TXN_OPS, EtcdStore

ALICE = Provenance("api", "alice", 1_700_000_000.0)
GIT = Provenance("manifest", "groups.yaml", 1_700_000_001.0)


def group(name: str, *flags: str) -> dict[str, object]:
    return {"apiVersion": "openbalancer/v1", "kind": "Group", "name": name, "global_permissions": list(flags)}


def put(name: str, *flags: str, by: Provenance = GIT, expect: int | None = None) -> Put:
    return Put("Group", name, group(name, *flags), by, expect)


def test_crud(store: Store) -> None:
    assert store.revision() == 0
    assert store.get("Group", "a") is None
    r1 = store.commit([put("a")])
    stored = store.get("Group", "a")
    assert stored is not None
    assert (stored.body, stored.revision, stored.provenance) == (group("a"), r1, GIT)
    r2 = store.commit([put("a", "GLOBAL_RO", by=ALICE)])
    stored = store.get("Group", "a")
    assert stored is not None and stored.body == group("a", "GLOBAL_RO") and stored.provenance == ALICE
    assert stored.revision == r2
    r3 = store.commit([Delete("Group", "a", ALICE)])
    assert store.get("Group", "a") is None
    assert store.revision() == r3
    assert store.snapshot().objects == {}


def test_revisions_strictly_increase(store: Store) -> None:
    seen = [store.revision()]
    for i in range(5):
        seen.append(store.commit([put(f"g{i}")]))
        assert store.revision() == seen[-1]
    assert seen == sorted(set(seen))
    snapshot = store.snapshot()
    assert snapshot.revision == seen[-1]
    assert [snapshot.objects[("Group", f"g{i}")].revision for i in range(5)] == seen[1:]


def test_records_do_not_move_the_revision(store: Store) -> None:
    revision = store.commit([put("a")])
    store.record_deploy(DeployRecord("lb1:80", revision, {"upstreams.conf": "ab" * 32}, DeployResult.CONVERGED, when=1.0))
    store.record_health([HealthRecord("api", "app1:8080", "api-http", "up", 2, "200", 2.0)])
    assert store.revision() == revision
    assert store.deploy_records() == {
        "lb1:80": DeployRecord("lb1:80", revision, {"upstreams.conf": "ab" * 32}, DeployResult.CONVERGED, when=1.0)
    }
    assert store.health_records() == {
        ("api", "app1:8080", "api-http"): HealthRecord("api", "app1:8080", "api-http", "up", 2, "200", 2.0)
    }


def test_a_deploy_record_keeps_the_upstreams_refused_there_and_a_new_refusal_is_history(store: Store) -> None:
    revision = store.commit([put("a")])
    refused = {"upstream": "api", "message": "template x: refusing value 'a b'", "field": "", "value": "'a b'"}
    record = DeployRecord(
        "lb1:80", revision, {}, DeployResult.CONVERGED, when=1.0, refused=({**refused, "paths": ["http/api.conf"]},)
    )
    store.record_deploy(DeployRecord("lb1:80", revision, {}, DeployResult.CONVERGED, when=1.0))
    store.record_deploy(record)
    store.record_deploy(record)  # the same outcome again: no new entry
    assert store.deploy_records() == {"lb1:80": record}
    assert [e.record.refused for e in store.deploy_history()] == [record.refused, ()]


def test_commit_applies_whole_or_not_at_all(store: Store) -> None:
    base = store.commit([put("a")])
    with pytest.raises(ConflictError):
        store.commit([put("b"), put("a", "SUPER", expect=base + 100)])
    assert store.get("Group", "b") is None
    assert store.get("Group", "a") is not None and store.get("Group", "a").body == group("a")  # type: ignore[union-attr]
    assert store.revision() == base


def test_big_commit_is_one_revision_and_stale_one_writes_nothing(store: Store) -> None:
    """More objects than one etcd transaction takes: still one revision, all or nothing."""
    count = MAX_TXN_OPS * 3
    base = store.commit([put("seed")])
    revision = store.commit([put(f"g{i:04d}") for i in range(count)], base_revision=base)
    snapshot = store.snapshot()
    assert len(snapshot.objects) == count + 1
    assert {o.revision for k, o in snapshot.objects.items() if k[1] != "seed"} == {revision}
    with pytest.raises(ConflictError):
        store.commit([Delete("Group", f"g{i:04d}", ALICE) for i in range(count)], base_revision=base)
    assert store.snapshot() == snapshot
    if isinstance(store, EtcdStore):  # the refused stage is gone at once
        assert store._range_all(store._k("stage/"), keys_only=True) == []
    assert len([e for e in store.audit(base) if e.revision == revision]) == count


def test_concurrent_compare_and_swap_one_wins(open_handle: Callable[[], Store]) -> None:
    first, second = open_handle(), open_handle()
    base = first.commit([put("shared")])
    barrier = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def writer(handle: Store, name: str) -> None:
        barrier.wait()
        try:
            outcomes[name] = handle.commit([put("shared", name.upper()), put(name)], base_revision=base)
        except ConflictError as e:
            outcomes[name] = e

    threads = [threading.Thread(target=writer, args=(h, n)) for h, n in ((first, "super"), (second, "global_ro"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    winners = [n for n, o in outcomes.items() if isinstance(o, int)]
    losers = [n for n, o in outcomes.items() if isinstance(o, ConflictError)]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    assert first.get("Group", losers[0]) is None
    shared = second.get("Group", "shared")
    assert shared is not None and shared.body == group("shared", winners[0].upper())


def test_watch_delivers_every_change_in_order(open_handle: Callable[[], Store]) -> None:
    writer, watcher = open_handle(), open_handle()
    start = watcher.revision()
    names = [f"w{i:02d}" for i in range(25)]

    def write() -> None:
        for name in names:
            writer.commit([put(name)])
            if name.endswith("0"):
                time.sleep(0.05)

    thread = threading.Thread(target=write)
    thread.start()
    seen: list[AuditEntry] = []
    after = start
    deadline = time.monotonic() + 30
    while len(seen) < len(names) and time.monotonic() < deadline:
        changes = watcher.watch(after, timeout=5)
        seen.extend(changes)
        after = changes[-1].revision if changes else after
    thread.join(30)
    assert [e.name for e in seen] == names
    revisions = [e.revision for e in seen]
    assert revisions == sorted(set(revisions))


def test_wait_returns_at_once_on_a_change(open_handle: Callable[[], Store]) -> None:
    writer, watcher = open_handle(), open_handle()
    start = watcher.revision()
    timer = threading.Timer(0.3, lambda: writer.commit([put("late")]))
    timer.start()
    began = time.monotonic()
    revision = watcher.wait(start, timeout=10)
    timer.join()
    assert revision > start
    assert time.monotonic() - began < 3
    assert watcher.wait(revision, timeout=0.2) == revision


def test_lease_expiry_releases_a_lock(open_handle: Callable[[], Store]) -> None:
    first, second = open_handle(), open_handle()
    lock = first.acquire_lock("master", "controller-a", ttl=2)
    assert lock is not None
    assert second.acquire_lock("master", "controller-b", ttl=2) is None
    assert second.lock_holder("master") == "controller-a"
    assert lock.refresh()
    deadline = time.monotonic() + 10
    while second.lock_holder("master") is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert second.lock_holder("master") is None
    taken = second.acquire_lock("master", "controller-b", ttl=5)
    assert taken is not None and second.lock_holder("master") == "controller-b"
    assert not lock.refresh()
    taken.release()
    assert first.lock_holder("master") is None


def test_lock_holders_lists_the_live_locks_under_a_prefix(open_handle: Callable[[], Store]) -> None:
    first, second = open_handle(), open_handle()
    held = [first.acquire_lock(f"management/ctl-{i}", f"host-{i}", ttl=30) for i in range(3)]
    other = first.acquire_lock("master", "host-0", ttl=30)
    short = second.acquire_lock("management/ctl-short", "host-short", ttl=1)
    assert all(lock is not None for lock in [*held, other, short])
    expected = {f"management/ctl-{i}": f"host-{i}" for i in range(3)}
    assert second.lock_holders("management/") == {**expected, "management/ctl-short": "host-short"}
    assert held[1] is not None
    held[1].release()
    del expected["management/ctl-1"]
    deadline = time.monotonic() + 10  # the 1 s lock lapses (etcd: its lease expires)
    while "management/ctl-short" in first.lock_holders("management/") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert first.lock_holders("management/") == expected
    assert first.lock_holders("nothing/") == {}


def test_audit_log_is_complete(store: Store) -> None:
    r1 = store.commit([put("a"), put("b", by=ALICE)])
    r2 = store.commit([put("a", "SUPER", by=ALICE)])
    r3 = store.commit([Delete("Group", "b", GIT)])
    expected = [
        AuditEntry(r1, "Group", "a", "put", GIT),
        AuditEntry(r1, "Group", "b", "put", ALICE),
        AuditEntry(r2, "Group", "a", "put", ALICE),
        AuditEntry(r3, "Group", "b", "delete", GIT),
    ]
    assert store.audit() == expected
    assert store.audit(r1) == expected[2:]
    assert store.audit(r3) == []


def test_store_reports_healthy(store: Store) -> None:
    assert store.check_health().ok


WRITER = """
import sys
from reconciler.store import Provenance, Put, open_store
url, who = sys.argv[1], sys.argv[2]
with open_store(url) as store:
    for i in range(20):
        body = {"apiVersion": "openbalancer/v1", "kind": "Group", "name": f"{who}-{i}", "global_permissions": []}
        store.commit([Put("Group", f"{who}-{i}", body, Provenance("api", who))])
"""


def test_two_processes_write_at_once(store_url: str, store: Store) -> None:
    """Two CLI runs (or a CLI beside serve) writing the same store: every write lands, in order."""
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, store_url, who]) for who in ("p1", "p2")]
    assert [w.wait(60) for w in writers] == [0, 0]
    entries = store.audit()
    assert len(entries) == 40 and len(store.snapshot().objects) == 40
    revisions = [e.revision for e in entries]
    assert revisions == sorted(set(revisions)) and store.revision() == revisions[-1]
    for who in ("p1", "p2"):
        assert [e.name for e in entries if e.provenance.origin == who] == [f"{who}-{i}" for i in range(20)]


def test_store_id_is_stable_for_a_store_and_differs_between_stores(
    store: Store, open_handle: Callable[[], Store], tmp_path_factory: pytest.TempPathFactory
) -> None:
    first = store.store_id()
    assert len(first) == 32 and int(first, 16) >= 0 and store.created  # a fresh store, made by this handle
    store.commit([put("a")])
    with open_handle() as again:
        assert again.store_id() == first and not again.created
    from reconciler.store import open_store

    other = open_store(f"sqlite:///{tmp_path_factory.mktemp('other')}/state.db")
    try:
        assert other.store_id() != first
    finally:
        other.close()


def test_record_deploys_writes_every_record_and_moves_no_revision(store: Store) -> None:
    revision = store.commit([put("a")])
    records = [
        DeployRecord(f"lb{i}:80", revision, {"http/a.conf": f"{i:064x}"}, DeployResult.CONVERGED, when=2.0) for i in range(150)
    ]
    store.record_deploys(records)  # more than one etcd transaction holds
    assert store.deploy_records() == {r.access_node: r for r in records}
    assert store.revision() == revision
    store.record_deploys([DeployRecord("lb3:80", revision, {}, DeployResult.FAILED, "nginx -t refused", when=3.0)])
    assert store.deploy_records()["lb3:80"].result == "failed" and len(store.deploy_records()) == 150


def test_deploy_history_keeps_each_new_outcome_newest_first_in_pages(store: Store) -> None:
    revision = store.commit([put("a")])
    first = [DeployRecord(f"lb{i}:80", revision, {}, DeployResult.CONVERGED, when=1.0, by="apply ci@host") for i in range(3)]
    store.record_deploys(first)
    unchanged = DeployRecord("lb1:80", revision, {}, DeployResult.CONVERGED, when=2.0, by="serve ctl", seconds=0.4)
    store.record_deploy(unchanged)  # a drift check that found nothing: no history entry
    failed = DeployRecord("lb1:80", revision, {}, DeployResult.FAILED, "ssh: refused", when=3.0, by="serve ctl", step="connect")
    store.record_deploy(failed)
    store.record_deploy(DeployRecord("lb1:80", revision, {}, DeployResult.FAILED, "ssh: refused", when=4.0, by="serve ctl", step="connect"))
    back = DeployRecord("lb1:80", revision, {}, DeployResult.CONVERGED, when=5.0, by="serve ctl", seconds=0.7)
    store.record_deploy(back)
    assert store.deploy_records()["lb1:80"] == back
    history = store.deploy_history()
    assert [e.record for e in history] == [back, failed, *reversed(first)]
    seqs = [e.seq for e in history]
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == len(seqs)
    page = store.deploy_history(limit=2)
    assert [e.record for e in page] == [back, failed]
    rest = store.deploy_history(limit=10, before=page[-1].seq)
    assert [e.record for e in rest] == list(reversed(first))
    assert store.deploy_history(limit=10, before=rest[-1].seq) == []


def test_last_known_addresses_are_kept_and_replaced(open_handle: Callable[[], Store]) -> None:
    first, second = open_handle(), open_handle()
    assert second.known_addresses() == {}
    first.record_addresses({"app1.internal": ("10.0.0.1", "10.0.0.2"), "db.internal": ("fd00::5",)})
    first.record_addresses({})
    assert second.known_addresses() == {"app1.internal": ("10.0.0.1", "10.0.0.2"), "db.internal": ("fd00::5",)}
    second.record_addresses({"app1.internal": ("10.0.0.3",)})
    assert first.known_addresses() == {"app1.internal": ("10.0.0.3",), "db.internal": ("fd00::5",)}


def test_the_templates_renders_use_are_named_and_cleared(open_handle: Callable[[], Store]) -> None:
    first, second = open_handle(), open_handle()
    assert second.templates() is None
    revision = first.revision()
    declared = TemplateSet({"header.conf.j2": "# ours\n", "http/extra.j2": "x"}, "templates")
    first.record_templates(declared)
    assert second.templates() == declared and second.templates().digest == declared.digest  # type: ignore[union-attr]
    assert TemplateSet({"header.conf.j2": "# theirs\n"}).digest != declared.digest
    assert first.revision() == revision  # not an object change: the render revision counts them
    second.record_templates(None)
    assert first.templates() is None
