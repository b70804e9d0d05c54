"""SSH connection setup against real sshd servers: host keys, authentication, retries, reuse."""

from __future__ import annotations

import logging
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
import pytest

from reconciler.errors import AuthenticationError, ConnectionLost, HostKeyError, TransportError, UnreachableError
from reconciler.manifest.model import AccessNode, Connection
from reconciler.transport import ConnectionPool, LocalTransport, SSHSettings, SSHTransport, Transport, open_transport
from tests.services.sshd import SSHServer, free_port, keygen
from tests.transport.conftest import local_node, ssh_transport

Factory = Callable[..., SSHServer]


def test_open_transport_picks_the_implementation(sshd: SSHServer) -> None:
    with open_transport(local_node()) as local:
        assert isinstance(local, LocalTransport)
    with ssh_transport(sshd) as remote:
        assert isinstance(remote, SSHTransport)
        assert remote.target == f"root@127.0.0.1:{sshd.port}"


def test_unknown_host_key_is_refused_with_the_fix(sshd: SSHServer, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    with pytest.raises(HostKeyError) as caught:
        ssh_transport(sshd, known_hosts=known_hosts, connect_retries=3)
    message = str(caught.value)
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> {known_hosts}" in message
    assert "--accept-new-host-keys" in message and "SHA256:" in message
    assert not known_hosts.exists()
    assert not caught.value.temporary


def test_accept_new_records_the_key_then_it_is_known(sshd: SSHServer, tmp_path: Path) -> None:
    known_hosts = tmp_path / "new" / "known_hosts"
    with ssh_transport(sshd, known_hosts=known_hosts, accept_new_host_keys=True) as transport:
        assert transport.run("echo hi").stdout == b"hi\n"
    assert known_hosts.stat().st_mode & 0o777 == 0o600
    recorded = known_hosts.read_text()
    assert recorded.split() == sshd.known_hosts_line.split()[:3]  # [host]:port type key (no comment)
    with ssh_transport(sshd, known_hosts=known_hosts) as transport:
        assert transport.run("true").ok
    assert known_hosts.read_text() == recorded  # recorded once


def test_changed_host_key_is_refused_even_with_accept_new(sshd: SSHServer, tmp_path: Path) -> None:
    other = keygen(tmp_path / "other_host_key", "impostor")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {other}\n")
    for accept_new in (False, True):
        with pytest.raises(HostKeyError) as caught:
            ssh_transport(sshd, known_hosts=known_hosts, accept_new_host_keys=accept_new)
        message = str(caught.value)
        assert "HOST KEY CHANGED" in message
        assert f"ssh-keygen -R '[127.0.0.1]:{sshd.port}' -f {known_hosts}" in message
        assert "out of band" in message
    assert known_hosts.read_text() == f"[127.0.0.1]:{sshd.port} {other}\n"


def test_hashed_known_hosts_entries_are_understood(sshd: SSHServer, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd.known_hosts_line)
    subprocess.run(["ssh-keygen", "-H", "-f", str(known_hosts)], check=True, capture_output=True)
    assert known_hosts.read_text().startswith("|1|")
    with ssh_transport(sshd, known_hosts=known_hosts) as transport:
        assert transport.run("true").ok


def test_refused_client_key_is_an_authentication_error(sshd: SSHServer, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    keygen(stranger, "not-authorised")
    node = sshd.access_node(identity_file=str(stranger))
    started = time.monotonic()
    with pytest.raises(AuthenticationError) as caught:
        open_transport(node, SSHSettings(known_hosts=sshd.known_hosts, allow_agent=False, connect_retries=3))
    assert time.monotonic() - started < 2, "authentication failures are not retried"
    assert f"authentication as {sshd.user} failed" in str(caught.value)
    assert str(stranger) in str(caught.value)


def test_missing_identity_file_is_reported(sshd: SSHServer, tmp_path: Path) -> None:
    node = sshd.access_node(identity_file=str(tmp_path / "absent"))
    with pytest.raises(AuthenticationError, match=r"identity_file .*absent does not exist"):
        open_transport(node, SSHSettings(known_hosts=sshd.known_hosts))


def test_nothing_listening_is_unreachable_after_the_retries(caplog: pytest.LogCaptureFixture) -> None:
    node = AccessNode(name="down", owner="ops", connection=Connection("ssh", "127.0.0.1", free_port(), "root"))
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="reconciler.transport"):
        with pytest.raises(UnreachableError) as caught:
            open_transport(node, SSHSettings(connect_timeout=1, connect_retries=2, retry_backoff=0.1, allow_agent=False))
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 3  # backoff 0.1 + 0.2, then give up
    assert "connection refused" in str(caught.value) and "after 3 attempts" in str(caught.value)
    assert caught.value.temporary
    assert sum("attempt" in r.getMessage() for r in caplog.records) == 2


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections but never sends an SSH banner."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not done.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept)
    thread.start()
    yield listener.getsockname()[1]
    done.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


def test_no_banner_times_out_as_unreachable(silent_server: int) -> None:
    node = AccessNode(name="mute", owner="ops", connection=Connection("ssh", "127.0.0.1", silent_server, "root"))
    started = time.monotonic()
    with pytest.raises(UnreachableError, match=r"no SSH banner .* after 2 attempts"):
        open_transport(node, SSHSettings(connect_timeout=0.5, connect_retries=1, retry_backoff=0.05, allow_agent=False))
    assert time.monotonic() - started < 4


def test_a_pool_reuses_one_connection_per_access_node(sshd_factory: Factory) -> None:
    server = sshd_factory()
    with ConnectionPool() as pool:
        first = ssh_transport(server, pool=pool)
        first.run("true")
        first.close()  # pooled: the connection stays open
        second = ssh_transport(server, pool=pool)
        second.run("true")
        second.read_file(str(server.directory / "f"))
        assert pool.connects == 1 and len(pool) == 1
        assert server.connections() == 1
        sock = pool.client(first.ssh_target, first.settings).get_transport().sock  # type: ignore[attr-defined,union-attr]
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)  # type: ignore[union-attr]  # no Nagle stalls on small writes
    assert len(pool) == 0
    with ssh_transport(server) as own:
        own.run("true")
    assert server.connections() == 2


def test_a_dropped_connection_is_set_up_again_before_the_next_command(sshd: SSHServer) -> None:
    with ConnectionPool() as pool:
        transport = ssh_transport(sshd, pool=pool)
        transport.run("true")
        client = pool.client(transport.ssh_target, transport.settings)  # type: ignore[attr-defined]
        client.get_transport().close()  # type: ignore[union-attr]  # connected: it has a transport
        assert transport.run("echo again").stdout == b"again\n"
        assert pool.connects == 2


def test_ssh_config_supplies_hostname_port_user_and_key(sshd: SSHServer, isolated_home: Path, tmp_path: Path) -> None:
    ssh_dir = isolated_home / ".ssh"
    ssh_dir.mkdir()
    (ssh_dir / "config").write_text(
        f"Host lb-alias\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {sshd.user}\n"
        f"  IdentityFile {sshd.client_key}\n  IdentitiesOnly yes\n"
    )
    (ssh_dir / "known_hosts").write_text(sshd.known_hosts_line)
    node = AccessNode(name="lb-alias", owner="ops", connection=Connection("ssh", "lb-alias"))
    with open_transport(node) as transport:
        assert transport.target == f"{sshd.user}@127.0.0.1:{sshd.port}"
        assert transport.run("echo via-config").stdout == b"via-config\n"


def test_proxy_jump_is_refused_rather_than_bypassed(isolated_home: Path) -> None:
    (isolated_home / ".ssh").mkdir()
    (isolated_home / ".ssh" / "config").write_text("Host hidden\n  ProxyJump bastion\n")
    node = AccessNode(name="hidden", owner="ops", connection=Connection("ssh", "hidden", user="deploy"))
    with pytest.raises(TransportError, match="ProxyJump"):
        open_transport(node)


def test_no_key_material_in_errors_or_logs(sshd: SSHServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    stranger = tmp_path / "stranger"
    keygen(stranger, "not-authorised")
    secrets = _private_key_lines(sshd.client_key) + _private_key_lines(stranger) + _private_key_lines(sshd.host_key)
    messages: list[str] = []
    caplog.set_level(logging.DEBUG)
    logging.getLogger("paramiko").setLevel(logging.DEBUG)
    attempts: list[Callable[[], Transport]] = [
        lambda: ssh_transport(sshd),
        lambda: ssh_transport(sshd, known_hosts=tmp_path / "empty"),
        lambda: open_transport(sshd.access_node(identity_file=str(stranger)), SSHSettings(known_hosts=sshd.known_hosts)),
    ]
    for attempt in attempts:
        try:
            with attempt() as transport:
                transport.run(["cat", str(sshd.client_key)], check=True)
        except TransportError as e:
            messages.append(str(e))
    assert len(messages) == 2
    for secret in secrets:
        assert secret not in caplog.text
        assert all(secret not in m for m in messages)
    assert "Authentication" in caplog.text or "auth" in caplog.text.lower()  # paramiko's log was captured


def _private_key_lines(path: Path) -> list[str]:
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("-----")]
    assert lines and paramiko.Ed25519Key.from_private_key_file(str(path))
    return lines


def test_a_connection_dropped_mid_command_is_connection_lost_and_not_rerun(sshd: SSHServer, tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    with ConnectionPool() as pool:
        transport = ssh_transport(sshd, pool=pool)
        # $PPID is the sshd process serving this connection: killing it drops the connection
        with pytest.raises(ConnectionLost, match="may or may not have run"):
            transport.run(f"echo run >> {counter}; kill -9 $PPID; sleep 2", timeout=10)
        assert counter.read_text() == "run\n"  # ran once, never retried
        assert transport.run("echo back").stdout == b"back\n"  # the next command reconnects
        assert pool.connects == 2


def test_an_encrypted_key_asks_for_the_agent(sshd: SSHServer, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "correct horse", "-f", str(locked)], check=True, capture_output=True
    )
    node = sshd.access_node(identity_file=str(locked))
    with pytest.raises(AuthenticationError) as caught:
        open_transport(node, SSHSettings(known_hosts=sshd.known_hosts, allow_agent=False))
    assert "correct horse" not in str(caught.value)
    assert "the private key is encrypted: load it into ssh-agent" in str(caught.value)


def test_no_key_at_all_says_where_to_put_one(sshd: SSHServer) -> None:
    with pytest.raises(AuthenticationError, match=r"no key to offer as .*set identity_file"):
        open_transport(sshd.access_node(identity_file=None), SSHSettings(known_hosts=sshd.known_hosts, allow_agent=False))


@pytest.fixture
def ssh_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A real ssh-agent on a socket in tmp_path, as SSH_AUTH_SOCK; stopped by PID."""
    socket_path = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(socket_path)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while not socket_path.exists():
            if agent.poll() is not None or time.monotonic() > deadline:
                pytest.fail("ssh-agent did not start (install openssh-client)", pytrace=False)
            time.sleep(0.01)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(socket_path))
        yield socket_path
    finally:
        agent.terminate()
        agent.wait(timeout=5)


def test_keys_from_ssh_agent_are_used(sshd: SSHServer, ssh_agent: Path) -> None:
    subprocess.run(["ssh-add", "-q", str(sshd.client_key)], check=True, capture_output=True)
    node = sshd.access_node(identity_file=None)
    with open_transport(node, SSHSettings(known_hosts=sshd.known_hosts)) as transport:
        assert transport.run("echo agent").stdout == b"agent\n"


@pytest.mark.skipif(not hasattr(socket, "TCP_QUICKACK"), reason="TCP_QUICKACK is Linux's")
def test_the_ssh_socket_acknowledges_at_once_after_every_read() -> None:
    """sshd's Nagle (on until its first session) would otherwise wait for our delayed ACK: 40 ms."""
    from reconciler.transport.connect import SSHTarget, _open_socket

    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        sock = _open_socket(SSHTarget("127.0.0.1", port, "u", (), False, Path("kh")), 5.0)
        peer, _ = server.accept()
        with sock, peer:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert sock.gettimeout() == 5.0
            for _ in range(3):
                peer.sendall(b"x")
                assert sock.recv(1) == b"x"
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK) == 1


def test_prefetch_connects_in_the_background_and_open_transport_takes_that_connection(sshd_factory: Factory) -> None:
    from reconciler.transport import prefetch

    sshd = sshd_factory()
    with ConnectionPool() as pool:
        prefetch([sshd.access_node(), local_node()], pool, SSHSettings(known_hosts=sshd.known_hosts))
        transport = ssh_transport(sshd, pool=pool)
        assert transport.run("echo ok").stdout == b"ok\n"
        assert pool.connects == 1 and sshd.connections() == 1


def test_a_prefetch_that_failed_is_reported_by_open_transport_without_trying_again() -> None:
    from reconciler.transport import prefetch

    node = AccessNode(name="down", owner="ops", connection=Connection("ssh", "127.0.0.1", free_port(), "root"))
    with ConnectionPool() as pool:
        prefetch([node], pool, SSHSettings(known_hosts=Path("/nonexistent/known_hosts"), connect_timeout=1))
        with pytest.raises(UnreachableError, match="after 3 attempts"):
            open_transport(node, SSHSettings(known_hosts=Path("/nonexistent/known_hosts"), allow_agent=False), pool=pool)
        assert pool.connects == 0
        # a later request is connection setup again (the failure was reported once)
        with pytest.raises(UnreachableError):
            open_transport(node, SSHSettings(connect_retries=0, allow_agent=False), pool=pool)
