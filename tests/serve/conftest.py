"""Fixtures of the controller tests: real access nodes, restartable backends, `serve` as a process.

Node 0 of the fleet is reached over SSH, node 1 locally (``connection: local``). Backends are
HTTP servers in this process on fixed ports, so a killed one can come back on its address.
Controllers run as ``python -m reconciler serve`` subprocesses and are stopped by PID in the
fixtures' finalisers, whatever the test did.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.services.backends import RestartableBackend
from tests.services.fleet import ROOT, Fleet, SimulatedNode
from tests.services.fleet_fixtures import fleet_under_test
from tests.services.sshd import free_port

Backend = RestartableBackend  # the tests' name for it

API = importlib.util.find_spec("reconciler.api.auth") is not None
"""The REST API is there: /status needs a token (of the bootstrap admin)."""
FAST_CHECK = {"interval": "200ms", "timeout": "1s", "rise": 2, "fall": 2}  # a killed backend refuses at once
INTERVAL, RISE, FALL = 0.2, 2, 2


def wait_for(condition: Callable[[], Any], timeout: float, what: str | Callable[[], str], every: float = 0.05) -> Any:
    """Poll ``condition`` until it is truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what if isinstance(what, str) else what()}")
        time.sleep(every)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """Two access nodes (sshd + nginx each); node 1 is reached with connection: local."""
    yield from fleet_under_test(tmp_path, 2)


@pytest.fixture
def backends() -> Iterator[list[Backend]]:
    started = [Backend(f"b{i}") for i in range(4)]
    try:
        yield started
    finally:
        for backend in started:
            backend.stop()


def web_upstream(backends: Sequence[Backend], **fields: object) -> dict[str, object]:
    """The body of upstream ``web``: these backends, checked by ``fast``."""
    return {"checks": ["fast"], "nodes": [{"hostname": b.hostname} for b in backends], **fields}


def write_manifests(
    fleet: Fleet,
    directory: Path,
    upstreams: Mapping[str, Mapping[str, Any]],
    checks: Mapping[str, Mapping[str, Any]] | None = None,
    nodes: Sequence[SimulatedNode] | None = None,
) -> Path:
    """Manifests: group ops, ``checks`` (name -> fields), ``upstreams`` (name -> body), the fleet."""
    directory.mkdir(parents=True, exist_ok=True)
    docs: list[dict[str, Any]] = [
        {"apiVersion": "openbalancer/v1", "kind": "Group", "name": "ops", "global_permissions": ["GLOBAL_RW"]}
    ]
    for name, fields in (checks or {"fast": {"base_check": "http", **FAST_CHECK}}).items():
        docs.append({"apiVersion": "openbalancer/v1", "kind": "Check", "name": name, "owner": "ops", **fields})
    for name, body in upstreams.items():
        upstream = {"apiVersion": "openbalancer/v1", "kind": "Upstream", "name": name, "owner": "ops", **body}
        upstream.setdefault("listen", {"server_names": [f"{name}.example.com"]})
        docs.append(upstream)
    for node in nodes if nodes is not None else fleet.nodes:
        manifest = node.manifest(list(upstreams))
        if node.index == 1:
            manifest["connection"] = {"type": "local"}
        docs.append(manifest)
    (directory / "all.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return directory


def apply(fleet: Fleet, manifests: Path) -> None:
    result = fleet.cli("apply", manifests)
    assert result.returncode == 0, result.stdout + result.stderr


def role(node: SimulatedNode, upstream: str, hostname: str) -> str | None:
    """'enabled', 'backup', 'down' as live on the node (None when the server is not there)."""
    text = node.live_files().get(f"http/{upstream}.conf", "")
    for line in text.splitlines():
        if line.strip().startswith("server ") and line.rstrip().endswith(f"# {hostname}"):
            body = line.split(";")[0]
            return "down" if body.endswith(" down") else "backup" if body.endswith(" backup") else "enabled"
    return None


def serving(fleet: Fleet) -> bool:
    """Every node's nginx answers the revision of its live files (the last push was reloaded)."""
    return all(n.served_revision() == n.marker().get("revision") for n in fleet.nodes)


def roles(node: SimulatedNode, upstream: str, hostnames: Sequence[str]) -> list[str | None]:
    return [role(node, upstream, h) for h in hostnames]


class Serve:
    """``obreconcile serve`` as a subprocess; stopped by PID."""

    def __init__(
        self, fleet: Fleet, log: Path, *args: str, env: Mapping[str, str] | None = None, admin: bool = True
    ) -> None:
        self._token = ""
        self.admin = admin
        self.admin_log: Path | None = None  # the log of the controller that bootstrapped the admin
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        argv = fleet.cli_args(
            "serve",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--name",
            f"ctl-{self.port}",
            "--known-hosts",
            str(fleet.known_hosts),
            "--coalesce",
            "0.3",
            *(["--bootstrap-admin", "admin"] if admin and API else []),
            *args,
        )
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, **(env or {})}
            )
        self.name = f"ctl-{self.port}"

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(self.url + path, headers=dict(headers or {}))
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def token(self) -> str:
        """An API token of the bootstrap admin (its password is printed once at start)."""
        if API and not self._token:
            source = self.admin_log or self.log
            pattern = re.compile(r"bootstrap admin 'admin': password (\S+)")
            match = wait_for(lambda: pattern.search(source.read_text(errors="replace")), 40, "the admin's password")
            body = json.dumps({"user_name": "admin", "password": match[1]}).encode()
            request = urllib.request.Request(self.url + "/auth", body, {"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as response:
                self._token = json.loads(response.read())["token"]
        return self._token

    def put(self, path: str, body: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """PUT ``body`` as JSON (as the bootstrap admin): (status, the JSON answer)."""
        request = urllib.request.Request(
            self.url + path,
            json.dumps(body).encode(),
            {"Content-Type": "application/json", "X-Auth-Token": self.token()},
            method="PUT",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def status(self) -> dict[str, Any]:
        """GET /status (as the bootstrap admin when the API needs a token)."""
        try:
            code, body = self.get("/status", {"X-Auth-Token": self.token()} if API else None)
        except OSError:
            return {}
        return json.loads(body) if code == 200 else {}

    def metrics(self) -> str:
        try:
            return self.get("/metrics")[1].decode()
        except OSError:
            return ""

    def is_master(self) -> bool:
        return "obreconcile_master 1.0" in self.metrics()

    def converged(self) -> bool:
        lines = [m for m in self.metrics().splitlines() if m.startswith("obreconcile_access_node_converged{")]
        return bool(lines) and all(m.endswith(" 1.0") for m in lines)

    def wait_master(self, timeout: float = 40) -> None:
        wait_for(self.is_master, timeout, lambda: f"{self.name} to be master\n{self.tail()}")

    def wait_converged(self, what: str = "convergence") -> None:
        """Master, and every access node converged (its log in the message when not)."""
        self.wait_master()
        wait_for(self.converged, 30, lambda: f"{what}\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, wait; SIGKILL when it does not stop. The exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture
def serve(fleet: Fleet, tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    """Start controllers with ``serve(*args, env=...)``; every one is stopped at the end."""
    started: list[Serve] = []

    def start(*args: str, env: Mapping[str, str] | None = None, admin: bool = True) -> Serve:
        controller = Serve(fleet, tmp_path / f"serve-{len(started)}.log", *args, env=env, admin=admin)
        admins = [c for c in started if c.admin]
        controller.admin_log = admins[0].log if admins and not admin else None
        started.append(controller)
        return controller

    try:
        yield start
    finally:
        for controller in started:
            controller.stop()
