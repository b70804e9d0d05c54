"""A fleet of real access nodes on this machine: each its own sshd and its own nginx.

    fleet = start_fleet(tmp_path, 3)          # 3 access nodes, each sshd + nginx, all running
    fleet.write_manifests(directory, upstreams={"web": [backend.hostname, ...]})
    fleet.cli("apply", directory)             # obreconcile with the fleet's known_hosts and store
    fleet.nodes[0].get("web.example.com")     # (status, body) through that node's nginx
    fleet.stop()                              # every sshd and nginx, by PID

Access node i listens on its own loopback address 127.0.0.(11+i) (a tcp upstream can use the
same port on every node) and a free http port; its name is ``127.0.0.(11+i):PORT``. obreconcile
reaches it over SSH as the current user (root in CI) with the sshd's generated client key.
nginx's main configuration is the node's own (PREFIX/nginx.conf) and includes the managed
directory as docs/render.md documents. No pytest import: bench/ uses this module too.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.services.sshd import SSHServer, free_port, start_sshd

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
STREAM_MODULE = os.environ.get("NGINX_STREAM_MODULE", "/usr/lib/nginx/modules/ngx_stream_module.so")
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class SimulatedNode:
    """One access node: an sshd and an nginx with its own prefix."""

    index: int
    sshd: SSHServer
    prefix: Path
    http_port: int
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.{11 + self.index}"

    @property
    def name(self) -> str:
        return f"{self.address}:{self.http_port}"

    @property
    def conf(self) -> Path:
        return self.prefix / "nginx.conf"

    @property
    def error_log(self) -> Path:
        return self.prefix / "logs" / "error.log"

    @property
    def config_dir(self) -> Path:
        return self.prefix / "openbalancer"

    @property
    def releases(self) -> Path:
        return Path(str(self.config_dir) + ".releases")

    def nginx_command(self, *args: str) -> str:
        return f"{NGINX} -p {self.prefix} -c {self.conf} -e {self.error_log} {' '.join(args)}".strip()

    def write_conf(self, extra_http: str = "") -> None:
        tmp = self.prefix / "tmp"
        temp = "\n".join(f"    {k}_temp_path {tmp}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        self.conf.write_text(
            f"load_module {STREAM_MODULE};\n"
            + ("user root;\n" if os.geteuid() == 0 else "")
            + f"worker_processes 1;\npid {self.prefix}/nginx.pid;\nerror_log {self.error_log} notice;\n"
            "events { worker_connections 512; }\n"
            f"http {{\n    access_log off;\n{temp}\n    include {self.config_dir}/http/*.conf;\n{extra_http}}}\n"
            f"stream {{\n    include {self.config_dir}/stream/*.conf;\n}}\n"
        )

    def start_nginx(self) -> None:
        (self.prefix / "tmp").mkdir(parents=True, exist_ok=True)
        (self.prefix / "logs").mkdir(parents=True, exist_ok=True)
        if not self.conf.exists():
            self.write_conf()
        command = [NGINX, "-p", str(self.prefix), "-c", str(self.conf), "-e", str(self.error_log), "-g", "daemon off;"]
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        pid_file = self.prefix / "nginx.pid"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx of {self.name} exited at start:\n{self.log_tail()}")
            if pid_file.is_file() and pid_file.read_text().strip() == str(self.process.pid):
                return
            time.sleep(0.02)
        raise RuntimeError(f"nginx of {self.name} did not start:\n{self.log_tail()}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.sshd.stop()

    def log_tail(self, lines: int = 20) -> str:
        text = self.error_log.read_text(errors="replace") if self.error_log.is_file() else ""
        return "\n".join(text.splitlines()[-lines:])

    def reloads(self) -> int:
        """Reloads nginx has started since it started ("reconfiguring" in its error log)."""
        text = self.error_log.read_text(errors="replace") if self.error_log.is_file() else ""
        return text.count("(SIGHUP) received")

    def get(self, host: str, path: str = "/", timeout: float = 5.0) -> tuple[int, str]:
        """(status, body) of a GET through this node's nginx with ``Host: host``."""
        connection = http.client.HTTPConnection(self.address, self.http_port, timeout=timeout)
        try:
            connection.request("GET", path, headers={"Host": host, "Connection": "close"})
            response = connection.getresponse()
            return response.status, response.read().decode()
        finally:
            connection.close()

    def served_revision(self) -> str:
        status, body = self.get("localhost", "/.well-known/obreconcile/revision")
        return body.strip() if status == 200 else ""

    def live_files(self) -> dict[str, str]:
        """Relative path -> text of every managed file live now (through the config_dir link)."""
        if not self.config_dir.exists():
            return {}
        return {
            str(p.relative_to(self.config_dir)): p.read_text()
            for p in sorted(self.config_dir.rglob("*"))
            if p.is_file() and ".obreconcile" not in p.parts
        }

    def marker(self) -> dict[str, Any]:
        path = self.config_dir / ".obreconcile" / "marker.json"
        return yaml.safe_load(path.read_text()) if path.is_file() else {}

    def manifest(self, upstreams: Sequence[str], **nginx: str) -> dict[str, Any]:
        return {
            "apiVersion": "openbalancer/v1",
            "kind": "AccessNode",
            "name": self.name,
            "owner": "ops",
            "listen_address": self.address,
            "upstreams": list(upstreams),
            "connection": {
                "type": "ssh",
                "host": self.sshd.host,
                "port": self.sshd.port,
                "user": self.sshd.user,
                "identity_file": str(self.sshd.client_key),
            },
            "nginx": {
                "config_dir": str(self.config_dir),
                "test_command": nginx.get("test_command", self.nginx_command("-t")),
                "reload_command": nginx.get("reload_command", self.nginx_command("-s", "reload")),
                "error_log": str(self.error_log),
            },
        }


@dataclass
class Fleet:
    directory: Path
    nodes: list[SimulatedNode]
    known_hosts: Path
    store: str

    def write_manifests(
        self,
        directory: Path,
        upstreams: Mapping[str, Sequence[str] | Mapping[str, Any]],
        nodes: Sequence[SimulatedNode] | None = None,
        node_settings: Mapping[str, Mapping[str, str]] | None = None,
    ) -> Path:
        """Manifests of ``upstreams`` (name -> backend hostnames, or a full Upstream body) served
        by every node (or ``nodes``). Returns the directory (its files are replaced)."""
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("*.yaml"):
            old.unlink()
        docs: list[dict[str, Any]] = [{"apiVersion": "openbalancer/v1", "kind": "Group", "name": "ops"}]
        for name, spec in upstreams.items():
            body: dict[str, Any] = (
                dict(spec) if isinstance(spec, Mapping) else {"nodes": [{"hostname": h} for h in spec]}
            )
            body.setdefault("listen", {"server_names": [f"{name}.example.com"]})
            docs.append({"apiVersion": "openbalancer/v1", "kind": "Upstream", "name": name, "owner": "ops", **body})
        (directory / "upstreams.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
        targets = self.nodes if nodes is None else nodes
        settings = node_settings or {}
        access = [n.manifest(list(upstreams), **settings.get(n.name, {})) for n in targets]
        (directory / "access-nodes.yaml").write_text(yaml.safe_dump_all(access, sort_keys=False))
        return directory

    def cli_args(self, *args: str | Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "reconciler",
            "--store",
            self.store,
            *[str(a) for a in args],
        ]

    def cli(
        self, *args: str | Path, output: str = "json", extra: Sequence[str] = (), timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run obreconcile (``--output json`` unless told) with the fleet's known_hosts and store."""
        command, *rest = [str(a) for a in args]
        argv = self.cli_args("--output", output, command, *rest, "--known-hosts", str(self.known_hosts), *extra)
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_fleet(directory: Path, count: int, environment: Mapping[str, str] | None = None) -> Fleet:
    """``count`` access nodes under ``directory``, all running; stop them with ``Fleet.stop``.

    ``environment``: set in every SSH session of every node (``start_sshd``), e.g. a PATH whose
    first directory holds wrappers of the commands a deploy runs."""
    nodes: list[SimulatedNode] = []
    fleet = Fleet(directory, nodes, directory / "known_hosts", f"sqlite:///{directory}/state.db")
    try:
        for i in range(count):
            sshd = start_sshd(directory / f"node{i}" / "sshd", environment=environment)
            node = SimulatedNode(i, sshd, directory / f"node{i}" / "nginx", free_port())
            nodes.append(node)
            node.start_nginx()
    except BaseException:
        fleet.stop()
        raise
    fleet.known_hosts.write_text("".join(n.sshd.known_hosts_line for n in nodes))
    return fleet
