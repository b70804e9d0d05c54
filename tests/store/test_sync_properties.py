"""Properties of sync_manifests over random sequences of desired states (SQLite, for speed)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.manifest.model import DesiredState, Group, to_manifest
from reconciler.store import Provenance, Put, open_store, sync_manifests
from tests.store.desired import upstream

NAMES = [f"u{i}" for i in range(6)]
states = st.dictionaries(st.sampled_from(NAMES), st.integers(1, 3), max_size=6)
api_groups = st.sets(st.sampled_from(["g1", "g2", "g3"]), max_size=3)


def desired_of(weights: dict[str, int], groups: set[str]) -> DesiredState:
    return DesiredState(
        groups={g: Group(g) for g in groups},
        upstreams={name: upstream(name, backends=1, weight=w) for name, w in weights.items()},
    )


@settings(max_examples=30, deadline=None)
@given(
    steps=st.lists(st.tuples(states, api_groups, st.sets(st.sampled_from(["g1", "g2", "g3"]))), min_size=1, max_size=4)
)
def test_the_store_says_what_the_manifests_say(steps: list[tuple[dict[str, int], set[str], set[str]]]) -> None:
    with tempfile.TemporaryDirectory() as tmp, open_store(f"sqlite:///{Path(tmp) / 's.db'}") as store:
        for weights, api_created, declared_groups in steps:
            api_only = api_created - declared_groups
            for g in api_created:
                store.commit(
                    [Put("Group", g, to_manifest("Group", Group(g, ("GLOBAL_RO",))), Provenance("api", "bob"))]
                )
            desired = desired_of(weights, declared_groups)
            before = store.snapshot()
            result = sync_manifests(store, desired)
            after = store.snapshot()
            manifest_objects = {k for k, o in after.objects.items() if o.provenance.source == "manifest"}
            assert manifest_objects == {("Upstream", n) for n in weights} | {("Group", g) for g in declared_groups}
            api_kept = {k for k, o in after.objects.items() if o.provenance.source == "api"}
            assert api_kept == {("Group", g) for g in api_only} | {
                k for k, o in before.objects.items() if o.provenance.source == "api" and k[1] not in declared_groups
            }
            changed = {
                k for k in set(before.objects) | set(after.objects) if before.objects.get(k) != after.objects.get(k)
            }
            assert result.writes == len(changed)
            assert sync_manifests(store, desired).writes == 0
