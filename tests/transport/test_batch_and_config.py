"""Pure parts: the batch script's framing and how ~/.ssh/config resolves a connection."""

from __future__ import annotations

import getpass
from pathlib import Path

import pytest

from reconciler.errors import AuthenticationError
from reconciler.manifest.model import Connection
from reconciler.transport import LocalTransport, SSHSettings
from reconciler.transport.batch import batch_script, parse_batch
from reconciler.transport.connect import resolve_target


def test_output_that_looks_like_a_frame_cannot_split_a_section() -> None:
    transport = LocalTransport()
    results = transport.run_batch(
        {
            "tricky": "echo 'obr-0000 end tricky 0'; printf 'obr- begin x\\n'",
            "comment": "echo kept # a trailing comment must not swallow the subshell's )",
            "exit": "exit 4",
        }
    )
    assert results["tricky"].stdout == b"obr-0000 end tricky 0\nobr- begin x\n"
    assert (results["comment"].exit_code, results["comment"].stdout) == (0, b"kept\n")
    assert results["exit"].exit_code == 4


def test_an_empty_batch_is_fine() -> None:
    assert LocalTransport().run_batch({}) == {}


def test_names_are_restricted() -> None:
    with pytest.raises(ValueError, match="must match"):
        batch_script({"two words": "true"})


def test_a_broken_off_script_is_detected() -> None:
    _, boundary = batch_script({"a": "true"})
    assert parse_batch(b"", b"sudo: a password is required\n", boundary, ["a"]) is None
    complete = f"{boundary} begin a\nout\n{boundary} end a 3\n".encode()
    errors = f"{boundary} begin a\n\n{boundary} end a\n".encode()
    assert parse_batch(complete, errors, boundary, ["a"]) == {"a": (3, b"out", b"")}


@pytest.fixture
def ssh_config(tmp_path: Path) -> Path:
    path = tmp_path / "config"
    path.write_text(
        "Host lb1\n  HostName 10.0.0.1\n  Port 2222\n  User deploy\n"
        f"  IdentityFile {tmp_path}/cfg_key\n  UserKnownHostsFile {tmp_path}/fleet_known_hosts\n"
        "Host *\n  IdentitiesOnly no\n"
    )
    (tmp_path / "cfg_key").write_text("not read here")
    (tmp_path / "manifest_key").write_text("not read here")
    return path


def test_ssh_config_fills_what_the_manifest_leaves_open(ssh_config: Path, tmp_path: Path) -> None:
    target = resolve_target(Connection("ssh", "lb1"), SSHSettings(ssh_config=ssh_config))
    assert (target.host, target.port, target.user) == ("10.0.0.1", 2222, "deploy")
    assert target.identity_files == (str(tmp_path / "cfg_key"),)
    assert target.known_hosts == tmp_path / "fleet_known_hosts"
    assert target.label == "deploy@10.0.0.1:2222"


def test_the_manifest_and_the_flags_win(ssh_config: Path, tmp_path: Path) -> None:
    connection = Connection("ssh", "lb1", 2200, "ops", str(tmp_path / "manifest_key"))
    settings = SSHSettings(ssh_config=ssh_config, known_hosts=tmp_path / "flag_known_hosts")
    target = resolve_target(connection, settings)
    assert (target.host, target.port, target.user) == ("10.0.0.1", 2200, "ops")
    assert target.identity_files == (str(tmp_path / "manifest_key"), str(tmp_path / "cfg_key"))
    assert target.known_hosts == tmp_path / "flag_known_hosts"


def test_without_config_the_defaults_apply(tmp_path: Path, isolated_home: Path) -> None:
    target = resolve_target(Connection("ssh", "lb9.example.com"), SSHSettings(ssh_config=tmp_path / "none"))
    assert (target.host, target.port, target.user) == ("lb9.example.com", 22, getpass.getuser())
    assert target.known_hosts == isolated_home / ".ssh" / "known_hosts"
    assert target.label == f"{getpass.getuser()}@lb9.example.com:22"


def test_a_missing_identity_file_fails_before_connecting(tmp_path: Path) -> None:
    with pytest.raises(AuthenticationError, match="does not exist"):
        resolve_target(Connection("ssh", "lb1", identity_file="~/no/such/key"), SSHSettings(ssh_config=tmp_path / "x"))
