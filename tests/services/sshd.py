"""A real OpenSSH server for tests and benchmarks: its own keys, port and directory on 127.0.0.1.

    server = start_sshd(tmp_path / "sshd")     # keys generated, sshd running, banner seen
    node = server.access_node("lb1")           # an AccessNode that logs in as root with its key
    server.known_hosts                         # a file holding its host key as [127.0.0.1]:PORT
    server.stop()                              # by PID; also done by the fixtures in sshd_fixtures

Keys are made with ``ssh-keygen`` in the server's directory (a tmp dir, never committed).
Several servers can run at once, each on a free port. ``start_sshd`` raises ``SSHDStartError``
with sshd's own log when sshd is missing or does not come up; the fixtures turn that into a
test failure, never a skip. No pytest import here: bench/ uses this module too.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from reconciler.manifest.model import AccessNode, Connection

SSHD = os.environ.get("OBR_TEST_SSHD", "/usr/sbin/sshd")
HOST = "127.0.0.1"
PRIVILEGE_SEPARATION_DIR = Path("/run/sshd")


class SSHDStartError(RuntimeError):
    """sshd could not be started; the message says why and holds its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that nothing listens on right now (each socket is
    held until all are chosen: one ``free_port()`` after another can hand out a port twice)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind((HOST, 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def keygen(path: Path, comment: str) -> str:
    """An ed25519 key pair at ``path`` and ``path.pub``; returns the public key line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return (path.with_name(path.name + ".pub")).read_text().strip()


@dataclass
class SSHServer:
    """A running sshd; ``client_key`` is authorised to log in as the current user (root in CI)."""

    directory: Path
    port: int
    host_key: Path
    host_public_key: str
    client_key: Path
    client_public_key: str
    authorized_keys: Path
    known_hosts: Path
    log: Path
    process: subprocess.Popen[bytes] = field(repr=False)
    host: str = HOST

    @property
    def known_hosts_line(self) -> str:
        return f"[{self.host}]:{self.port} {self.host_public_key}\n"

    @property
    def user(self) -> str:
        return getpass.getuser()

    def connection(self, **overrides: object) -> Connection:
        base = Connection("ssh", self.host, self.port, self.user, str(self.client_key), False)
        return replace(base, **overrides)  # type: ignore[arg-type]

    def access_node(self, name: str = "lb1", **connection: object) -> AccessNode:
        return AccessNode(name=name, owner="ops", connection=self.connection(**connection))

    def connections(self) -> int:
        """Sessions authenticated so far (sshd logs one "Accepted publickey" line each)."""
        return self.log.read_text(errors="replace").count("Accepted publickey")

    def stop(self) -> None:
        """Stop this sshd (by its PID) and wait for it; safe to call twice."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _config(directory: Path, port: int, host_key: Path, authorized_keys: Path) -> str:
    return f"""\
ListenAddress {HOST}
Port {port}
HostKey {host_key}
PidFile {directory / "sshd.pid"}
AuthorizedKeysFile {authorized_keys}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
LogLevel VERBOSE
MaxStartups 200
MaxSessions 50
PermitUserEnvironment yes
Subsystem sftp internal-sftp
"""


def start_sshd(directory: Path, *, environment: Mapping[str, str] | None = None, timeout: float = 10.0) -> SSHServer:
    """Generate keys, write a config, start ``sshd -D -e`` and wait for its banner.

    ``environment`` is set for every session of the client key (authorized_keys
    ``environment=`` with ``PermitUserEnvironment yes``), e.g. a PATH with shims. HOME is
    ``DIRECTORY/home`` unless given: sessions neither see nor change the real user's home,
    and the login shell skips its rc files (root's .bashrc costs ~120 ms per command here).
    """
    if not os.access(SSHD, os.X_OK) or shutil.which("ssh-keygen") is None:
        raise SSHDStartError(f"{SSHD} or ssh-keygen is missing: install Debian's openssh-server and openssh-client")
    directory.mkdir(parents=True, exist_ok=True)
    host_key, client_key = directory / "host_ed25519", directory / "client_ed25519"
    host_public = keygen(host_key, "obr-test-host")
    client_public = keygen(client_key, "obr-test-client")
    home = directory / "home"
    home.mkdir(exist_ok=True)
    session_environment = {"HOME": str(home), **(environment or {})}
    options = ",".join(f'environment="{k}={v}"' for k, v in session_environment.items())
    authorized_keys = directory / "authorized_keys"
    authorized_keys.write_text(f"{options} {client_public}\n")
    PRIVILEGE_SEPARATION_DIR.mkdir(mode=0o755, exist_ok=True)
    last_error = ""
    for _ in range(3):  # the free port may be taken between finding it and sshd binding it
        port = free_port()
        config = directory / "sshd_config"
        config.write_text(_config(directory, port, host_key, authorized_keys))
        log = directory / "sshd.log"
        with log.open("wb") as out:
            process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT)
        known_hosts = directory / "known_hosts"
        server = SSHServer(
            directory,
            port,
            host_key,
            host_public,
            client_key,
            client_public,
            authorized_keys,
            known_hosts,
            log,
            process,
        )
        known_hosts.write_text(server.known_hosts_line)
        last_error = _wait_for_banner(server, timeout)
        if not last_error:
            return server
        server.stop()
        if "Address already in use" not in last_error:
            break
    raise SSHDStartError(f"sshd did not start on {HOST}: {last_error}")


def _wait_for_banner(server: SSHServer, timeout: float) -> str:
    """'' once sshd sends its banner; else why not (with sshd's log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return f"sshd exited with {server.process.returncode}: {server.log.read_text(errors='replace').strip()}"
        try:
            with socket.create_connection((server.host, server.port), timeout=1) as s:
                if s.recv(64).startswith(b"SSH-"):
                    return ""
        except OSError:
            time.sleep(0.02)
    return f"no SSH banner within {timeout:g}s: {server.log.read_text(errors='replace').strip()}"
