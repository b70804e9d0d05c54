"""`obreconcile validate`, `hash-password`, `--version` and `--help`, run as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.passwords import password_hash_problem, verify_password

ROOT = Path(__file__).resolve().parents[2]
INVALID = Path(__file__).parents[1] / "manifest" / "invalid"


def obreconcile(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def test_validate_valid_examples_exits_0() -> None:
    result = obreconcile("validate", "examples/fleet")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("valid: 4 Group, 3 User, 2 Check, 3 Upstream, 3 AccessNode")


def test_validate_invalid_exits_1_with_located_errors_and_no_traceback(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("apiVersion: openbalancer/v1\nkind: Group\nname: Team\n")
    (tmp_path / "b.yaml").write_text("apiVersion: openbalancer/v1\nkind: Group\nname: ok\nusers: [x]\n")
    result = obreconcile("validate", str(tmp_path))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{tmp_path}/a.yaml:3:7: Group/Team: name: 'Team' is not allowed (allowed: lower-case letters, digits, "
        "'.', '_' and '-', starting with a letter or digit, at most 63 characters)",
        f"{tmp_path}/b.yaml:4:1: Group/ok: users: unknown field 'users' (allowed: apiVersion, kind, name, global_permissions)",
    ]
    assert "Traceback" not in result.stdout + result.stderr
    assert "invalid: 2 problems in 2 files" in result.stderr


def test_validate_json_output_is_one_document_listing_every_error() -> None:
    result = obreconcile("--output", "json", "validate", str(INVALID / "server-name-clash.yaml"))
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert document["valid"] is False
    [error] = document["errors"]
    assert error == {
        "file": str(INVALID / "server-name-clash.yaml"),
        "line": 24,
        "column": 16,
        "kind": "AccessNode",
        "name": "lb1",
        "field": "upstreams[1]",
        "message": "upstreams 'a' and 'b' both serve server name 'shop.example.com' on this access node",
    }


def test_output_can_come_from_the_environment() -> None:
    result = obreconcile("validate", "examples/quickstart", env={"OBRECONCILE_OUTPUT": "json"})
    assert result.returncode == 0
    assert json.loads(result.stdout)["objects"]["Upstream"] == 2


def test_max_file_size_option_refuses_a_large_file(tmp_path: Path) -> None:
    result = obreconcile("validate", "--max-file-size", "100", "examples/fleet/users.yaml")
    assert result.returncode == 1
    assert "over the limit of 100 (--max-file-size)" in result.stdout


def test_missing_path_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    result = obreconcile("validate", str(tmp_path / "nothing-here"))
    assert result.returncode == 1
    assert "no such file or directory" in result.stdout and "Traceback" not in result.stderr


def test_hash_password_reads_stdin_when_not_a_terminal() -> None:
    result = obreconcile("hash-password", stdin="s3cret-Passw0rd\n")
    assert result.returncode == 0, result.stderr
    digest = result.stdout.strip()
    assert digest.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert password_hash_problem(digest) == ""
    assert verify_password(digest, "s3cret-Passw0rd") and not verify_password(digest, "s3cret-Passw0rd\n")
    assert "s3cret" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("", "a password needs at least 8 characters (this one has 0)"),
        ("a", "a password needs at least 8 characters (this one has 1)"),
        ("1234567", "a password needs at least 8 characters (this one has 7)"),
        ("QwertyUIOP", "this password is one of the 30,000 most common in breaches (zxcvbn's list): choose another"),
        ("x" * 1025, "a password has at most 1024 characters (this one has 1025)"),
    ],
)
def test_hash_password_refuses_a_weak_password(password: str, why: str) -> None:
    result = obreconcile("hash-password", stdin=password + "\n")
    assert result.returncode == 1 and not result.stdout
    assert result.stderr.strip() == f"error: refusing this password: {why}"


def test_version() -> None:
    result = obreconcile("--version")
    assert result.returncode == 0 and result.stdout.startswith("obreconcile, version ")


@pytest.mark.parametrize("command", ["validate", "hash-password", "render", "status"])
def test_every_command_has_help(command: str) -> None:
    result = obreconcile(command, "--help")
    assert result.returncode == 0
    assert f"Usage: obreconcile {command}" in result.stdout
    # the first line of the docstring is the summary people read in `obreconcile --help`
    assert len(result.stdout.splitlines()) > 4


def test_unknown_option_is_a_usage_error_exit_2() -> None:
    result = obreconcile("validate", "--no-such-flag", "x")
    assert result.returncode == 2
    assert "No such option '--no-such-flag'" in result.stderr
