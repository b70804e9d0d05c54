"""What a CLI start imports: each command only what it uses (a cold start is most of a no-op apply)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.services.fleet import ROOT

QUICKSTART = ROOT / "examples" / "quickstart"


def imported(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    script = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60, check=True
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


def cli_imports(*args: str) -> set[str]:
    return imported(
        "import sys\nfrom reconciler.cli.main import cli\n"
        f"try:\n    cli.main({list(args)!r}, prog_name='obreconcile')\nexcept SystemExit:\n    pass"
    )


def test_paramiko_is_imported_without_invoke() -> None:
    modules = imported("import reconciler.transport, paramiko")
    assert "paramiko" in modules
    assert not {"invoke.collection", "asyncio", "unittest.mock"} & modules


def test_match_exec_in_ssh_config_still_runs_invoke(tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text('Match exec "test 1 = 1"\n    User matched\nMatch exec "test 1 = 2"\n    Port 2222\n')
    script = (
        "from pathlib import Path\nfrom reconciler.transport.connect import _ssh_config_entry\n"
        f"print(dict(_ssh_config_entry('lb1', Path({str(config)!r}))))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "{'user': 'matched', 'hostname': 'lb1'}"


def test_validate_imports_neither_paramiko_nor_rich_for_json() -> None:
    modules = cli_imports("--output", "json", "validate", str(QUICKSTART))
    assert not {"paramiko", "rich", "importlib.metadata", "jinja2", "aiohttp", "asyncio"} & modules
    assert "argon2" not in modules  # no User in the quickstart: no password hash to check


def test_validate_imports_argon2_for_users() -> None:
    modules = cli_imports("--output", "json", "validate", str(ROOT / "examples" / "fleet"))
    assert "argon2" in modules


def test_render_imports_no_paramiko(tmp_path: Path) -> None:
    modules = cli_imports("--output", "json", "render", str(QUICKSTART), "--out", str(tmp_path / "out"))
    assert "jinja2" in modules
    assert not {"paramiko", "rich", "aiohttp"} & modules


def test_version_imports_nothing_of_the_commands() -> None:
    modules = cli_imports("--version")
    assert not {"jinja2", "paramiko", "rich", "importlib.metadata"} & modules


def test_status_imports_neither_paramiko_nor_aiohttp(tmp_path: Path) -> None:
    modules = cli_imports("--store", f"sqlite:///{tmp_path / 'state.db'}", "--output", "json", "status")
    assert not {"paramiko", "aiohttp", "jinja2", "asyncio", "reconciler.serve.controller"} & modules
