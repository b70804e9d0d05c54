"""Options from OBRECONCILE_<OPTION>, from obreconcile.yaml (found like .git), and after the command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.services.fleet import Fleet
from tests.services.fleet_fixtures import fleet_under_test

GROUP: dict[str, object] = {"apiVersion": "openbalancer/v1", "kind": "Group", "name": "ops"}


def run(cwd: Path, *args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OBRECONCILE_")}
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**clean, "PYTHONPATH": str(Path(__file__).parents[2]), **(env or {})},
        timeout=120,
        check=False,
    )


def _repo(tmp_path: Path, docs: list[dict[str, object]] | None = None) -> Path:
    repo = tmp_path / "repo"
    (repo / "manifests").mkdir(parents=True)
    (repo / "manifests" / "all.yaml").write_text(yaml.safe_dump_all(docs or [GROUP], sort_keys=False))
    return repo


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    yield from fleet_under_test(tmp_path, 1)


def test_every_option_reads_its_documented_variable_and_lists_it_in_help(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    store = {"OBRECONCILE_STORE": f"sqlite:///{tmp_path}/state.db"}
    refused = run(repo, "plan", "manifests", env={**store, "OBRECONCILE_FORKS": "0"})
    assert refused.returncode == 2 and "Invalid value for '--forks': 0 is not in the range" in refused.stderr
    assert "(from the environment variable OBRECONCILE_FORKS)" in refused.stderr
    changes = run(repo, "plan", "manifests", env={**store, "OBRECONCILE_DETAILED_EXITCODE": "1"})
    assert changes.returncode == 2, changes.stdout + changes.stderr
    json_out = run(repo, "plan", "manifests", env={**store, "OBRECONCILE_OUTPUT": "json"})
    assert json.loads(json_out.stdout)["store"]["created"] is False
    helped = run(repo, "plan", "--help").stdout
    for variable in (
        "OBRECONCILE_FORKS",
        "OBRECONCILE_KNOWN_HOSTS",
        "OBRECONCILE_DETAILED_EXITCODE",
        "OBRECONCILE_OUT]",
    ):
        assert variable in helped, variable
    assert "OBRECONCILE_NAME]" in run(repo, "serve", "--help").stdout


def test_store_and_output_are_accepted_after_the_command(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    result = run(repo, "plan", "manifests", "--output", "json", "--store", f"sqlite:///{tmp_path}/after.db")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["store"]["url"] == f"sqlite:///{tmp_path}/after.db"
    # after the command wins over before it, and over the variable
    env = {"OBRECONCILE_STORE": f"sqlite:///{tmp_path}/env.db"}
    result = run(
        repo, "--store", f"sqlite:///{tmp_path}/x.db", "status", "--store", f"sqlite:///{tmp_path}/late.db", env=env
    )
    assert result.returncode == 0 and f"{tmp_path}/late.db" in result.stdout, result.stdout + result.stderr


def test_a_store_whose_directory_does_not_exist_is_an_error_and_a_new_one_says_so(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    missing = run(repo, "status", "--store", f"sqlite:///{tmp_path}/nonexistent/dir/state.db")
    assert missing.returncode == 1 and "/nonexistent/dir does not exist" in missing.stderr
    assert not (tmp_path / "nonexistent").exists()
    fresh = run(repo, "plan", "manifests", "--store", f"sqlite:///{tmp_path}/new.db")
    assert "store created now: every object is new" in fresh.stdout, fresh.stdout
    again = run(repo, "plan", "manifests", "--store", f"sqlite:///{tmp_path}/new.db")
    assert "store created now" not in again.stdout
    default = run(repo, "plan", "manifests")  # the default store, under the current directory: made
    assert default.returncode == 0 and (repo / ".obreconcile" / "state.db").is_file(), default.stderr


def test_the_shared_configuration_is_found_upwards_and_flags_and_variables_win(tmp_path: Path, fleet: Fleet) -> None:
    node = fleet.nodes[0]
    repo = _repo(tmp_path, [GROUP, node.manifest([])])
    (repo / "state").mkdir()
    (repo / "ci").mkdir()
    (repo / "ci" / "known_hosts").write_text(fleet.known_hosts.read_text())
    (repo / "obreconcile.yaml").write_text(
        "store: sqlite:///state/obreconcile.db\nconnection:\n  known_hosts: ci/known_hosts\n  forks: 3\n"
    )
    work = repo / "manifests"  # a subdirectory: the file is found upwards, its paths stay relative to it
    result = run(work, "--output", "json", "apply", ".")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["store"]["url"] == f"sqlite:///{repo}/state/obreconcile.db"
    assert json.loads(result.stdout)["summary"]["converged"] == 1
    plan = run(work, "--output", "json", "plan", ".", "--detailed-exitcode")
    assert plan.returncode == 0, plan.stdout + plan.stderr  # the same store: nothing to do

    (repo / "ci" / "known_hosts").write_text("")  # the configured file no longer knows the host
    unknown = run(work, "--output", "json", "plan", ".")
    assert unknown.returncode == 1 and "host key" in unknown.stdout.lower(), unknown.stdout
    env = {"OBRECONCILE_KNOWN_HOSTS": str(fleet.known_hosts)}  # the variable wins over the file
    assert run(work, "--output", "json", "plan", ".", env=env).returncode == 0
    flag = run(work, "--output", "json", "plan", ".", "--known-hosts", str(fleet.known_hosts))
    assert flag.returncode == 0, flag.stdout + flag.stderr

    (repo / "obreconcile.yaml").write_text("stor: sqlite:///x.db\n")
    broken = run(work, "status")
    assert broken.returncode == 1 and "obreconcile.yaml: unknown key 'stor'" in broken.stderr
