"""Setting up SSH connections: ~/.ssh/config, authentication, host keys, retries, the pool.

Only connection setup is retried (refused, timed out, reset, no banner), with exponential
backoff; host-key and authentication failures are permanent and never retried, and a
command is never re-run. Every paramiko or socket error is wrapped here, where it enters.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import NoReturn

import paramiko

from reconciler.errors import AuthenticationError, HostKeyError, TransportError, UnreachableError
from reconciler.manifest.model import Connection
from reconciler.transport.hostkeys import HostKeyPolicy, changed_key_message, load_known_hosts

log = logging.getLogger("reconciler.transport")
# paramiko logs failures of its own threads (with tracebacks) at ERROR; without a handler they
# would reach stderr through logging's last resort. Records still propagate to the root logger.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

DEFAULT_SSH_CONFIG = Path("~/.ssh/config")
DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")


@dataclass(frozen=True)
class SSHSettings:
    """How to connect, for a whole run (the CLI's --known-hosts, --accept-new-host-keys...).

    ``known_hosts`` None means ~/.ssh/config's UserKnownHostsFile, else ~/.ssh/known_hosts.
    ``ssh_config`` None means ~/.ssh/config when it exists. ``connect_timeout`` bounds the
    TCP connect, the banner, the key exchange and authentication, each; ``connect_retries``
    more attempts follow a failed setup after ``retry_backoff``, doubled each time.
    """

    known_hosts: Path | None = None
    accept_new_host_keys: bool = False
    connect_timeout: float = 10.0
    connect_retries: int = 2
    retry_backoff: float = 0.5
    ssh_config: Path | None = None
    allow_agent: bool = True


@dataclass(frozen=True)
class SSHTarget:
    """Where and as whom to connect, after ~/.ssh/config was applied."""

    host: str
    port: int
    user: str
    identity_files: tuple[str, ...]
    identities_only: bool
    known_hosts: Path

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.host, self.port, self.user)

    @property
    def label(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}:{self.port}"


def resolve_target(connection: Connection, settings: SSHSettings) -> SSHTarget:
    """Apply ~/.ssh/config (HostName, Port, User, IdentityFile, IdentitiesOnly, UserKnownHostsFile).

    The manifest wins where it says something: its ``user`` and ``identity_file``, and its
    ``port`` unless that is the default 22. A missing ``identity_file`` is an error now.
    """
    entry = _ssh_config_entry(connection.host, settings.ssh_config)
    host = entry.get("hostname") or connection.host
    label = f"{connection.user or entry.get('user') or getpass.getuser()}@{host}:{connection.port}"
    if "proxyjump" in entry or "proxycommand" in entry:
        raise TransportError(label, "ProxyJump and ProxyCommand in ~/.ssh/config are not supported")
    port = connection.port if connection.port != 22 else int(entry.get("port", 22))
    user = connection.user or entry.get("user") or getpass.getuser()
    files: list[str] = []
    if connection.identity_file:
        path = os.path.expanduser(connection.identity_file)
        if not os.path.isfile(path):
            raise AuthenticationError(label, f"identity_file {connection.identity_file} does not exist")
        files.append(path)
    files += [p for p in (os.path.expanduser(f) for f in entry.get("identityfile", [])) if os.path.isfile(p)]
    known = settings.known_hosts
    if known is None:
        configured = entry.get("userknownhostsfile", "").split()
        known = Path(configured[0] if configured else DEFAULT_KNOWN_HOSTS)
    return SSHTarget(
        host,
        port,
        user,
        tuple(dict.fromkeys(files)),
        entry.get("identitiesonly", "no").lower() == "yes",
        known.expanduser(),
    )


def _ssh_config_entry(host: str, path: Path | None) -> paramiko.SSHConfigDict:
    config_path = (path or DEFAULT_SSH_CONFIG).expanduser()
    if not config_path.is_file():
        return paramiko.SSHConfigDict()
    return paramiko.SSHConfig.from_path(str(config_path)).lookup(host)


_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux


class _QuickAckSocket(socket.socket):
    """A TCP socket that acknowledges what it receives at once (``TCP_QUICKACK``, re-armed per recv).

    sshd leaves Nagle's algorithm on for its side of the connection until the first session
    starts (OpenSSH sets ``TCP_NODELAY`` in ``ssh_packet_set_interactive``). Until then, a
    small reply that follows another one unacknowledged waits for our delayed ACK: 40 ms on
    Linux, paid by the first command on every connection (opening the channel, the exec
    request, its output). Linux leaves quick-ACK mode by itself, hence re-arming it on every
    recv (paramiko reads the socket with ``recv`` only).
    """

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        if _QUICKACK is not None:
            self.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        return data


def _open_socket(target: SSHTarget, timeout: float) -> socket.socket:
    """The TCP connection to the SSH server: no Nagle on our side, no delayed ACK (see above)."""
    plain = socket.create_connection((target.host, target.port), timeout=timeout)
    sock = _QuickAckSocket(plain.family, plain.type, plain.proto, fileno=plain.detach())
    sock.settimeout(timeout)
    # Without TCP_NODELAY, Nagle's algorithm and delayed ACKs add ~40 ms to small SFTP writes.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if _QUICKACK is not None:
        sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
    return sock


class _SetupFailed(Exception):
    """A connection attempt failed in a way that a later attempt may not (internal)."""


def connect(target: SSHTarget, settings: SSHSettings) -> paramiko.SSHClient:
    """An authenticated SSHClient; ``UnreachableError`` after every attempt failed."""
    attempts = max(1, settings.connect_retries + 1)
    delay = settings.retry_backoff
    for attempt in range(1, attempts + 1):
        try:
            return _connect_once(target, settings)
        except _SetupFailed as e:
            if attempt == attempts:
                plural = "s" if attempts > 1 else ""
                raise UnreachableError(target.label, f"cannot connect ({e}) after {attempts} attempt{plural}") from (
                    e.__cause__
                )
            log.info("%s: %s; attempt %d of %d in %.1fs", target.label, e, attempt + 1, attempts, delay)
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def _connect_once(target: SSHTarget, settings: SSHSettings) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    timeout = settings.connect_timeout
    connected = False
    sock: socket.socket | None = None
    try:
        sock = _open_socket(target, timeout)
        load_known_hosts(client, target.known_hosts)
        client.set_missing_host_key_policy(
            HostKeyPolicy(
                target.label, target.known_hosts, target.host, target.port, accept_new=settings.accept_new_host_keys
            )
        )
        client.connect(
            target.host,
            target.port,
            username=target.user,
            # paramiko takes a list of paths too (SSHClient._auth); types-paramiko says str only
            key_filename=list(target.identity_files) or None,  # type: ignore[arg-type]
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            channel_timeout=timeout,
            allow_agent=settings.allow_agent and not target.identities_only,
            look_for_keys=not target.identities_only,
            sock=sock,
        )
        connected = True
    except (TransportError, paramiko.SSHException, OSError, EOFError) as e:
        _raise_setup_error(target, settings, e)
    finally:
        if not connected:
            client.close()
            if sock is not None:
                sock.close()
    log.debug("%s: connected", target.label)
    return client


def _raise_setup_error(target: SSHTarget, settings: SSHSettings, e: Exception) -> NoReturn:
    """Turn what paramiko or the socket raised into our errors (always raises)."""
    label = target.label
    if isinstance(e, TransportError):
        raise e
    if isinstance(e, paramiko.BadHostKeyException):
        message = changed_key_message(target.known_hosts, target.host, target.port, e.key, e.expected_key)
        raise HostKeyError(label, message) from e
    if isinstance(e, paramiko.PasswordRequiredException):
        raise AuthenticationError(label, "the private key is encrypted: load it into ssh-agent") from e
    if isinstance(e, paramiko.AuthenticationException):
        message = (
            f"authentication as {target.user} failed: no offered key was accepted (tried {_tried(target, settings)})"
        )
        raise AuthenticationError(label, message) from e
    if isinstance(e, (ConnectionRefusedError, paramiko.ssh_exception.NoValidConnectionsError)):
        raise _SetupFailed("connection refused") from e
    if isinstance(e, TimeoutError):
        raise _SetupFailed(f"timed out after {settings.connect_timeout:g}s") from e
    if isinstance(e, socket.gaierror):
        raise _SetupFailed(f"cannot resolve {target.host}: {e.strerror}") from e
    if isinstance(e, (OSError, EOFError)):
        raise _SetupFailed(getattr(e, "strerror", None) or type(e).__name__) from e
    if isinstance(e, paramiko.SSHException):
        text = str(e)
        if "No authentication methods available" in text:
            message = (
                f"no key to offer as {target.user} (looked in {_tried(target, settings)}): set identity_file, "
                "IdentityFile in ~/.ssh/config, or load a key into ssh-agent"
            )
            raise AuthenticationError(label, message) from e
        # start_client gives up silently at its timeout ("No existing session" follows), or the
        # banner read times out first: the same thing seen from two threads.
        if "No existing session" in text or "Negotiation" in text or text == "Error reading SSH protocol banner":
            raise _SetupFailed(f"no SSH banner and key exchange within {settings.connect_timeout:g}s") from e
        if "banner" in text:  # the banner read failed for a reason it names ("...banner[Errno 104] ...")
            raise _SetupFailed(text) from e
        if "reset" in text.lower() or "EOF" in text:
            raise _SetupFailed(text) from e
        raise TransportError(label, f"SSH setup failed: {text}") from e
    raise e


def _tried(target: SSHTarget, settings: SSHSettings) -> str:
    sources = [f"identity file {f}" for f in target.identity_files]
    if settings.allow_agent and not target.identities_only:
        sources.append("ssh-agent")
    if not target.identities_only:
        sources.append("~/.ssh/id_*")
    return ", ".join(sources)


def alive(client: paramiko.SSHClient) -> bool:
    transport = client.get_transport()
    return transport is not None and transport.is_active()


class ConnectionPool:
    """SSH connections reused within a run, keyed by (host, port, user); the caller closes it.

    Safe to share between threads: each key connects once (a dead connection is replaced on
    the next request). ``prefetch`` starts connections in the background so that their key
    exchanges overlap whatever the caller does next (loading, rendering): ``client`` then waits
    for the one it needs. ``connects`` counts the connections set up (for tests and benchmarks).
    """

    def __init__(self) -> None:
        self._clients: dict[tuple[str, int, str], paramiko.SSHClient] = {}
        self._locks: dict[tuple[str, int, str], threading.Lock] = {}
        self._pending: dict[tuple[str, int, str], Future[paramiko.SSHClient]] = {}
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self.connects = 0

    def prefetch(self, targets: Iterable[tuple[SSHTarget, SSHSettings]], workers: int = 10) -> None:
        """Start connecting to ``targets`` now, ``workers`` at a time, without waiting.

        A setup error is kept for the first ``client`` call of that target, which raises it
        (instead of trying again: retries already happened in the background).
        """
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="obr-connect")
            for target, settings in targets:
                if target.key not in self._pending and target.key not in self._clients:
                    self._pending[target.key] = self._executor.submit(self._setup, target, settings, False)

    def client(self, target: SSHTarget, settings: SSHSettings, *, renew: bool = False) -> paramiko.SSHClient:
        """The live connection for ``target``, set up if there is none (or ``renew``)."""
        with self._lock:
            pending = self._pending.pop(target.key, None)
        if pending is not None and not renew:
            return pending.result()  # its setup error, if any, is raised here once
        return self._setup(target, settings, renew)

    def _setup(self, target: SSHTarget, settings: SSHSettings, renew: bool) -> paramiko.SSHClient:
        with self._lock:
            key_lock = self._locks.setdefault(target.key, threading.Lock())
        with key_lock:
            current = self._clients.get(target.key)
            if current is not None and alive(current) and not renew:
                return current
            if current is not None:
                current.close()
                del self._clients[target.key]
            client = connect(target, settings)
            self._clients[target.key] = client
            self.connects += 1
            return client

    def close(self) -> None:
        """Close every connection (after the prefetches still running); the pool can be used again."""
        with self._lock:
            executor, self._executor, self._pending = self._executor, None, {}
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def __len__(self) -> int:
        return len(self._clients)

    def __enter__(self) -> ConnectionPool:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
