"""Host-key policy: like OpenSSH's StrictHostKeyChecking=yes, or accept-new on request.

- A host whose key is in the known-hosts file: the key must match. A changed key is always
  refused, also with ``accept_new`` (the message says how to replace it after checking).
- An unknown host: refused, with the command that records it; with ``accept_new`` the key
  is appended to the known-hosts file (created 0600, its directory 0700) and used.

Entries are looked up as OpenSSH writes them: ``host`` for port 22, ``[host]:port`` otherwise,
hashed (``|1|…``) or not; that is paramiko's ``HostKeys``. Only public keys and their
SHA256 fingerprints ever appear in messages.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import os
from pathlib import Path

import paramiko

from reconciler.errors import HostKeyError

log = logging.getLogger("reconciler.transport")


def known_hosts_name(host: str, port: int) -> str:
    """The name a known-hosts entry has: ``host`` for port 22, else ``[host]:port``."""
    return host if port == 22 else f"[{host}]:{port}"


def fingerprint(key: paramiko.PKey) -> str:
    """``SHA256:…`` as ``ssh-keygen -l`` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def load_known_hosts(client: paramiko.SSHClient, path: Path) -> None:
    """Load ``path`` into the client's host keys (nothing when the file does not exist yet)."""
    if path.exists():
        client.get_host_keys().load(str(path))


def record_host_key(path: Path, name: str, key: paramiko.PKey) -> None:
    """Append ``name keytype base64`` to ``path`` under an exclusive lock (parallel connections)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        needs_newline = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
        line = f"{name} {key.get_name()} {key.get_base64()}\n"
        os.write(fd, (b"\n" if needs_newline else b"") + line.encode())
    finally:
        os.close(fd)


def unknown_key_message(path: Path, host: str, port: int, key: paramiko.PKey) -> str:
    name = known_hosts_name(host, port)
    return (
        f"unknown host key for {name} ({key.get_name()} {fingerprint(key)}), not in {path}; "
        f"verify the fingerprint out of band, then record it with "
        f"`ssh-keyscan -p {port} {host} >> {path}`, or run with --accept-new-host-keys"
    )


def changed_key_message(path: Path, host: str, port: int, offered: paramiko.PKey, recorded: paramiko.PKey) -> str:
    name = known_hosts_name(host, port)
    return (
        f"HOST KEY CHANGED for {name}: it offers {offered.get_name()} {fingerprint(offered)}, "
        f"{path} records {recorded.get_name()} {fingerprint(recorded)}; refused (this is never "
        f"accepted automatically). If the change is expected, verify the new fingerprint out of band, "
        f"then run `ssh-keygen -R '{name}' -f {path}` and record the new key "
        f"(`ssh-keyscan -p {port} {host} >> {path}` or --accept-new-host-keys)"
    )


class HostKeyPolicy(paramiko.MissingHostKeyPolicy):  # type: ignore[misc]
    """paramiko's hook for hosts with no known-hosts entry: refuse, or record with accept_new.

    A known host with a different key never reaches this policy: paramiko raises
    ``BadHostKeyException``, which the connection code turns into ``HostKeyError``
    with ``changed_key_message``.
    """

    def __init__(self, target: str, known_hosts: Path, host: str, port: int, *, accept_new: bool) -> None:
        self.target = target
        self.known_hosts = known_hosts
        self.host = host
        self.port = port
        self.accept_new = accept_new

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if not self.accept_new:
            raise HostKeyError(self.target, unknown_key_message(self.known_hosts, self.host, self.port, key))
        record_host_key(self.known_hosts, hostname, key)
        client.get_host_keys().add(hostname, key.get_name(), key)
        log.warning(
            "%s: recorded new host key %s %s for %s in %s",
            self.target,
            key.get_name(),
            fingerprint(key),
            hostname,
            self.known_hosts,
        )
