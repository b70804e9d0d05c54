"""`pip install .` (not editable) gives a working `obreconcile` that finds its schemas and templates."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_validates_an_example(tmp_path: Path) -> None:
    # Nothing from the source tree may leak in: only the wheel's copy of the package counts.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(ROOT)],
        check=True,
        timeout=300,
    )
    [wheel] = dist.glob("obreconcile-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "reconciler/_data/schemas/upstream.schema.json" in names
    assert any(n.startswith("reconciler/_data/templates/") and n.endswith(".j2") for n in names)
    assert {"reconciler/api/static/index.html", "reconciler/api/static/app.js"} <= set(names)  # the dashboard

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # The dependencies come from the runtime lock (exact versions and hashes, as a user who
    # installs from a checkout gets them); the package itself only from the wheel: the source
    # tree is never on the fresh venv's path.
    lock = ROOT / "requirements-runtime.lock"
    subprocess.run(
        [str(venv / "bin/python"), "-m", "pip", "install", "-q", "--require-hashes", "--only-binary", ":all:", "-r", str(lock)],
        check=True,
        timeout=600,
        env=env,
    )
    subprocess.run(
        [str(venv / "bin/python"), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
        check=True,
        timeout=300,
        env=env,
    )
    installed = subprocess.check_output([str(venv / "bin/python"), "-m", "pip", "freeze"], text=True, env=env)
    pinned = {_normal(line.split(" ")[0]) for line in lock.read_text().splitlines() if "==" in line and line[0] != " "}
    unlocked = [line for line in installed.splitlines() if "==" in line and _normal(line) not in pinned]
    assert [line for line in unlocked if not line.lower().startswith("obreconcile==")] == []

    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run(
        [
            str(venv / "bin/python"),
            "-c",
            "import reconciler.resources as r; print(r.schema_dir()); print(r.template_dir())",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.split()
    assert all(str(venv) in w for w in where), where

    result = subprocess.run(
        [str(venv / "bin/obreconcile"), "validate", str(ROOT / "examples/fleet")],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("valid: ")
    out = tmp_path / "rendered"
    result = subprocess.run(
        [str(venv / "bin/obreconcile"), "render", str(ROOT / "examples/quickstart"), "--out", str(out)],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert any(out.rglob("*.conf"))


def _normal(requirement: str) -> str:
    """``Name_X==1.0`` as the lock spells it: ``name-x==1.0``."""
    return requirement.lower().replace("_", "-")
