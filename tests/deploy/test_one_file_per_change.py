"""One upstream changed: its file and the revision's (http/_default.conf) change, and only those travel."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from tests.deploy.conftest import address
from tests.services.backends import HttpBackend
from tests.services.fleet import Fleet, SimulatedNode

COUNT = 30


def _upstreams(backends: list[HttpBackend], weight: int = 1) -> dict[str, Any]:
    out: dict[str, Any] = {f"u{i:02}": [address(backends[i % 4])] for i in range(COUNT)}
    out["u07"] = {"nodes": [{"hostname": address(backends[3]), "weight": weight}]}
    return out


def _release_files(release: Path) -> dict[str, str]:
    return {
        p.relative_to(release).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(release.rglob("*"))
        if p.is_file() and ".obreconcile" not in p.parts
    }


def _live_release(node: SimulatedNode) -> Path:
    return Path(os.readlink(node.config_dir))


def test_a_one_upstream_change_plans_and_uploads_two_files_per_node(
    fleet: Fleet, backends: list[HttpBackend], tmp_path: Path
) -> None:
    manifests = fleet.write_manifests(tmp_path / "m", _upstreams(backends))
    first = fleet.cli("apply", manifests)
    assert first.returncode == 0, first.stdout + first.stderr
    assert {r["uploaded"] for r in json.loads(first.stdout)["access_nodes"]} == {COUNT + 1}
    old = {n.name: (_live_release(n), _release_files(_live_release(n))) for n in fleet.nodes}

    fleet.write_manifests(manifests, _upstreams(backends, weight=4))
    plan = fleet.cli("plan", manifests)
    assert plan.returncode == 0, plan.stderr
    for node in json.loads(plan.stdout)["access_nodes"]:
        assert [(f["op"], f["path"]) for f in node["files"]] == [
            ("change", "http/_default.conf"),
            ("change", "http/u07.conf"),
        ]
    text = fleet.cli("plan", manifests, output="text").stdout
    assert text.count("--- live/") == 2 * len(fleet.nodes), text
    applied = fleet.cli("apply", manifests)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert [r["uploaded"] for r in json.loads(applied.stdout)["access_nodes"]] == [2] * len(fleet.nodes)
    for node in fleet.nodes:
        release, files = _live_release(node), _release_files(_live_release(node))
        old_release, old_files = old[node.name]
        assert release != old_release and files == node.marker()["digests"]  # complete, as recorded
        assert {p for p in files if files[p] != old_files.get(p)} == {"http/_default.conf", "http/u07.conf"}
        assert _release_files(old_release) == old_files  # the previous release (rollback) untouched
        assert "weight=4" in node.live_files()["http/u07.conf"] and node.served_revision() == node.marker()["revision"]
        assert node.get("u07.example.com")[1] == "b3"


def test_a_hand_made_link_or_file_is_removed_and_a_hand_edit_never_reaches_the_old_release(
    fleet: Fleet, backends: list[HttpBackend], tmp_path: Path
) -> None:
    manifests = fleet.write_manifests(tmp_path / "m", _upstreams(backends))
    assert fleet.cli("apply", manifests).returncode == 0
    node = fleet.nodes[0]
    before = _live_release(node)
    (node.config_dir / "http" / "extra.conf").write_text("# by hand\n")
    (node.config_dir / "http" / "u03.conf").write_text("# edited by hand\n")
    applied = fleet.cli("apply", manifests)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    result = {r["access_node"]: r for r in json.loads(applied.stdout)["access_nodes"]}[node.name]
    assert result["uploaded"] == 1  # u03.conf; extra.conf removed on the node
    live = node.live_files()
    assert "extra.conf" not in "".join(live) and "edited by hand" not in live["http/u03.conf"]
    assert _release_files(_live_release(node)) == node.marker()["digests"]
    assert (before / "http" / "u03.conf").read_text() == "# edited by hand\n"  # that release was edited

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.conf").write_text("# not ours\n")
    (node.config_dir / "http" / "linked").symlink_to(outside)  # a link: every file is sent again
    applied = fleet.cli("apply", manifests)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    result = {r["access_node"]: r for r in json.loads(applied.stdout)["access_nodes"]}[node.name]
    assert result["uploaded"] == COUNT + 1
    assert ("remove", "http/linked") in {(f["op"], f["path"]) for f in result["plan"]["files"]}
    assert not (node.config_dir / "http" / "linked").exists() and (outside / "keep.conf").is_file()
