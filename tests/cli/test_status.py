"""`obreconcile status` against a SQLite store, a real etcd, and an etcd that is not there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from reconciler.store import DeployRecord, DeployResult, open_store, sync_manifests
from tests.services.etcd import EtcdServer, free_port
from tests.store.desired import fleet


def obreconcile(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args], capture_output=True, text=True, timeout=60, check=False
    )


def seed(url: str) -> int:
    with open_store(url) as store:
        revision = sync_manifests(store, fleet(3, access_nodes=2)).revision
        store.record_deploy(DeployRecord("lb1.example.com:80", revision, {}, DeployResult.FAILED, "nginx -t: unknown directive"))
    return revision


def test_status_of_a_sqlite_store_in_text_and_json(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    revision = seed(url)
    text = obreconcile("--store", url, "status")
    assert text.returncode == 0, text.stderr
    assert "sqlite" in text.stdout and f"revision  {revision}" in text.stdout and "master    none" in text.stdout
    assert "lb0.example.com:80  never deployed" in text.stdout
    assert f"lb1.example.com:80  failed at revision {revision}: nginx -t: unknown directive" in text.stdout
    report = json.loads(obreconcile("--store", url, "--output", "json", "status").stdout)
    assert report["store"]["kind"] == "sqlite" and report["store"]["healthy"] is True
    assert report["revision"] == revision and report["master"] is None
    assert report["access_nodes"]["lb0.example.com:80"]["state"] == "never deployed"
    assert report["access_nodes"]["lb1.example.com:80"]["deployed_revision"] == revision


def test_status_of_an_etcd_store(etcd_server: EtcdServer) -> None:
    url = etcd_server.url("status-command")
    revision = seed(url)
    report = json.loads(obreconcile("--store", url, "--output", "json", "status").stdout)
    assert report["store"]["kind"] == "etcd" and report["store"]["healthy"] is True
    assert report["revision"] == revision


def test_status_with_etcd_not_listening_fails_clearly() -> None:
    result = obreconcile("--store", f"etcd://127.0.0.1:{free_port()}/x", "status")
    assert result.returncode == 1
    assert result.stderr.startswith("error: etcd://127.0.0.1:") and "etcd is not answering" in result.stderr
    assert "Traceback" not in result.stderr


def test_status_of_a_corrupted_file_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"garbage" * 1000)
    result = obreconcile("--store", f"sqlite:///{path}", "status")
    assert result.returncode == 1 and "is not an SQLite database" in result.stderr


def test_a_node_converged_at_an_older_revision_is_behind(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    revision = seed(url)
    with open_store(url) as store:
        store.record_deploy(DeployRecord("lb0.example.com:80", revision, {}, DeployResult.CONVERGED))
        assert sync_manifests(store, fleet(4, access_nodes=2)).revision > revision  # the desired state moves on
    report = json.loads(obreconcile("--store", url, "--output", "json", "status").stdout)
    assert report["access_nodes"]["lb0.example.com:80"]["state"] == "behind"
    assert report["access_nodes"]["lb1.example.com:80"]["state"] == "failed"
