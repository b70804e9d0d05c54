"""Where the checkout lies changes nothing: the same manifests from another path write 0 objects."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from tests.deploy.conftest import address
from tests.services.backends import HttpBackend
from tests.services.fleet import ROOT, Fleet


def test_the_same_manifests_from_two_paths_write_nothing_the_second_time(
    fleet: Fleet, backends: list[HttpBackend], tmp_path: Path
) -> None:
    first = tmp_path / "ci-1" / "repo"
    (first / ".git").mkdir(parents=True)  # a checkout: its root is where .git is
    fleet.write_manifests(
        first / "manifests", {"web": [address(b) for b in backends[:2]], "api": [address(backends[2])]}
    )
    applied = fleet.cli("apply", first / "manifests")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    revision = json.loads(applied.stdout)["store"]["revision"]

    second = tmp_path / "ci-2" / "elsewhere" / "repo"
    shutil.copytree(first, second)
    for path in (second / "manifests", Path(os.path.relpath(second / "manifests", ROOT))):  # absolute, relative
        plan = fleet.cli("plan", path, extra=["--detailed-exitcode"])
        assert plan.returncode == 0, plan.stdout + plan.stderr
        assert json.loads(plan.stdout)["store"]["changes"] == []
        again = fleet.cli("apply", path)
        assert again.returncode == 0, again.stdout + again.stderr
        document = json.loads(again.stdout)
        assert document["store"]["writes"] == 0 and document["store"]["revision"] == revision
        assert document["summary"]["unchanged"] == len(fleet.nodes)

    moved = second / "manifests" / "upstreams.yaml"
    moved.rename(second / "manifests" / "web.yaml")  # a file renamed in the repository is a change,
    plan = fleet.cli("plan", second / "manifests")
    origins = {c["origin"] for c in json.loads(plan.stdout)["store"]["changes"]}  # named from the root
    assert origins == {"manifests/web.yaml"}, plan.stdout
