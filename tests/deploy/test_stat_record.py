"""The stat record (facts.files_command, scripts.record_script): a release's files are hashed
once, when they are staged, and the facts of later applies hash only the files whose stat
changed since; a hand edit is always seen. The deploy's stage and the facts run in real
shells on real files here (local transport), and through a real fleet (sshd + nginx) below."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.deploy.facts import STAT_RECORD, files_command, observe, parse_digests, parse_hashed
from reconciler.deploy.layout import NodeLayout
from reconciler.deploy.scripts import Deploy, parse_steps, steps_script
from reconciler.manifest.validate import load_desired_state
from reconciler.transport import LocalTransport, SSHSettings, open_transport
from tests.deploy.test_deploy_script import staged
from tests.services.fleet import Fleet
from tests.services.fleet_fixtures import fleet_under_test

FILES = {"http/a.conf": b"aaa", "http/b c.conf": b"bbb", "http/c.conf": b"ccc"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Node:
    """A node's managed directory under ``root``: stage (and switch to) releases, read the facts."""

    def __init__(self, root: Path) -> None:
        self.layout = NodeLayout(str(root / "conf"))

    def deploy(self, release_id: str, files: dict[str, bytes], base: str | None = None) -> str:
        """Stage and switch; the stage's own line (``hashed <n> of <files>``)."""
        release = self.layout.release(release_id)
        steps = Deploy(self.layout, release, "true", "true", "/nonexistent", "r", None, 1, base=base).steps()
        steps = {name: steps[name] for name in ("stage", "switch")}
        script, boundary = steps_script(steps)
        answer = LocalTransport().run(script, input=staged(files))
        ran = parse_steps(answer, boundary, list(steps))
        assert [r.exit_code for r in ran.values()] == [0, 0], answer
        return ran["stage"].text.strip()

    def facts(self) -> tuple[dict[str, str], tuple[int, int] | None]:
        result = LocalTransport().run(files_command(self.layout.config_dir))
        assert result.ok and not result.stderr, result
        return parse_digests(result), parse_hashed(result)

    def live(self, path: str) -> Path:
        return Path(self.layout.config_dir) / path


def edit_keeping_size_and_mtime(path: Path, data: bytes) -> None:
    before = path.stat()
    assert len(data) == before.st_size
    path.write_bytes(data)  # in place: the same inode
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)


def test_a_release_is_hashed_when_staged_and_the_facts_hash_only_what_changed_since(tmp_path: Path) -> None:
    node = Node(tmp_path)
    assert node.deploy("r1", FILES) == "hashed 3 of 3"
    assert node.facts() == ({p: sha(d) for p, d in FILES.items()}, (0, 3))
    # one file changes: the stage hashes it alone, the two others keep the live record's digests
    assert node.deploy("r2", {"http/a.conf": b"AAA"}, base=node.layout.release("r1")) == "hashed 1 of 3"
    changed = {**FILES, "http/a.conf": b"AAA"}
    assert node.facts() == ({p: sha(d) for p, d in changed.items()}, (0, 3))
    # a hand edit that keeps the size and puts the mtime back is seen (its ctime moved): hashed
    edit_keeping_size_and_mtime(node.live("http/c.conf"), b"CCC")
    assert node.facts() == ({**{p: sha(d) for p, d in changed.items()}, "http/c.conf": sha(b"CCC")}, (1, 3))
    # the release before (the rollback's) is a copy: untouched, and its record still answers
    r1 = Path(node.layout.release("r1"))
    assert {p: (r1 / p).read_bytes() for p in FILES} == FILES
    assert not (r1 / STAT_RECORD).with_suffix(".new").exists()
    # no file of the record's own work is left (this test runs no marker step: both markers stay)
    assert sorted(os.listdir(r1 / ".obreconcile")) == ["marker.json", "marker.json.deployed", "stat"]


def test_a_live_file_edited_before_the_stage_copies_it_is_hashed_never_taken_from_the_record(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.deploy("r1", FILES)
    edit_keeping_size_and_mtime(node.live("http/c.conf"), b"CCC")  # after the facts, before the copy
    assert node.deploy("r2", {"http/a.conf": b"AAA"}, base=node.layout.release("r1")) == "hashed 2 of 3"
    digests, hashed = node.facts()
    assert (digests["http/c.conf"], hashed) == (sha(b"CCC"), (0, 3))


def test_without_a_record_every_file_is_hashed(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.deploy("r1", FILES)
    node.live(STAT_RECORD).unlink()  # a release staged before the record existed
    assert node.facts() == ({p: sha(d) for p, d in FILES.items()}, None)
    # and a release staged from it hashes what it copied
    assert node.deploy("r2", {"http/a.conf": b"AAA"}, base=node.layout.release("r1")) == "hashed 3 of 3"
    assert node.facts()[1] == (0, 3)


def test_a_file_replaced_by_a_link_is_irregular_and_a_new_file_is_hashed(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.deploy("r1", FILES)
    node.live("http/b c.conf").unlink()
    node.live("http/b c.conf").symlink_to("/etc/hostname")
    node.live("http/new.conf").write_bytes(b"new")
    digests, hashed = node.facts()
    assert digests == {
        **{p: sha(d) for p, d in FILES.items()},
        "http/b c.conf": "not a regular file",
        "http/new.conf": sha(b"new"),
    }
    assert hashed == (1, 4)


# -- through a real fleet: sshd + nginx ----------------------------------------------------------


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[Fleet]:
    yield from fleet_under_test(tmp_path, 2)


def node_facts(fleet: Fleet, manifests: Path, index: int) -> tuple[dict[str, str], tuple[int, int] | None]:
    state = load_desired_state([manifests])
    node = state.access_nodes[fleet.nodes[index].name]
    settings = SSHSettings(known_hosts=fleet.known_hosts, allow_agent=False)
    with open_transport(node, settings) as transport:
        facts = observe(node, transport)
    return dict(facts.files), facts.hashed


def test_on_a_fleet_a_no_op_hashes_nothing_and_a_hand_edit_is_still_seen_and_repaired(
    two_nodes: Fleet, tmp_path: Path
) -> None:
    upstreams = {f"u{i}": [f"127.0.0.1:{9000 + i}"] for i in range(5)}
    manifests = two_nodes.write_manifests(tmp_path / "m", upstreams)
    first = two_nodes.cli("apply", manifests)
    assert first.returncode == 0, first.stderr
    live = two_nodes.nodes[0].live_files()
    assert node_facts(two_nodes, manifests, 0) == ({p: sha(t.encode()) for p, t in live.items()}, (0, len(live)))
    # one upstream changes: its file and the default file are new, nothing else is hashed after
    manifests = two_nodes.write_manifests(tmp_path / "m", {**upstreams, "u0": ["127.0.0.1:8999"]})
    changed = two_nodes.cli("apply", manifests)
    assert changed.returncode == 0, changed.stderr
    assert {n["uploaded"] for n in json.loads(changed.stdout)["access_nodes"]} == {2}
    live = two_nodes.nodes[0].live_files()
    assert node_facts(two_nodes, manifests, 0) == ({p: sha(t.encode()) for p, t in live.items()}, (0, len(live)))
    # a hand edit on node 0 keeping the size and the mtime: hashed, planned as drift, repaired
    path = two_nodes.nodes[0].config_dir / "http" / "u3.conf"
    edit_keeping_size_and_mtime(path, path.read_bytes().replace(b"9003", b"9004"))
    digests, hashed = node_facts(two_nodes, manifests, 0)
    assert (digests["http/u3.conf"], hashed) == (sha(path.read_bytes()), (1, len(live)))
    repaired = two_nodes.cli("apply", manifests)
    assert repaired.returncode == 0, repaired.stderr
    nodes = {n["access_node"]: n for n in json.loads(repaired.stdout)["access_nodes"]}
    first_node, other = nodes[two_nodes.nodes[0].name], nodes[two_nodes.nodes[1].name]
    assert (first_node["status"], [f["path"] for f in first_node["plan"]["files"]]) == ("converged", ["http/u3.conf"])
    assert other["status"] == "unchanged"
    assert two_nodes.nodes[0].live_files()["http/u3.conf"] == live["http/u3.conf"]
    assert node_facts(two_nodes, manifests, 0)[1] == (0, len(live))
