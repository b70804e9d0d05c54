"""A real etcd for tests and benchmarks: its own data directory and ports on 127.0.0.1.

    server = start_etcd(tmp_path / "etcd")     # running and healthy, or EtcdStartError
    server.url("test-1")                       # etcd://127.0.0.1:PORT/test-1 (a store URL)
    server.stop()                              # by PID, always (the fixtures do it in a finaliser)

Debian's ``etcd-server`` (3.4) is used; ``make system-packages`` installs it when
missing. ``start_etcd`` raises ``EtcdStartError`` with etcd's own log when etcd is missing or does
not come up; the fixtures turn that into a test failure, never a skip. No pytest import here:
bench/ uses this module too.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ETCD = os.environ.get("OBR_TEST_ETCD", "/usr/bin/etcd")
HOST = "127.0.0.1"


class EtcdStartError(RuntimeError):
    """etcd could not be started; the message says why and holds its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class EtcdServer:
    directory: Path
    client_port: int
    process: subprocess.Popen[bytes]

    @property
    def log(self) -> Path:
        return self.directory / "etcd.log"

    def url(self, prefix: str = "obreconcile") -> str:
        return f"etcd://{HOST}:{self.client_port}/{prefix}"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.client_port}/health", timeout=1) as r:
                return b'"true"' in r.read()
        except OSError:
            return False

    def stop(self) -> None:
        """Stop etcd by its PID: SIGTERM, then SIGKILL after 5 s."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def start_etcd(directory: Path, attempts: int = 3, timeout: float = 15.0) -> EtcdServer:
    """Start etcd under ``directory`` on free ports and wait until it reports healthy."""
    if not (os.path.exists(ETCD) or shutil.which(ETCD)):
        raise EtcdStartError(f"{ETCD} not found: install Debian's etcd-server (make system-packages)")
    directory.mkdir(parents=True, exist_ok=True)
    problem = ""
    for attempt in range(attempts):
        server = _launch(directory, attempt)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and server.process.poll() is None:
            if server.healthy():
                return server
            time.sleep(0.05)
        server.stop()
        problem = server.log.read_text(errors="replace")[-3000:]
    raise EtcdStartError(f"etcd did not become healthy in {attempts} attempts; its log:\n{problem}")


def _launch(directory: Path, attempt: int) -> EtcdServer:
    client, peer = free_port(), free_port()
    data = directory / f"data-{attempt}"
    log = (directory / "etcd.log").open("wb")
    command = [
        ETCD,
        "--name=test",
        f"--data-dir={data}",
        f"--listen-client-urls=http://{HOST}:{client}",
        f"--advertise-client-urls=http://{HOST}:{client}",
        f"--listen-peer-urls=http://{HOST}:{peer}",
        f"--initial-advertise-peer-urls=http://{HOST}:{peer}",
        f"--initial-cluster=test=http://{HOST}:{peer}",
        "--initial-cluster-state=new",
        "--log-level=warn",
        "--logger=zap",
    ]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    return EtcdServer(directory, client, process)
