"""Verify's pace on a real access node (sshd + nginx): while nginx does not serve the new revision
yet (a master parsing a large configuration takes seconds), verify probes and reads the error
log less and less often, so that the node's CPU goes to nginx; counted by verify's own
``polls <probes> <reads of the log>`` line."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.deploy.probe import probe_function
from reconciler.deploy.scripts import (
    LOG_READ_MAX_MS,
    LOG_READ_MS,
    POLLS,
    VERIFY_POLL_MAX_MS,
    VERIFY_POLL_MS,
    verify_outcome,
    verify_script,
)
from reconciler.transport import SSHSettings, open_transport
from tests.services.fleet import Fleet
from tests.services.fleet_fixtures import fleet_under_test

NOT_SERVED = "ffffffffffffffff"


@pytest.fixture
def one_node(tmp_path: Path) -> Iterator[Fleet]:
    yield from fleet_under_test(tmp_path, 1)


def paced(until_ms: int) -> tuple[int, int]:
    """(probes, log reads) verify makes before it has paused ``until_ms`` in all: its own rule."""
    probes = reads = t = last = 0
    while t < until_ms:
        probes += 1
        if t - last >= min(max(t // 5, LOG_READ_MS), LOG_READ_MAX_MS):
            last, reads = t, reads + 1
        t += min(max(t // 10, VERIFY_POLL_MS), VERIFY_POLL_MAX_MS)
    return probes, reads


def counts(text: str) -> tuple[int, int]:
    line = next(line for line in text.splitlines() if line.startswith(POLLS))
    probes, reads = line[len(POLLS) :].split()
    return int(probes), int(reads)


def test_verify_waiting_for_a_revision_probes_and_reads_the_log_less_and_less_often(
    one_node: Fleet, tmp_path: Path
) -> None:
    node = one_node.nodes[0]
    manifests = one_node.write_manifests(tmp_path / "m", {"web": ["127.0.0.1:9"]})
    applied = one_node.cli("apply", manifests)
    assert applied.returncode == 0, applied.stderr
    served = node.served_revision()
    assert len(served) == 16 and served != NOT_SERVED
    timeout = 4.0
    size = node.error_log.stat().st_size
    probe = probe_function(f"{node.address}:{node.http_port}", "curl")
    script = f"size={size}\n" + verify_script(NOT_SERVED, probe, str(node.error_log), "$size", timeout)
    settings = SSHSettings(known_hosts=node.sshd.known_hosts, allow_agent=False)
    with open_transport(node.sshd.access_node(), settings) as transport:
        result = transport.run(script, timeout=60)
    problem = verify_outcome(result, NOT_SERVED, True, timeout)
    assert problem == f"nginx still serves revision {served} 4s after the reload, not {NOT_SERVED}"
    probes, reads = counts(result.text)
    # it stops once its pauses add up to the timeout (or the clock says so first)
    most = paced(math.ceil(timeout * 1000))
    assert probes <= most[0] and reads <= most[1], (probes, reads, most)
    # a fixed 20 ms pace (the one before) probes 50 times a second and reads the log 10 times
    assert probes < timeout * 50 / 3 and reads >= paced(1000)[1]
