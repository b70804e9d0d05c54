"""Interrupts during apply (issue 14): never half-applied, whatever step a signal meets.

Seen on real nginx with a 3 s test command: a single SIGINT waited silently, printed
`aborted`, exit 130, no summary, and the converged nodes were not recorded; a SIGKILL of the
apply left the nodes' live link on the new, untested release while nginx served the old one.

Each case slows one step down, waits until the step is in hand (a file the slow command
touches), and signals the apply process. test, reload and verify are slowed with the node's
own commands (a `sleep` in test_command or reload_command); stage and switch run built-in
commands that take milliseconds, so their nodes' SSH sessions run with a PATH whose first
directory holds a wrapper of the one command the step runs (`SHIMMED`), sleeping before it
runs the real one while armed. Afterwards every node's live link, its files and the revision
nginx serves agree, and the next apply converges.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.deploy.layout import MARKER
from reconciler.store import open_store
from tests.deploy.conftest import address
from tests.services.backends import HttpBackend
from tests.services.fleet import ROOT, Fleet, SimulatedNode
from tests.services.fleet_fixtures import fleet_under_test

# The command each built-in step runs that no other step of a deploy runs (scripts.py
# Deploy.steps): stage extracts the release with tar; switch makes the new link with ln
# before mv renames it over the live one (mv also renames the marker, last).
SHIMMED = {"stage": "tar", "switch": "ln"}
SESSION_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.fixture
def shims(tmp_path: Path) -> Path:
    """A directory of wrappers of the ``SHIMMED`` commands. While ``<command>.slow`` holds
    ``SECONDS FLAG``, the wrapper touches FLAG and sleeps SECONDS before it runs the real
    command; without it, it runs the real command at once."""
    directory = tmp_path / "shims"
    directory.mkdir()
    for command in SHIMMED.values():
        real = shutil.which(command, path=SESSION_PATH)
        assert real is not None, command
        armed = shlex.quote(str(directory / f"{command}.slow"))
        wrapper = directory / command
        wrapper.write_text(
            "#!/bin/sh\n"
            f'if [ -f {armed} ] && read -r seconds flag < {armed}; then touch -- "$flag"; sleep "$seconds"; fi\n'
            f'exec {shlex.quote(real)} "$@"\n'
        )
        wrapper.chmod(0o755)
    return directory


@pytest.fixture
def shimmed_fleet(tmp_path: Path, shims: Path) -> Iterator[Fleet]:
    """Two access nodes whose SSH sessions find the wrappers of ``shims`` first on their PATH."""
    yield from fleet_under_test(tmp_path, 2, {"PATH": f"{shims}:{SESSION_PATH}"})


def _arm(shims: Path, step: str, flag: Path, seconds: float) -> Path:
    """Make the wrapper of ``step``'s command slow (every node's); returns the file to remove."""
    armed = shims / f"{SHIMMED[step]}.slow"
    armed.write_text(f"{seconds} {flag}\n")
    return armed


def _agree(node: SimulatedNode) -> str:
    """'' when the node's live link, files and served revision tell one story; else what differs."""
    marker = node.marker()
    live = {p: hashlib.sha256(t.encode()).hexdigest() for p, t in node.live_files().items()}
    if live != marker.get("digests"):
        return f"{node.name}: live files are not the marker's ({marker.get('state')})"
    if marker.get("state") != "deployed":
        return f"{node.name}: the live release's marker says {marker.get('state')}"
    served = node.served_revision()
    if served != marker["revision"]:
        return f"{node.name}: nginx serves {served or '(nothing)'}, the live release is {marker['revision']}"
    return ""


def _wait_agree(nodes: list[SimulatedNode], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        problems = [p for n in nodes if (p := _agree(n))]
        if not problems:
            return
        if time.monotonic() > deadline:
            pytest.fail("; ".join(problems))
        time.sleep(0.1)


def _wait_no_unverified_release(nodes: list[SimulatedNode], timeout: float = 15) -> None:
    """Until no node keeps a release whose marker is not ``deployed`` (the restore removes the
    interrupted one, after its reload command ends)."""
    deadline = time.monotonic() + timeout
    while True:
        left = [
            f"{n.name}: {r.name}"
            for n in nodes
            for r in sorted(n.releases.iterdir())
            if not (r / MARKER).is_file() or yaml.safe_load((r / MARKER).read_text()).get("state") != "deployed"
        ]
        if not left:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"releases never verified are left: {', '.join(left)}")
        time.sleep(0.1)


def _slow(node: SimulatedNode, step: str, flag: Path, seconds: float = 3) -> dict[str, str]:
    """Node commands whose ``step`` (test, reload, verify) takes ``seconds``; ``flag`` says it began.

    The commands are scripts: a node's commands may hold no shell metacharacters."""
    test, reload = node.nginx_command("-t"), node.nginx_command("-s", "reload")
    if step == "test":
        body, key = f"touch {flag}; sleep {seconds}; exec {test}", "test_command"
    elif step == "reload":  # nginx reloaded, then the command takes its time
        body, key = f"{reload} && touch {flag} && sleep {seconds}", "reload_command"
    else:  # verify: the reload lands late, verify polls meanwhile
        assert step == "verify"
        body, key = f"touch {flag}; (sleep {seconds}; {reload}) >/dev/null 2>&1 &", "reload_command"
    script = flag.parent / f"{node.index}-slow-{step}.sh"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return {key: str(script)}


def _start_apply(fleet: Fleet, manifests: Path, *extra: str) -> subprocess.Popen[str]:
    argv = fleet.cli_args("--output", "json", "apply", manifests, "--known-hosts", fleet.known_hosts, *extra)
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def _wait_file(path: Path, process: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"apply ended before {path.name} was touched:\n{process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{path.name} was never touched")
        time.sleep(0.02)


def _apply(fleet: Fleet, manifests: Path) -> dict[str, Any]:
    result = fleet.cli("apply", manifests)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


class SlowChange:
    """Two nodes deployed with backend b0, then manifests that move them to b1 with ``step``
    taking ``seconds`` on each node (``disarm`` makes a wrapped step fast again)."""

    def __init__(
        self, request: pytest.FixtureRequest, backends: list[HttpBackend], tmp_path: Path, step: str, seconds: float
    ) -> None:
        self.armed: Path | None = None
        if step in SHIMMED:
            self.fleet: Fleet = request.getfixturevalue("shimmed_fleet")
        else:
            self.fleet = request.getfixturevalue("fleet")
        self.nodes = self.fleet.nodes[:2]
        self.manifests = self.fleet.write_manifests(tmp_path / "m", {"web": [address(backends[0])]}, nodes=self.nodes)
        _apply(self.fleet, self.manifests)
        self.flag = tmp_path / f"in-{step}"  # touched when the step begins
        slow: dict[str, dict[str, str]] = {}
        if step in SHIMMED:
            self.armed = _arm(request.getfixturevalue("shims"), step, self.flag, seconds)
        else:
            slow = {n.name: _slow(n, step, self.flag, seconds) for n in self.nodes}
        self.fleet.write_manifests(
            tmp_path / "m", {"web": [address(backends[1])]}, nodes=self.nodes, node_settings=slow
        )

    def disarm(self) -> None:
        """The wrapped command runs at once from now on: the restore and the next apply run
        it too (a slowed test or reload command is left in place: the next manifests drop it)."""
        if self.armed is not None:
            self.armed.unlink(missing_ok=True)


STEPS = ["stage", "switch", "test", "reload", "verify"]


@pytest.mark.parametrize("step", STEPS)
def test_sigkill_of_apply_at_each_step_leaves_every_node_consistent(
    request: pytest.FixtureRequest, backends: list[HttpBackend], tmp_path: Path, step: str
) -> None:
    change = SlowChange(request, backends, tmp_path, step, seconds=3)
    fleet, nodes, manifests, flag = change.fleet, change.nodes, change.manifests, change.flag

    process = _start_apply(fleet, manifests)
    _wait_file(flag, process)
    time.sleep(0.3)
    process.send_signal(signal.SIGKILL)
    change.disarm()
    process.communicate(timeout=10)
    time.sleep(4)  # the step in hand ends, then the node-side script finds its controller gone
    _wait_agree(nodes)
    for node in nodes:
        assert node.get("web.example.com")[1] in ("b0", "b1")
    _wait_no_unverified_release(nodes)

    fleet.write_manifests(tmp_path / "m", {"web": [address(backends[1])]}, nodes=nodes)
    document = _apply(fleet, manifests)
    assert {r["status"] for r in document["access_nodes"]} <= {"converged", "unchanged"}
    _wait_agree(nodes)
    for node in nodes:
        assert {node.get("web.example.com")[1] for _ in range(4)} == {"b1"}


@pytest.mark.parametrize("step", STEPS)
def test_sigint_finishes_the_node_in_hand_records_it_prints_the_summary_and_exits_130(
    request: pytest.FixtureRequest, backends: list[HttpBackend], tmp_path: Path, step: str
) -> None:
    change = SlowChange(request, backends, tmp_path, step, seconds=2)
    fleet, nodes, manifests, flag = change.fleet, change.nodes, change.manifests, change.flag

    process = _start_apply(fleet, manifests, "--forks", "1")
    _wait_file(flag, process)
    process.send_signal(signal.SIGINT)
    change.disarm()
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stdout + stderr
    assert "SIGINT: starting no more access nodes" in stderr
    document = json.loads(stdout)
    results = {r["access_node"]: r for r in document["access_nodes"]}
    first, second = nodes
    assert results[first.name]["status"] == "converged", results
    assert results[second.name]["status"] == "skipped", results
    assert results[second.name]["error"] == "interrupted before this access node was changed"
    assert document["interrupted"] is True
    _wait_agree(nodes)
    assert {first.get("web.example.com")[1] for _ in range(4)} == {"b1"}
    assert {second.get("web.example.com")[1] for _ in range(4)} == {"b0"}
    with open_store(fleet.store) as store:
        records = store.deploy_records()
        revision = store.revision()
    assert (records[first.name].result, records[first.name].revision) == ("converged", revision)
    assert records[second.name].revision < revision  # its last record stays: status says behind

    text = subprocess.run(
        fleet.cli_args("status"), capture_output=True, text=True, timeout=60, check=False, env={**os.environ}
    )
    assert f"{first.name}  converged at revision {revision}" in text.stdout, text.stdout
    assert f"{second.name}  behind" in text.stdout, text.stdout

    fleet.write_manifests(tmp_path / "m", {"web": [address(backends[1])]}, nodes=nodes)
    document = _apply(fleet, manifests)
    assert {r["access_node"]: r["status"] for r in document["access_nodes"]}[second.name] == "converged"


def test_a_busy_lock_names_its_holder(fleet: Fleet, backends: list[HttpBackend], tmp_path: Path) -> None:
    """Seen: `another apply held ... for 2s`, without who holds it or since when."""
    node = fleet.nodes[0]
    manifests = fleet.write_manifests(tmp_path / "m", {"web": [address(backends[0])]}, nodes=[node])
    _apply(fleet, manifests)
    flag = tmp_path / "in-test"
    slow = {node.name: _slow(node, "test", flag, seconds=8)}  # the second apply starts, connects, waits 1 s
    fleet.write_manifests(tmp_path / "m", {"web": [address(backends[1])]}, nodes=[node], node_settings=slow)
    first = _start_apply(fleet, manifests)
    try:
        _wait_file(flag, first)
        second = fleet.cli("apply", manifests, "--lock-timeout", "1")
    finally:
        stdout, stderr = first.communicate(timeout=60)
    assert first.returncode == 0, stdout + stderr
    assert second.returncode == 1
    error = json.loads(second.stdout)["access_nodes"][0]["error"]
    user_host = f"{getpass.getuser()}@{socket.gethostname()} pid {first.pid} since 20"
    assert f"another apply held {node.config_dir}.lock for 1s (--lock-timeout): held by " in error, error
    assert user_host in error, error


def _workers(node: SimulatedNode) -> set[int]:
    """The PIDs of the node's nginx workers (its master's children)."""
    assert node.process is not None
    pid = node.process.pid
    try:
        return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


def test_a_live_link_nginx_does_not_serve_is_drift_that_apply_repairs(
    fleet: Fleet, backends: list[HttpBackend], tmp_path: Path
) -> None:
    """The link switched without a reload (by hand, or a restore whose reload failed): the
    files and the marker agree with the desired state, nginx serves another revision."""
    node = fleet.nodes[0]
    old = fleet.write_manifests(tmp_path / "old", {"web": [address(backends[0])]}, nodes=[node])
    _apply(fleet, old)
    old_release = os.readlink(node.config_dir)
    new = fleet.write_manifests(tmp_path / "new", {"web": [address(backends[1])]}, nodes=[node])
    _apply(fleet, new)
    new_release, served = os.readlink(node.config_dir), node.served_revision()
    for target, reload in ((old_release, True), (new_release, False)):  # nginx back on old, link on new
        link = Path(f"{node.config_dir}.hand")
        link.symlink_to(target)
        link.replace(node.config_dir)
        if reload:  # wait until nginx serves the old release (its old workers hand over first)
            before = _workers(node)
            subprocess.run(node.nginx_command("-s", "reload").split(), check=True, capture_output=True, timeout=30)
            deadline = time.monotonic() + 30
            # Until the old workers have gone, a new connection may reach either generation (ten
            # answers in a row from the new one were not enough on a loaded machine): wait for both
            while True:
                answers = {node.served_revision() for _ in range(10)}
                if len(answers) == 1 and answers.isdisjoint({"", served}) and not _workers(node) & before:
                    break
                if time.monotonic() > deadline:
                    pytest.fail(f"nginx did not load the old release within 30 s:\n{node.log_tail()}")
                time.sleep(0.05)
    stale = node.served_revision()
    assert stale not in ("", served) and node.marker()["revision"] == served

    plan = fleet.cli("plan", new)
    planned = json.loads(plan.stdout)["access_nodes"][0]
    assert planned["reload_only"].startswith(f"nginx serves revision {stale}, not the live release's {served}"), planned
    document = _apply(fleet, new)
    assert document["access_nodes"][0]["status"] == "converged"
    _wait_agree([node])
    assert node.served_revision() == served
    assert {node.get("web.example.com")[1] for _ in range(4)} == {"b1"}
