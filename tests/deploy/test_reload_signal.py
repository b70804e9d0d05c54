"""nginx's own ``-s reload`` carried out as what it does, SIGHUP to the master, without its parse of
the whole configuration (reconciler/deploy/scripts.py ``reload_script``): on a real access node
(sshd + nginx), and its refusals in real bash on real processes (/proc)."""

from __future__ import annotations

import http.server
import os
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.deploy.probe import PID_HEADER, PROBE_PATH
from reconciler.deploy.scripts import reload_script, signals_reload
from tests.services.backends import answering
from tests.services.fleet import NGINX, Fleet, SimulatedNode
from tests.services.fleet_fixtures import fleet_under_test


@pytest.mark.parametrize(
    ("command", "signals"),
    [
        ("nginx -s reload", True),
        ("/usr/sbin/nginx -p /srv/n -c /srv/n/nginx.conf -e /srv/n/error.log -s reload", True),
        ("nginx -q -g 'pid /run/x.pid;' -s reload", True),
        ("nginx -c/etc/nginx/nginx.conf -s reload", True),
        ("nginx -s reopen", False),
        ("nginx -s", False),
        ("nginx -s reload -t", False),
        ("nginx -s reload -s reload", False),
        ("nginx -c", False),
        ("systemctl reload nginx", False),
        ("sudo nginx -s reload", False),
        ("/opt/bin/nginx-wrapper -s reload", False),
        ("nginx -s 'reload", False),
    ],
)
def test_only_nginx_s_own_reload_command_is_signalled_directly(command: str, signals: bool) -> None:
    assert signals_reload(command) is signals
    assert (reload_script(command, "127.0.0.1:80") == command) is not signals
    assert reload_script(command, None) == command


def wrapper(directory: Path) -> tuple[Path, Path]:
    """An ``nginx`` that logs its arguments, then runs the real one (the name is what counts)."""
    directory.mkdir(parents=True, exist_ok=True)
    log, program = directory / "calls.log", directory / "nginx"
    program.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {shlex.quote(str(log))}\nexec {NGINX} "$@"\n')
    program.chmod(0o755)
    return program, log


def settings(node: SimulatedNode, program: str) -> dict[str, str]:
    options = f"-p {node.prefix} -c {node.conf} -e {node.error_log}"
    return {"test_command": f"{program} {options} -t", "reload_command": f"{program} {options} -s reload"}


@pytest.fixture
def one_node(tmp_path: Path) -> Iterator[Fleet]:
    yield from fleet_under_test(tmp_path, 1)


def reload_calls(log: Path) -> int:
    return sum(line.endswith("-s reload") for line in log.read_text().splitlines()) if log.exists() else 0


def test_a_reload_signals_the_master_that_serves_and_runs_the_command_only_when_none_answers(
    one_node: Fleet, tmp_path: Path
) -> None:
    node = one_node.nodes[0]
    program, log = wrapper(tmp_path / "bin")

    def apply(name: str, backends: list[str], program: str = str(program)) -> str:
        manifests = one_node.write_manifests(
            tmp_path / name, {"web": backends}, node_settings={node.name: settings(node, program)}
        )
        applied = one_node.cli("apply", manifests)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        return node.served_revision()

    # first deploy: the operator's nginx.conf answers no revision, so no master is known: the command
    first = apply("m1", ["127.0.0.1:9"])
    assert len(first) == 16 and reload_calls(log) == 1
    # a change: the worker answering the live revision names its master, which is signalled itself
    reloads = node.reloads()
    second = apply("m2", ["127.0.0.1:9", "127.0.0.1:10"])
    assert second not in ("", first)
    assert reload_calls(log) == 1, log.read_text()
    assert node.reloads() == reloads + 1
    assert sum(line.endswith(" -t") for line in log.read_text().splitlines()) == 2  # the test still runs
    # a reload command that is not nginx's own runs as it is, every time
    env_form = f"env {program}"
    third = apply("m3", ["127.0.0.1:11"], env_form)
    assert third not in ("", second) and reload_calls(log) == 2


@pytest.fixture
def pid_server() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on 127.0.0.1 answering the revision with ``PID_HEADER: <pids[0]>``."""
    pids: list[str] = []

    def respond(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200 if handler.path == PROBE_PATH else 404)
        handler.send_header(PID_HEADER, pids[0])
        handler.end_headers()
        handler.wfile.write(b"0123456789abcdef")

    with answering(respond) as address:
        yield address, pids


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.kill()
        process.wait()


def titled_pair(tmp_path: Path, parent: str, child: str, started: list[subprocess.Popen[bytes]]) -> tuple[int, int]:
    """A bash titled ``parent`` (it logs a SIGHUP into tmp_path/hup) with a sleep titled ``child``."""
    tmp_path.mkdir(exist_ok=True)
    hup, child_pid = tmp_path / "hup", tmp_path / "child"
    body = (
        f"trap 'echo hup >> {hup}' HUP; ( exec -a {shlex.quote(child)} sleep 60 ) & echo $! > {child_pid}; "
        "while :; do sleep 0.05; done"
    )
    process = subprocess.Popen(["bash", "-c", f"exec -a {shlex.quote(parent)} bash -c {shlex.quote(body)}"])
    started.append(process)
    deadline = time.monotonic() + 5
    while not (child_pid.exists() and child_pid.read_text().strip()):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return process.pid, int(child_pid.read_text())


def run_reload(address: str, tmp_path: Path, shell: str = "bash") -> tuple[str, bool]:
    """Run reload_script("nginx -s reload") in ``shell`` with a fake ``nginx`` first on PATH: (its
    output, whether the fake ran)."""
    bin_dir, ran = tmp_path / "fake", tmp_path / "fake-ran"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "nginx").write_text(f"#!/bin/sh\necho ran > {shlex.quote(str(ran))}\n")
    (bin_dir / "nginx").chmod(0o755)
    ran.unlink(missing_ok=True)
    environment = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    script = f"( {reload_script('nginx -s reload', address)}\n)"
    result = subprocess.run([shell, "-c", script], capture_output=True, text=True, env=environment, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout, ran.exists()


def test_only_a_worker_of_an_nginx_master_is_signalled(
    pid_server: tuple[str, list[str]], processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    address, pids = pid_server
    # a master and its worker, as nginx titles them: the master gets the SIGHUP, the command does not run
    master, worker = titled_pair(
        tmp_path / "a", "nginx: master process /usr/sbin/nginx", "nginx: worker process", processes
    )
    pids[:] = [str(worker)]
    # under sh (dash, or bash in POSIX mode: no /dev/tcp) the command runs, nothing is signalled
    output, ran = run_reload(address, tmp_path, "sh")
    assert output == "" and ran
    time.sleep(0.2)
    assert not (tmp_path / "a" / "hup").exists()
    output, ran = run_reload(address, tmp_path)
    assert output == f"signalled {master}\n" and not ran
    deadline = time.monotonic() + 5
    while not (tmp_path / "a" / "hup").exists():
        assert time.monotonic() < deadline, "the master was not signalled"
        time.sleep(0.02)
    # anything else is never signalled: the command runs
    for case, parent, child in (
        ("b", "bash", "nginx: worker process"),  # a worker-like process whose parent is no master
        ("c", "nginx: master process", "sleep"),  # a pid that is not a worker
    ):
        _, child_pid = titled_pair(tmp_path / case, parent, child, processes)
        pids[:] = [str(child_pid)]
        output, ran = run_reload(address, tmp_path)
        assert output == "" and ran, case
        time.sleep(0.2)
        assert not (tmp_path / case / "hup").exists(), case
    for header in ("", "12abc", "999999999"):  # no pid, not a number, no such process
        pids[:] = [header]
        output, ran = run_reload(address, tmp_path)
        assert output == "" and ran, header
    # nothing answers at all
    output, ran = run_reload("127.0.0.1:9", tmp_path)
    assert output == "" and ran
