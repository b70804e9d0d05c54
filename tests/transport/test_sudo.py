"""sudo: every command and file operation goes through `sudo -n sh -c '…'`.

The tests run as root where sudo may not be installed, so a shim named `sudo` on PATH
records each call and runs the command (or refuses like sudo without NOPASSWD does).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.errors import CommandError
from reconciler.transport import LocalTransport, SSHSettings, Transport, open_transport
from reconciler.transport.base import sudo_command
from tests.services.sshd import SSHServer
from tests.transport.conftest import local_node

SHIM = """#!/bin/sh
printf "%s %s %s\\n" "$1" "$2" "$3" >> "$SUDO_LOG"
[ "$1" = "-n" ] || { echo "shim: expected -n" >&2; exit 99; }
shift
exec "$@"
"""
REFUSING_SHIM = """#!/bin/sh
echo "sudo: a password is required" >&2
exit 1
"""


def make_shim(directory: Path, text: str = SHIM) -> Path:
    directory.mkdir(exist_ok=True)
    shim = directory / "sudo"
    shim.write_text(text)
    shim.chmod(0o755)
    return directory


def test_commands_are_wrapped_in_sudo_sh_c() -> None:
    transport = LocalTransport(sudo=True)
    assert transport.wrap("nginx -t") == "sudo -n sh -c 'nginx -t'"
    assert transport.wrap(["cat", "it's here"]) == sudo_command(shlex.join(["cat", "it's here"]))
    assert shlex.split(transport.wrap("echo 'a' \"$b\"")) == ["sudo", "-n", "sh", "-c", "echo 'a' \"$b\""]
    assert LocalTransport(sudo=False).wrap(["a b"]) == "'a b'"
    assert "sudo" in transport.describe()


@pytest.fixture
def sudo_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "sudo.log"
    log.touch()
    shims = make_shim(tmp_path / "shims")
    monkeypatch.setenv("PATH", f"{shims}:{os.environ['PATH']}")
    monkeypatch.setenv("SUDO_LOG", str(log))
    return log


def exercise(transport: Transport, files: Path, sudo_log: Path) -> None:
    """Every operation of the interface, each of which must have gone through sudo."""
    (files / "conf").write_bytes(b"written\n")
    steps: list[Callable[[], object]] = [
        lambda: transport.run("echo hi", check=True),
        lambda: transport.run_batch({"a": "echo a", "b": "exit 3"}),
        lambda: transport.read_file(str(files / "conf")),
        lambda: transport.read_files([str(files / "conf"), str(files / "none")]),
    ]
    results = []
    for number, step in enumerate(steps, start=1):
        results.append(step())
        assert len(sudo_log.read_text().splitlines()) == number, f"step {number} did not go through sudo"
    assert results[0].stdout == b"hi\n"  # type: ignore[attr-defined]
    assert results[1]["b"].exit_code == 3  # type: ignore[index]
    assert results[2] == b"written\n"
    assert results[3] == {str(files / "conf"): b"written\n", str(files / "none"): None}
    assert all(line == "-n sh -c" for line in sudo_log.read_text().splitlines())


def test_local_transport_with_sudo_uses_it_for_everything(tmp_path: Path, sudo_log: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    with open_transport(local_node(sudo=True)) as transport:
        exercise(transport, files, sudo_log)


def test_ssh_transport_with_sudo_uses_it_for_everything(sshd_factory: Callable[..., SSHServer], tmp_path: Path) -> None:
    shims = make_shim(tmp_path / "remote-shims")
    log = tmp_path / "remote-sudo.log"
    log.touch()
    server = sshd_factory(environment={"PATH": f"{shims}:/usr/sbin:/usr/bin:/sbin:/bin", "SUDO_LOG": str(log)})
    files = tmp_path / "files"
    files.mkdir()
    node = server.access_node(sudo=True)
    with open_transport(node, SSHSettings(known_hosts=server.known_hosts, allow_agent=False)) as transport:
        exercise(transport, files, log)


def test_sudo_wanting_a_password_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shims = make_shim(tmp_path / "shims", REFUSING_SHIM)
    monkeypatch.setenv("PATH", f"{shims}:{os.environ['PATH']}")
    transport = LocalTransport(sudo=True)
    for operation in (
        lambda: transport.run("true", check=True),
        lambda: transport.read_file("/etc/hostname"),
        lambda: transport.run_batch({"a": "true"}),
    ):
        with pytest.raises(CommandError) as caught:
            operation()
        assert "NOPASSWD" in str(caught.value) and "a password is required" in str(caught.value)
