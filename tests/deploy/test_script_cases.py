"""The deploy script's steps as golden data: ``script_cases/<case>.json`` holds a layout and what
the facts decided (probe tool, the live release to copy) and the exact shell of every step.

test_deploy_script.py runs these scripts in real shells; here their text is pinned, so a change
shows as a reviewed diff of the cases. After a deliberate change, rewrite them from the code
with ``python -m tests.deploy.test_script_cases`` and read the diff.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reconciler.deploy.layout import NodeLayout
from reconciler.deploy.probe import probe_function
from reconciler.deploy.scripts import Deploy, lock_command

CASES = Path(__file__).parent / "script_cases"


def scripts_of(given: dict[str, Any]) -> dict[str, Any]:
    layout = NodeLayout(given["config_dir"])
    probe = given["probe"]
    deploy = Deploy(
        layout,
        layout.release(given["release_id"]),
        given["test_command"],
        given["reload_command"],
        given["error_log"],
        given["revision"],
        probe_function(probe["address"], probe["tool"]) if probe is not None else None,
        given["verify_timeout"],
        layout.release(given["base_id"]) if given["base_id"] else None,
        tuple(given["removed"]),
        carried=tuple(given.get("carried", ())),
        previous=layout.release(given["previous_id"]) if given.get("previous_id") else None,
    )
    return {"lock": lock_command(layout, given["lock_wait"], "echo facts"), "steps": deploy.steps()}


@pytest.mark.parametrize("case", sorted(CASES.glob("*.json")), ids=lambda p: p.stem)
def test_script_case(case: Path) -> None:
    data = json.loads(case.read_text())
    assert scripts_of(data["given"]) == data["scripts"]


def test_there_are_script_cases() -> None:
    assert len(list(CASES.glob("*.json"))) >= 4


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_every_pinned_script_parses(shell: str) -> None:
    for case in sorted(CASES.glob("*.json")):
        scripts = json.loads(case.read_text())["scripts"]
        for name, script in [("lock", scripts["lock"]), *scripts["steps"].items()]:
            checked = subprocess.run([shell, "-n", "-c", script], capture_output=True, text=True, timeout=10)
            assert checked.returncode == 0, f"{case.stem} {name}: {checked.stderr}"


def _write() -> None:
    for case in sorted(CASES.glob("*.json")):
        data = json.loads(case.read_text())
        data["scripts"] = scripts_of(data["given"])
        case.write_text(json.dumps(data, indent=2) + "\n")
        print(case)


if __name__ == "__main__":
    _write() if sys.argv[1:] == [] else sys.exit("usage: python -m tests.deploy.test_script_cases")
