"""The SSH floor: what one round trip to every access node costs, before obreconcile does anything.

Starts N sshd servers on 127.0.0.1 (tests/services/sshd.py), then measures, in parallel across
the N nodes, the wall time of:

- ``openssh``: ``ssh -o BatchMode=yes … host true``, a fresh OpenSSH connection per node
  (what Ansible without ControlPersist, or a shell loop, pays);
- ``openssh-x25519``: the same with ``KexAlgorithms=curve25519-sha256``, the key exchange
  paramiko negotiates (OpenSSH 9's default sntrup761x25519 costs ~150 ms of CPU here);
- ``transport-fresh``: open_transport + run("true") + close, a fresh paramiko connection each;
- ``transport-reused``: run("true") on connections already open in a ConnectionPool
  (what every step after the first costs within one apply);
- ``batch-reused``: one run_batch of 8 facts per node on the reused connections.

Each figure is the median over ``--repeat`` rounds. The apply benchmark compares a no-op
apply against the ``openssh`` floor (target: within 1.5x). The servers give each session
HOME=<server dir>/home, so the login shell's rc files (root's .bashrc with pyenv costs ~120 ms
a command on the CI machine) do not drown the SSH costs; every row runs the same shell.

    .venv/bin/python -m bench.ssh_floor [--nodes 5 20] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from reconciler.transport import ConnectionPool, SSHSettings, Transport, open_transport
from tests.services.sshd import SSHServer, start_sshd

FACTS = {f"fact{i}": f"echo {i}; uname -r" for i in range(8)}


def openssh(
    server: SSHServer, remote: str = "true", options: Sequence[str] = (), known_hosts: Path | None = None
) -> None:
    """One fresh OpenSSH connection to ``server`` running ``remote`` (strict host keys, key only)."""
    command = [
        "ssh",
        *options,
        "-F",
        "/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts or server.known_hosts}",
        "-o",
        "IdentitiesOnly=yes",
        "-i",
        str(server.client_key),
        "-p",
        str(server.port),
        f"{server.user}@{server.host}",
        remote,
    ]
    subprocess.run(command, check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=120)


def transport_fresh(server: SSHServer) -> None:
    with open_transport(
        server.access_node(), SSHSettings(known_hosts=server.known_hosts, allow_agent=False)
    ) as transport:
        transport.run("true", check=True)


def parallel(servers: list[SSHServer], work: Callable[[SSHServer], object]) -> float:
    """Wall time of ``work`` on every server at once (one thread per server, like --forks N)."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(servers)) as pool:
        for future in [pool.submit(work, s) for s in servers]:
            future.result()
    return time.perf_counter() - started


def measure(servers: list[SSHServer], repeat: int) -> dict[str, float]:
    rounds: dict[str, list[float]] = {}
    with ConnectionPool() as connections:
        opened: dict[int, Transport] = {
            s.port: open_transport(
                s.access_node(), SSHSettings(known_hosts=s.known_hosts, allow_agent=False), pool=connections
            )
            for s in servers
        }
        cases: dict[str, Callable[[SSHServer], object]] = {
            "openssh": openssh,
            "openssh-x25519": lambda s: openssh(s, options=("-o", "KexAlgorithms=curve25519-sha256")),
            "transport-fresh": transport_fresh,
            "transport-reused": lambda s: opened[s.port].run("true", check=True),
            "batch-reused": lambda s: opened[s.port].run_batch(FACTS),
        }
        for name, work in cases.items():
            parallel(servers, work)  # warm-up: page cache, sshd's first fork
            rounds[name] = [parallel(servers, work) for _ in range(repeat)]
        assert connections.connects == len(servers), "the reused rows must not reconnect"
    return {name: statistics.median(times) for name, times in rounds.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, nargs="+", default=[5, 20], help="access nodes (sshd servers)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds per figure (median)")
    args = parser.parse_args(argv)
    servers: list[SSHServer] = []
    with tempfile.TemporaryDirectory(prefix="obr-ssh-floor-") as tmp:
        try:
            for i in range(max(args.nodes)):
                servers.append(start_sshd(Path(tmp) / f"sshd{i}"))
            print(f"{'nodes':>5}  {'case':<17} {'median wall':>11}  {'vs openssh':>10}  {'vs x25519':>9}")
            for n in args.nodes:
                figures = measure(servers[:n], args.repeat)
                for name, seconds in figures.items():
                    ratio, strict = seconds / figures["openssh"], seconds / figures["openssh-x25519"]
                    print(f"{n:>5}  {name:<17} {seconds * 1000:>9.0f}ms  {ratio:>9.2f}x  {strict:>8.2f}x")
        finally:
            for server in servers:
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
