"""The scripts apply runs on a node (reconciler/deploy/scripts.py), run by /bin/sh through the local transport."""

from __future__ import annotations

import gzip
import http.server
import io
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from reconciler.deploy.apply import NodeLock
from reconciler.deploy.facts import Marker, MarkerState
from reconciler.deploy.layout import NodeLayout
from reconciler.deploy.probe import command_probe, probe_function
from reconciler.deploy.scripts import (
    Deploy,
    parse_steps,
    steps_script,
    verify_outcome,
    verify_script,
)
from reconciler.errors import NodeError
from reconciler.transport import LocalTransport
from tests.services.backends import answering

REVISION = "0123456789abcdef"


def run_steps(steps: dict[str, str], stdin: bytes | None = None) -> dict[str, tuple[int, bytes, bytes]]:
    script, boundary = steps_script(steps)
    result = LocalTransport().run(script, input=stdin)
    return {name: (r.exit_code, r.stdout, r.stderr) for name, r in parse_steps(result, boundary, list(steps)).items()}


def test_steps_run_in_order_until_one_fails() -> None:
    ran = run_steps({"a": "echo A", "b": "echo B >&2; exit 3", "c": "echo never"})
    assert ran == {"a": (0, b"A\n", b""), "b": (3, b"", b"B\n")}


def test_only_stage_reads_stdin_and_size_is_kept_for_verify() -> None:
    ran = run_steps({"stage": "cat", "size": "echo 42", "other": "cat; echo $size"}, stdin=b"data")
    assert ran["stage"] == (0, b"data", b"") and ran["size"][1] == b"42" and ran["other"] == (0, b"42\n", b"")


def tar_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


MARKER = Marker(
    REVISION,
    "store-1",
    7,
    {"http/a.conf": "a" * 64, 'http/"state": "staged",.conf': "b" * 64},
    MarkerState.STAGED,
    deployed_by='ci "state": "staged",\n "state": "staged",',
    release="r1",
)


def staged(files: dict[str, bytes]) -> bytes:
    """The release's tar as apply sends it: the files and the staged marker."""
    return gzip.compress(tar_of({**files, ".obreconcile/marker.json": MARKER.to_json()}))


def test_a_deploy_stages_switches_tests_reloads_verifies_and_marks(tmp_path: Path) -> None:
    layout = NodeLayout(str(tmp_path / "conf"))
    release = layout.release("r1")
    log = tmp_path / "error.log"
    log.write_text("old [emerg] from before the reload is ignored\n")
    probe = command_probe(f"echo {REVISION}")
    deploy = Deploy(layout, release, "true", f"echo reloaded >> {log}", str(log), REVISION, probe, 2)
    ran = run_steps(deploy.steps(), staged({"http/a.conf": b"a"}))
    assert list(ran) == ["stage", "prune", "switch", "test", "size", "reload", "verify", "marker"]
    assert all(code == 0 for code, _, _ in ran.values())
    assert Path(layout.config_dir).resolve() == Path(release)
    # the stage made the deployed marker from the staged one: byte for byte what apply would write
    deployed = replace(MARKER, state=MarkerState.DEPLOYED).to_json()
    assert (Path(release) / ".obreconcile/marker.json").read_bytes() == deployed
    assert Marker.from_json(deployed).deployed_by == MARKER.deployed_by
    assert not (Path(release) / ".obreconcile/marker.json.deployed").exists()


def test_a_staged_marker_without_its_state_line_fails_the_stage(tmp_path: Path) -> None:
    layout = NodeLayout(str(tmp_path / "conf"))
    deploy = Deploy(layout, layout.release("r1"), "true", "true", "/nonexistent", REVISION, None, 1)
    files = {"http/a.conf": b"a", ".obreconcile/marker.json": MARKER.to_json().replace(b'"staged"', b'"other"')}
    ran = run_steps(deploy.steps(), gzip.compress(tar_of(files)))
    assert list(ran) == ["stage"] and ran["stage"][0] != 0 and b"no state line" in ran["stage"][2]
    assert not Path(layout.release("r1")).exists()


def test_a_failing_test_stops_before_the_reload(tmp_path: Path) -> None:
    layout = NodeLayout(str(tmp_path / "conf"))
    deploy = Deploy(
        layout, layout.release("r1"), "echo bad >&2; exit 1", "touch reloaded", "/nonexistent", REVISION, None, 1
    )
    ran = run_steps(deploy.steps(), staged({"a.conf": b"a"}))
    assert list(ran)[-1] == "test" and ran["test"] == (1, b"", b"bad\n")
    assert not (tmp_path / "reloaded").exists()


def test_a_failed_stage_removes_the_partial_release(tmp_path: Path) -> None:
    layout = NodeLayout(str(tmp_path / "conf"))
    deploy = Deploy(layout, layout.release("r1"), "true", "true", "/nonexistent", REVISION, None, 1)
    ran = run_steps(deploy.steps(), b"not a tar stream")
    assert list(ran) == ["stage"] and ran["stage"][0] != 0
    assert not Path(layout.release("r1")).exists()


def verify(tmp_path: Path, probe: str | None, log_lines: str = "", timeout: float = 1) -> str:
    log = tmp_path / "error.log"
    log.write_text("before\n")
    size = log.stat().st_size
    log.write_text("before\n" + log_lines)
    probe_definition = command_probe(probe) if probe is not None else None
    script = f"size={size}\n" + verify_script(REVISION, probe_definition, str(log), "$size", timeout)
    result = LocalTransport().run(script)
    return verify_outcome(result, REVISION, probe is not None, timeout)


def test_verify_passes_when_nginx_serves_the_revision(tmp_path: Path) -> None:
    assert verify(tmp_path, f"echo {REVISION}") == ""


def test_verify_reports_emergencies_logged_since_the_reload(tmp_path: Path) -> None:
    problem = verify(tmp_path, "echo old", "[emerg] bind() to 1.2.3.4:80 failed (98: Address already in use)\n")
    assert problem.startswith("nginx did not load the new configuration: ") and "bind()" in problem


def test_verify_gives_up_after_its_timeout_with_what_nginx_serves(tmp_path: Path) -> None:
    problem = verify(tmp_path, "echo old", timeout=0.3)
    assert problem == f"nginx still serves revision old 0.3s after the reload, not {REVISION}"


def test_verify_without_a_probe_reads_only_the_log(tmp_path: Path) -> None:
    assert verify(tmp_path, None) == ""
    assert verify(tmp_path, None, "[crit] worker died\n").endswith("[crit] worker died")


def test_the_node_lock_reads_the_facts_under_the_lock_and_excludes_a_second_holder(tmp_path: Path) -> None:
    layout = NodeLayout(str(tmp_path / "conf"))
    with NodeLock(LocalTransport(), layout, 5, {"one": "echo 1", "two": "echo 2 >&2; exit 4"}) as lock:
        assert (lock.results["one"].stdout, lock.results["two"].stderr, lock.results["two"].exit_code) == (
            b"1\n",
            b"2\n",
            4,
        )
        with pytest.raises(NodeError, match="another apply held"):
            NodeLock(LocalTransport(), layout, 1).__enter__()
    acquired = threading.Event()

    def again() -> None:
        with NodeLock(LocalTransport(), layout, 5):
            acquired.set()

    thread = threading.Thread(target=again)
    thread.start()
    thread.join(10)
    assert acquired.is_set()


def test_prune_keeps_the_newest_releases_and_always_the_live_one(tmp_path: Path) -> None:
    from reconciler.deploy.layout import KEEP_RELEASES
    from reconciler.deploy.scripts import prune_script

    layout = NodeLayout(str(tmp_path / "conf"))
    names = ["00000000-adopted", "20260101T000000.000001Z-a", "20260101T000000.000002Z-b"]
    names += [f"20260102T000000.00000{i}Z-c" for i in range(KEEP_RELEASES)]
    for name in names:
        (Path(layout.releases) / name).mkdir(parents=True)
    Path(layout.config_dir).symlink_to(layout.release(names[1]))  # an old release is live (rolled back)
    staged = layout.release(names[-1])
    assert LocalTransport().run(prune_script(layout, staged)).ok
    assert sorted(p.name for p in Path(layout.releases).iterdir()) == [names[1], *names[-KEEP_RELEASES:]]
    assert LocalTransport().run(prune_script(layout, staged)).ok  # nothing more to remove
    assert len(list(Path(layout.releases).iterdir())) == KEEP_RELEASES + 1


def test_prune_never_removes_the_staged_release_nor_what_it_did_not_name(tmp_path: Path) -> None:
    """Names sorting after the timestamps (a leftover, an operator's backup) used to push the
    release just staged out of the newest ones, and prune deleted it before the switch."""
    from reconciler.deploy.layout import KEEP_RELEASES
    from reconciler.deploy.scripts import prune_script

    layout = NodeLayout(str(tmp_path / "conf"))
    ours = [f"20260102T000000.00000{i}Z-r{i}" for i in range(KEEP_RELEASES + 2)]
    foreign = ["backup-by-hand", "zz-old", "~tmp"]
    for name in ours + foreign:
        (Path(layout.releases) / name).mkdir(parents=True)
    Path(layout.config_dir).symlink_to(layout.release(ours[-2]))
    staged = layout.release(ours[0])  # a clock that went back: the staged release sorts first
    assert LocalTransport().run(prune_script(layout, staged)).ok
    left = sorted(p.name for p in Path(layout.releases).iterdir())
    assert left == sorted([ours[0], *ours[-KEEP_RELEASES:], *foreign])


def test_verify_waits_for_nginx_to_hand_over_from_the_old_workers(tmp_path: Path) -> None:
    """nginx's old workers still accept for 100 ms after the first new one answers."""
    answers = tmp_path / "answers"
    answers.write_text(f"{REVISION}\nold\n" + f"{REVISION}\n" * 10)
    probe = f"n=$(cat {tmp_path}/n 2>/dev/null || echo 1); echo $((n + 1)) > {tmp_path}/n; sed -n ${{n}}p {answers}"
    assert verify(tmp_path, probe) == ""
    asked = int((tmp_path / "n").read_text()) - 1
    assert asked >= 6  # new, old (start again), then the new one alone four times


@pytest.fixture
def revision_server() -> Iterator[tuple[str, list[str]]]:
    """nginx's default server as the probe sees it: the revision as a text body; its path log."""
    paths: list[str] = []

    def respond(handler: http.server.BaseHTTPRequestHandler) -> None:
        paths.append(handler.path)
        body = REVISION.encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    with answering(respond) as address:
        yield address, paths


@pytest.mark.parametrize("shell", ["bash", "sh", "bash --posix"])
def test_the_probe_reads_the_revision_with_bash_alone_or_with_curl(
    shell: str, revision_server: tuple[str, list[str]]
) -> None:
    address, paths = revision_server
    script = probe_function(address, "curl") + '\nobr_probe; printf "%s|" "$served"'
    result = subprocess.run([*shell.split(), "-c", script], capture_output=True, text=True, timeout=30, check=False)
    assert result.stdout == f"{REVISION}|" and paths == ["/.well-known/obreconcile/revision"]


@pytest.mark.parametrize("shell", ["bash", "sh"])
def test_the_probe_of_a_server_not_listening_answers_nothing(shell: str) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    script = probe_function(f"127.0.0.1:{port}", "curl") + '\nobr_probe; printf "[%s] still here" "$served"'
    result = subprocess.run([shell, "-c", script], capture_output=True, text=True, timeout=30, check=False)
    assert result.stdout == "[] still here"


@pytest.mark.parametrize("shell", ["bash", "sh", "bash --posix"])
def test_verify_runs_under_every_shell_and_pauses_between_polls(shell: str, tmp_path: Path) -> None:
    """Under bash the pause is a read that times out (no process); dash must not even parse it."""
    log = tmp_path / "error.log"
    log.write_text("")
    polls = tmp_path / "polls"
    probe = command_probe(f"echo >> {polls}; echo old")
    script = "size=0\n" + verify_script(REVISION, probe, str(log), "$size", 0.5)
    started = time.monotonic()
    result = subprocess.run([*shell.split(), "-c", script], capture_output=True, text=True, timeout=30, check=False)
    elapsed = time.monotonic() - started
    assert (result.returncode, result.stdout.splitlines()[0], result.stderr) == (1, "served old", "")
    assert 0.5 <= elapsed < 5  # it waited for the timeout...
    assert len(polls.read_text()) < 5 * 2 / 0.02  # ...pausing ~20 ms between polls, never spinning
