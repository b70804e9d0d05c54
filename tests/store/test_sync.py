"""GitOps semantics of sync_manifests, against both stores."""

from __future__ import annotations

from dataclasses import replace

from reconciler.manifest.model import Group, to_manifest
from reconciler.store import Provenance, Put, Store, SyncAction, plan_sync, sync_manifests
from tests.store.desired import fleet, upstream, with_upstream, without_upstream

BOB = Provenance("api", "bob", 1_700_000_000.0)


def actions(result: object) -> list[tuple[str, str, str]]:
    return [(c.action.value, c.kind, c.name) for c in result.changes]  # type: ignore[attr-defined]


def test_first_sync_adds_everything_and_reads_back(store: Store) -> None:
    desired = fleet(upstreams=20, access_nodes=2)
    result = sync_manifests(store, desired)
    assert result.writes == 24 and result.revision > result.base_revision
    assert {c.action for c in result.changes} == {SyncAction.ADD}
    back = store.desired_state()
    assert back == desired
    assert back.upstreams["u00003"].source.file == "upstreams.yaml"


def test_resync_writes_only_what_changed(store: Store) -> None:
    desired = fleet(upstreams=150, access_nodes=2)  # more than one etcd transaction holds
    first = sync_manifests(store, desired)
    writes = store.writes
    again = sync_manifests(store, desired)
    assert (again.writes, again.changes, again.revision) == (0, (), first.revision)
    changed = with_upstream(desired, upstream("u00042", weight=7))
    result = sync_manifests(store, changed)
    assert actions(result) == [("change", "Upstream", "u00042")]
    assert result.writes == 1 and store.writes - writes == 1
    assert store.audit(first.revision) == [
        e for e in store.audit() if e.revision == result.revision and e.name == "u00042"
    ]
    assert store.desired_state() == changed


def test_deletion_in_git_prunes(store: Store) -> None:
    desired = fleet(upstreams=3)
    sync_manifests(store, desired)
    result = sync_manifests(store, without_upstream(desired, "u00001"))
    assert sorted(actions(result)) == [("change", "AccessNode", "lb0.example.com:80"), ("remove", "Upstream", "u00001")]
    assert store.get("Upstream", "u00001") is None


def test_api_objects_are_kept_unless_prune_api(store: Store) -> None:
    desired = fleet(upstreams=2)
    sync_manifests(store, desired)
    store.commit([Put("Group", "team-b", to_manifest("Group", Group("team-b")), BOB)])
    kept = sync_manifests(store, desired)
    assert kept.changes == () and kept.kept_api == (("Group", "team-b"),)
    assert store.get("Group", "team-b") is not None
    pruned = sync_manifests(store, desired, prune_api=True)
    assert actions(pruned) == [("remove", "Group", "team-b")]
    assert store.get("Group", "team-b") is None


def test_git_takes_over_an_api_object_and_plan_says_so(store: Store) -> None:
    desired = fleet(upstreams=2)
    sync_manifests(store, desired)
    store.commit([Put("Group", "team-b", to_manifest("Group", Group("team-b", ("GLOBAL_RO",))), BOB)])
    declared = replace(desired, groups={**desired.groups, "team-b": Group("team-b")})
    plan = plan_sync(store, declared)
    assert [(c.action, c.name, c.old.provenance.source) for c in plan.changes] == [  # type: ignore[union-attr]
        (SyncAction.TAKEOVER, "team-b", "api")
    ]
    sync_manifests(store, declared)
    stored = store.get("Group", "team-b")
    assert stored is not None and stored.provenance.source == "manifest"
    assert stored.body == to_manifest("Group", Group("team-b"))


def test_moving_an_object_to_another_file_updates_its_provenance(store: Store) -> None:
    desired = fleet(upstreams=2)
    sync_manifests(store, desired)
    moved = with_upstream(desired, upstream("u00000", file="moved.yaml"))
    result = sync_manifests(store, moved)
    assert actions(result) == [("change", "Upstream", "u00000")]
    stored = store.get("Upstream", "u00000")
    assert stored is not None and stored.provenance.origin == "moved.yaml"


def test_every_compared_model_field_is_in_the_fingerprint() -> None:
    """fingerprint() hashes the dataclass repr: a compared field left out of it would hide changes."""
    from dataclasses import fields, is_dataclass

    from reconciler.manifest import model

    classes = [c for c in vars(model).values() if isinstance(c, type) and is_dataclass(c)]
    assert len(classes) >= 10
    for cls in classes:
        for f in fields(cls):
            assert f.repr or not f.compare, f"{cls.__name__}.{f.name} is compared but not in repr"


def test_a_stale_fingerprint_makes_a_body_comparison_not_a_write(store: Store) -> None:
    desired = fleet(upstreams=2)
    sync_manifests(store, desired)
    body = to_manifest("Upstream", desired.upstreams["u00000"])
    store.commit([Put("Upstream", "u00000", body, Provenance("manifest", "upstreams.yaml"), fingerprint="old-scheme")])
    assert sync_manifests(store, desired).writes == 0
