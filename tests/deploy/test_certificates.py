"""Certificates and keys named by upstreams: read on the node as facts, refused when missing,
a warning when expiring; plan and apply against real access nodes (sshd + nginx each)."""

from __future__ import annotations

import datetime
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.deploy.facts import TlsFile, TlsFileState, TlsReference, parse_tls, tls_command, tls_references
from reconciler.transport.base import CommandResult
from tests.deploy.conftest import address
from tests.services.backends import HttpBackend
from tests.services.fleet import Fleet
from tests.services.nginx import free_port
from tests.services.pki import TestCA


def result(text: str) -> CommandResult:
    return CommandResult(0, text.encode(), b"")


def test_the_references_come_from_the_node_model() -> None:
    model = {
        "upstreams": {
            "web": {"tls": {"certificate": "/c/web.pem", "key": "/c/web.key"}},
            "plain": {"listen": {}},
        }
    }
    assert tls_references(model) == [
        TlsReference("web", "tls.certificate", "/c/web.pem"),
        TlsReference("web", "tls.key", "/c/web.key"),
    ]


def test_the_fact_parser_reads_every_state() -> None:
    lines = [
        "cert /c/a.pem notAfter=Dec  1 09:30:00 2027 GMT",
        "missing /c/b.pem",
        "unreadable /c/c.key",
        "present /c/d.pem",
        "invalid /c/e.pem",
        "ok /c/a.key",
        "cert /c/f.pem notAfter=garbage",
    ]
    expected_end = datetime.datetime(2027, 12, 1, 9, 30, tzinfo=datetime.UTC).timestamp()
    assert parse_tls(result("\n".join(lines) + "\n")) == {
        "/c/a.pem": TlsFile(TlsFileState.OK, expected_end),
        "/c/b.pem": TlsFile(TlsFileState.MISSING),
        "/c/c.key": TlsFile(TlsFileState.UNREADABLE),
        "/c/d.pem": TlsFile(TlsFileState.PRESENT),
        "/c/e.pem": TlsFile(TlsFileState.INVALID),
        "/c/a.key": TlsFile(TlsFileState.OK),
        "/c/f.pem": TlsFile(TlsFileState.INVALID),
    }


def test_the_command_reads_real_files_and_never_their_content(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "pki")
    cert, key = ca.issue("web", ["web.test"], days=3)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    refs = [
        TlsReference("web", "tls.certificate", str(cert)),
        TlsReference("web", "tls.key", str(key)),
        TlsReference("gone", "tls.certificate", str(tmp_path / "gone.pem")),
        TlsReference("bad", "tls.certificate", str(garbage)),
    ]
    run = subprocess.run(["bash", "-c", tls_command(refs)], capture_output=True, timeout=30, check=False)
    assert "PRIVATE KEY" not in run.stdout.decode() and "BEGIN" not in run.stdout.decode()
    facts = parse_tls(CommandResult(run.returncode, run.stdout, run.stderr))
    assert facts[str(key)] == TlsFile(TlsFileState.OK)
    assert facts[str(tmp_path / "gone.pem")].state is TlsFileState.MISSING
    assert facts[str(garbage)].state is TlsFileState.INVALID
    left = (facts[str(cert)].not_after or 0) - datetime.datetime.now(datetime.UTC).timestamp()
    assert 2.9 * 86400 < left <= 3 * 86400


def _documents(directory: Path) -> list[dict[str, Any]]:
    return [d for p in sorted(directory.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text())]


def test_a_missing_certificate_refuses_its_node_and_the_others_converge(
    fleet: Fleet, backends: list[HttpBackend], tmp_path: Path
) -> None:
    pki = tmp_path / "node-pki"
    cert, key = pki / "secure.pem", pki / "secure.key"
    secure = {
        "nodes": [{"hostname": address(backends[0])}],
        "listen": {"server_names": ["secure.example.com"]},
        "tls": {"certificate": str(cert), "key": str(key)},
    }
    manifests = fleet.write_manifests(tmp_path / "m", {"web": [address(backends[1])], "secure": secure})
    target = fleet.nodes[1]  # only this node serves the tls upstream
    https_port = free_port()
    nodes = _documents(manifests)
    for doc in nodes:
        if doc["kind"] == "AccessNode":
            if doc["name"] == target.name:
                doc["https_port"] = https_port
            else:
                doc["upstreams"] = ["web"]
    (manifests / "access-nodes.yaml").write_text(yaml.safe_dump_all([d for d in nodes if d["kind"] == "AccessNode"]))

    plan = json.loads(fleet.cli("plan", manifests).stdout)
    refused = {p["access_node"]: p for p in plan["access_nodes"]}[target.name]
    assert f"upstream secure: tls.certificate {cert} is missing on the access node" in json.dumps(refused)
    assert f"upstream secure: tls.key {key} is missing on the access node" in json.dumps(refused)

    applied = fleet.cli("apply", manifests)
    assert applied.returncode == 1
    outcomes = {r["access_node"]: r for r in json.loads(applied.stdout)["access_nodes"]}
    assert outcomes[target.name]["status"] == "failed" and outcomes[target.name]["step"] == "plan"
    assert str(cert) in outcomes[target.name]["error"]
    assert target.reloads() == 0 or not target.live_files()
    for node in fleet.nodes:
        if node is not target:
            assert outcomes[node.name]["status"] == "converged"
            assert node.get("web.example.com")[1] == "b1"

    # the certificate appears, expiring in 5 days: the node converges, and plan warns
    ca = TestCA(tmp_path / "ca")
    issued_cert, issued_key = ca.issue("secure", ["secure.example.com"], days=5)
    pki.mkdir()
    cert.write_bytes(issued_cert.read_bytes())
    key.write_bytes(issued_key.read_bytes())
    applied = fleet.cli("apply", manifests)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    warnings = json.dumps(json.loads(applied.stdout))
    assert f"upstream secure: tls.certificate {cert} expires in 4 days" in warnings
    assert "BEGIN" not in applied.stdout + applied.stderr  # no certificate or key text, ever


@pytest.mark.parametrize("state", [TlsFileState.MISSING, TlsFileState.UNREADABLE, TlsFileState.INVALID])
def test_only_missing_unreadable_and_invalid_files_refuse(state: TlsFileState) -> None:
    assert state.refused
    assert not TlsFileState.OK.refused and not TlsFileState.PRESENT.refused
