"""Apply benchmark (issues 4, 18): obreconcile against its peers and against the floor, interleaved.

    make setup      # the lock holds the bench extra too: ansible-core, pyinfra, py-spy
    .venv/bin/python -m bench.apply [--nodes 5 20] [--upstreams 100] [--rounds 3] [--quick]
        [--peers ansible ansible-1f pyinfra] [--ansible-timeout SECONDS] [--ansible-rounds K]
        [--without-ansible] [--profile]

Per fleet size it starts a fleet of real access nodes (tests/services/fleet.py: each its own
sshd and nginx on 127.0.0.(11+i)), and beside each node's nginx one more nginx per peer that
only that peer manages (same sshd, same address, its own port and prefix), so that no tool ever
sees another's files as drift and each nginx -t parses one copy of the workload. The workload
is U http upstreams x 10 backends (127.0.0.1:PORT, nothing listening), every upstream on every
access node. The peers (``--peers``, default all):

- ``ansible``: ansible-playbook, bench/ansible/playbook.yml, a ``template`` task per upstream
  file, then ``nginx -t`` and a reload handler;
- ``ansible-1f``: ansible-playbook, bench/ansible/playbook-one.yml, every upstream in one file
  (templates/all.conf.j2), its ``validate`` a whole-configuration ``nginx -t`` with the
  candidate in place of the live file before the switch, and a reload handler;
- ``pyinfra``: ``pyinfra INVENTORY bench/pyinfra/deploy.py -y --parallel N``, ``files.template``
  of the same one file (same bytes), then ``server.shell`` of ``nginx -t`` and a reload only
  when the file changed; paramiko with the fleet's key and known_hosts, strict host keys.

The one-file peers render about the bytes per node obreconcile does (checked at the first
deploy: within SIZE_MATCH). After one unmeasured first deploy by each tool, every round runs
each tool's three runs, the tools' order rotating from round to round (the machine drifts):

- changing: the first backend's weight of every upstream flipped (1 <-> 2), so every
  upstream's configuration changes; obreconcile is ``python -m reconciler --store
  sqlite:///... --output json apply DIR --known-hosts FILE --forks N``;
- no-op: the same inputs again: no file may be rewritten, no node reloaded;
- one upstream (``TOOL-one``): one upstream's first weight set to 3 (neither variant's, so the
  next changing run again changes every upstream). obreconcile must plan and upload two
  files per node (that upstream's and ``http/_default.conf``, which holds the revision);
- after each run the bench checks: exit status; reloads per node (from each nginx's error
  log: one for a changing run, none for a no-op); obreconcile's JSON statuses; Ansible's
  recap (changed tasks); the one-file peers' file byte for byte against the bench's own
  rendering, and rewritten (inode, mtime) exactly when the run changes something;
- the floor, N nodes in parallel: OpenSSH ``ssh host true`` with OpenSSH's default key
  exchange (sntrup761x25519; the floor the targets use) and with
  ``KexAlgorithms=curve25519-sha256`` (what paramiko negotiates; information), and ``ssh host
  'nginx -t && nginx -s reload'`` on obreconcile's nginx, both key exchanges;
- ``obreconcile validate MANIFESTS`` (a whole process: start-up, load, schemas, model): the
  no-op target is within 1.5x of that plus the ssh floor of the same round.

Figures: wall time until the tool returned, and until the change is *served*: a run that
reloads nginx (every tool's changing and one-upstream runs, the nginx floor) is served when
every node's nginx master has started workers it did not have before. ``nginx -s reload``
returns once it has signalled the master, which then parses the whole configuration again
(seconds at 10,000 upstreams) while the tool (pyinfra, Ansible, the floor's ssh) has already
returned; obreconcile's verify waits until nginx answers the new revision, so for it the two
are about the same. The targets compare served times; the nodes' CPU is read once the run is
served (a parse left running would count in the next run). The controller's CPU
(RUSAGE_CHILDREN deltas around each run: the CLI, pyinfra, or ansible-playbook with its forks
and ssh clients; for Ansible also its ControlPersist masters, read from /proc); the nodes' CPU (sshd and every nginx, with their
reaped children, from /proc: on 2 cores they compete with the controller). Targets are
judged on the median of the per-round ratios; issue 18's peer targets are set at 1,000
upstreams and print as information below that.

The per-file play is slow here (~0.3 s of node CPU per module run, two module runs per file:
100 upstreams x 5 nodes took 275 s changing, 297 s no-op), so ``--ansible-timeout`` stops
one of its runs (its process group, by PID) and reports it as ``>T``: a lower bound, and so is
its ratio; a ratio target met by a lower bound is a PASS, one not met is ``n/a``. After a
stopped run the bench writes that nginx's files itself, as the finished run would have (the
same templates with the template module's Jinja2 settings; checked byte for byte against what
Ansible wrote in its first run), so the next no-op is a true no-op. ``--ansible-rounds K``
runs the per-file play in the first K rounds only.

Every tool runs with cached bytecode (PYTHONPYCACHEPREFIX in the temp dir): the CI environment
sets PYTHONDONTWRITEBYTECODE, which would make every CLI start compile reconciler/ from source,
which no installed deployment does; obreconcile's manifest cache (XDG_CACHE_HOME) is in the
temp dir as well: the first deploy writes it, later runs read the files they did not change,
as a user's runs would. ``--profile`` then runs one changing and one no-op apply
under ``py-spy record --idle`` and prints the wall time by step (main thread, and per access
node). The bench is not part of the test suite.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import jinja2

from bench.ansible import generate as ansible_inputs
from bench.ansible.generate import (
    BACKENDS_PER_UPSTREAM,
    CONFIG,
    PLAYBOOK,
    PLAYBOOK_ONE,
    TEMPLATES,
    PeerHost,
    one_changed,
    upstream_workload,
    write_upstream_vars,
)
from bench.pyinfra import generate as pyinfra_inputs
from bench.ssh_floor import openssh
from tests.services.fleet import NGINX, ROOT, Fleet, SimulatedNode, start_fleet
from tests.services.sshd import free_port, free_ports

ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
PYINFRA = Path(sys.executable).with_name("pyinfra")
PY_SPY = Path(sys.executable).with_name("py-spy")
SPY_RATE = 200
X25519 = ("-o", "KexAlgorithms=curve25519-sha256")
FIRST_DEPLOY_TIMEOUT = 30.0  # Ansible's unmeasured first run: long enough to write the files checked
TOOL_TIMEOUT = 1800.0  # any other run
VERIFY_TIMEOUT = 300  # obreconcile apply's --verify-timeout (an upper bound: verify ends when nginx serves)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)
ONE_FILE = "all.conf"  # the one-file peers' file in their nginx's include directory
SIZE_MATCH = (0.9, 1.1)  # a one-file peer's bytes per node / obreconcile's (its default server is larger)


class Tool(StrEnum):
    """obreconcile and its peers; each peer has its own nginx on every node."""

    OBRECONCILE = "obr"
    ANSIBLE = "ansible"  # ansible-playbook, a template task per upstream file (playbook.yml)
    ANSIBLE_ONE_FILE = "ansible-1f"  # ansible-playbook, every upstream in one file (playbook-one.yml)
    PYINFRA = "pyinfra"  # pyinfra, files.template of every upstream into one file, server.shell


class Run(StrEnum):
    """What one run of a tool changes against its previous run."""

    CHANGE = "change"  # every upstream's first backend weight (1 <-> 2)
    NOOP = "noop"  # nothing
    ONE = "one"  # one upstream's first backend weight (to 3)


PEERS = (Tool.ANSIBLE, Tool.ANSIBLE_ONE_FILE, Tool.PYINFRA)
ONE_FILE_PEERS = (Tool.ANSIBLE_ONE_FILE, Tool.PYINFRA)
TITLES = {
    Tool.OBRECONCILE: "obreconcile apply",
    Tool.ANSIBLE: "ansible-playbook per file",
    Tool.ANSIBLE_ONE_FILE: "ansible-playbook one file",
    Tool.PYINFRA: "pyinfra one file",
}
RUN_TITLES = {Run.CHANGE: "changing", Run.NOOP: "no-op", Run.ONE: "one upstream"}
CASES = {f"{tool}-{run}": f"{TITLES[tool]}, {RUN_TITLES[run]}" for tool in Tool for run in Run} | {
    "ssh": "floor: ssh true (default kex)",
    "ssh-x25519": "floor: ssh true (curve25519)",
    "nginx": "floor: ssh nginx -t+reload (default kex)",
    "nginx-x25519": "floor: ssh nginx -t+reload (curve25519)",
    "validate": "obreconcile validate (load + validate)",
    "ssh+validate": "floor: ssh true + validate",
}


@dataclass
class State:
    """What a tool last deployed: a variant of the workload, with the one-upstream change or not."""

    variant: int = 0
    one: bool = False

    @property
    def key(self) -> tuple[int, bool]:
        return self.variant, self.one

    def advance(self, run: Run) -> bool:
        """Move to what ``run`` deploys; True when that changes every node's configuration."""
        if run is Run.CHANGE:
            self.variant, self.one = self.variant ^ 1, False
        elif run is Run.ONE:
            if self.one:
                raise RuntimeError("the one-upstream run follows a changing or no-op run")
            self.one = True
        return run is not Run.NOOP


@dataclass(frozen=True)
class Sample:
    wall: float
    cpu: float  # the controller: this process's reaped children (+ Ansible's ssh masters)
    nodes_cpu: float  # sshd and nginx of the nodes, with their reaped children
    censored: bool = False  # stopped at --ansible-timeout: the true figures are larger
    live: float | None = None  # a reloading run: until every node's nginx serves it (else: wall)

    @property
    def served(self) -> float:
        """Wall time until the change is served: the run's own, or longer when the tool returned
        while nginx's master was still parsing the reload it signalled."""
        return self.wall if self.live is None else self.live


@dataclass
class Results:
    samples: dict[str, list[Sample]] = field(default_factory=dict)

    def add(self, case: str, sample: Sample) -> None:
        self.samples.setdefault(case, []).append(sample)

    def median(self, case: str, what: str = "wall") -> float:
        return float(statistics.median(getattr(s, what) for s in self.samples[case]))

    def censored(self, case: str) -> bool:
        return any(s.censored for s in self.samples[case])

    def ratios(self, numerator: str, denominator: str, what: str = "wall") -> list[float]:
        """Per round (rounds without Ansible have no Ansible samples: only the first rounds pair up)."""
        pairs = zip(self.samples[numerator], self.samples[denominator], strict=False)
        return [getattr(n, what) / max(getattr(d, what), 1e-9) for n, d in pairs]


def settled_reloads(nodes: Sequence[SimulatedNode], quiet: float = 2.0, limit: float = 30.0) -> list[int]:
    """Each node's reload count once it has not moved for ``quiet`` seconds: ``nginx -s reload``
    (the floor's) returns before nginx's master logs the signal, and a master still parsing the
    previous reload (1,000 upstreams: seconds on a loaded machine) logs the next one only after."""
    counts = [n.reloads() for n in nodes]
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = [n.reloads() for n in nodes]
        if now == counts:
            break
        counts = now
    return counts


def reloads_since(
    nodes: Sequence[SimulatedNode], before: Sequence[int], expected: int, limit: float = 30.0
) -> list[int]:
    """Each node's reloads since ``before`` (settled_reloads' counts): waits up to ``limit`` for
    ``expected`` to be logged (a busy master logs a reload late), then 0.1 s for one more."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if all(n.reloads() - b >= expected for n, b in zip(nodes, before, strict=True)):
            break
        time.sleep(0.05)
    time.sleep(0.1)
    return [n.reloads() - b for n, b in zip(nodes, before, strict=True)]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_cpu(pid: int, children: bool = True) -> float:
    """CPU seconds of ``pid`` (and of its children it has reaped) from /proc; 0 once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if children else 0)
    return ticks / CLOCK_TICKS


def nginx_workers(node: SimulatedNode) -> set[int]:
    """The PIDs of the node's nginx master's children (its workers)."""
    assert node.process is not None
    return set(children(node.process.pid))


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def first_answer(node: SimulatedNode, host: str, limit: float = 120.0) -> int | str:
    """The status of the first answer of ``node``'s nginx for ``host`` (or why none came): a
    reload returns before nginx has parsed the configuration (10,000 upstreams on a loaded
    machine: many seconds), and a peer's run may end with that reload."""
    deadline = time.monotonic() + limit
    while True:
        try:
            return node.get(host)[0]
        except OSError as e:
            if time.monotonic() > deadline:
                return f"no answer in {limit:g} s ({e})"
            time.sleep(0.5)


def nginx_floor_command(node: SimulatedNode) -> str:
    """The node's own ``nginx -t`` and reload of the configuration it runs (what a push ends with)."""
    return f"{node.nginx_command('-t')} && {node.nginx_command('-s', 'reload')}"


class Bench:
    """One fleet, every tool, the floor; ``round()`` measures every case once."""

    def __init__(
        self,
        directory: Path,
        fleet: Fleet,
        twins: dict[Tool, list[SimulatedNode]],
        upstreams: int,
        ansible_timeout: float = 3600.0,
    ) -> None:
        self.directory, self.fleet, self.twins = directory, fleet, twins
        self.ansible_timeout = ansible_timeout
        # Every tool runs as an installed Python program would: with cached bytecode (the CI
        # environment sets PYTHONDONTWRITEBYTECODE, which makes every CLI start compile
        # reconciler/ from source); the cache lives in the temp dir, not in the checkout.
        self.tool_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        self.tool_env["PYTHONPYCACHEPREFIX"] = str(directory / "pycache")
        # obreconcile's manifest cache (the user's cache directory) in the temp dir too: used
        # from run to run as a user's would be, and gone with the bench's manifests.
        self.tool_env["XDG_CACHE_HOME"] = str(directory / "cache")
        # The Ansible template module's Jinja2 settings (pyinfra's deploy uses the same): to
        # check what the peers wrote, and to write the per-file play's files after a stopped run.
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            trim_blocks=True,
            keep_trailing_newline=True,
            undefined=jinja2.StrictUndefined,
        )
        self.results = Results()
        self.count, self.upstreams = len(fleet.nodes), upstreams
        ports = free_ports(BACKENDS_PER_UPSTREAM)
        self.workloads: dict[tuple[int, bool], list[dict[str, Any]]] = {}
        for variant in (0, 1):
            self.workloads[variant, False] = upstream_workload(upstreams, ports, variant)
            self.workloads[variant, True] = one_changed(self.workloads[variant, False])
        self.manifests = {key: self._manifests(key) for key in self.workloads}
        self.state = {tool: State() for tool in (Tool.OBRECONCILE, *twins)}
        for twin in twins.get(Tool.ANSIBLE_ONE_FILE, []):
            self._write_validation_conf(twin)
        peers = directory / "peers"
        self.inventories = {
            tool: (ansible_inputs if tool is not Tool.PYINFRA else pyinfra_inputs).write_inventory(
                peers / tool / f"inventory.{'py' if tool is Tool.PYINFRA else 'yml'}",
                [self._host(n, tool) for n in nodes],
            )
            for tool, nodes in twins.items()
        }
        self.ansible_vars = {
            key: write_upstream_vars(peers / f"upstreams-{key[0]}{'-one' if key[1] else ''}.yml", w)
            for key, w in self.workloads.items()
        }
        self.pyinfra_data = {
            key: pyinfra_inputs.write_upstreams(peers / f"upstreams-{key[0]}{'-one' if key[1] else ''}.json", w)
            for key, w in self.workloads.items()
        }
        self.node_pids = [p.pid for n in fleet.nodes for p in (n.sshd.process, n.process) if p is not None] + [
            n.process.pid for nodes in twins.values() for n in nodes if n.process is not None
        ]

    def _manifests(self, key: tuple[int, bool]) -> Path:
        bodies = {
            u["name"]: {
                "listen": {"server_names": u["server_names"]},
                "nodes": [{"hostname": s["hostname"], "weight": s["weight"]} for s in u["servers"]],
            }
            for u in self.workloads[key]
        }
        name = f"manifests-{key[0]}{'-one' if key[1] else ''}"
        return self.fleet.write_manifests(self.directory / name, bodies)

    @staticmethod
    def _candidate(twin: SimulatedNode) -> tuple[Path, Path]:
        """(the candidate file, the nginx.conf that includes it instead of the live directory)."""
        return twin.prefix / "candidate" / ONE_FILE, twin.prefix / "validate.conf"

    def _write_validation_conf(self, twin: SimulatedNode) -> None:
        """The one-file play's whole-configuration test: the node's nginx.conf with the
        candidate file in place of the live include directory."""
        candidate, conf = self._candidate(twin)
        live = f"include {twin.config_dir}/http/*.conf;"
        text = twin.conf.read_text()
        if live not in text:
            raise RuntimeError(f"{twin.conf} does not include {twin.config_dir}/http/*.conf")
        candidate.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(text.replace(live, f"include {candidate};"))

    def _host(self, node: SimulatedNode, tool: Tool) -> PeerHost:
        candidate, conf = self._candidate(node)
        one_file_ansible = tool is Tool.ANSIBLE_ONE_FILE
        return PeerHost(
            name=f"node{node.index}",
            ssh_host=node.sshd.host,
            ssh_port=node.sshd.port,
            ssh_user=node.sshd.user,
            private_key=node.sshd.client_key,
            known_hosts=self.fleet.known_hosts,
            config_dir=node.config_dir,
            listen_address=node.address,
            http_port=node.http_port,
            test_command=node.nginx_command("-t"),
            reload_command=node.nginx_command("-s", "reload"),
            candidate_file=str(candidate) if one_file_ansible else "",
            validate_command=f"{NGINX} -p {node.prefix} -c {conf} -e {node.error_log} -t" if one_file_ansible else "",
        )

    # -- measuring --------------------------------------------------------------------------

    def measure(
        self,
        case: str,
        work: Callable[[], float],
        censored: Callable[[], bool] = lambda: False,
        reloading: Sequence[SimulatedNode] = (),
    ) -> Sample:
        """Run ``work`` (returning extra controller CPU it found outside RUSAGE_CHILDREN).

        ``reloading``: the nginx instances the run reloads. ``nginx -s reload`` returns once it
        has signalled the master, which then parses the whole configuration again (seconds at
        10,000 upstreams) before it starts new workers: the run is served when every master
        has started workers it did not have before, and the nodes' CPU is read after that (a
        tool that returns early would leave that parse to the next run's figures). obreconcile's
        verify waits for it already."""
        workers = [nginx_workers(n) for n in reloading]
        nodes_before = sum(process_cpu(p) for p in self.node_pids)
        cpu_before = children_cpu()
        started = time.perf_counter()
        extra = work()
        wall = time.perf_counter() - started
        cpu = children_cpu() - cpu_before + extra
        live = None
        if reloading:
            for node, before in zip(reloading, workers, strict=True):
                while not nginx_workers(node) - before:
                    if time.perf_counter() - started > TOOL_TIMEOUT:
                        raise RuntimeError(f"{case}: {node.name}'s nginx started no new worker")
                    time.sleep(0.005)
            live = time.perf_counter() - started
        time.sleep(0.3)  # let sshd reap the sessions that just closed
        sample = Sample(wall, cpu, sum(process_cpu(p) for p in self.node_pids) - nodes_before, censored(), live)
        self.results.add(case, sample)
        return sample

    def run(self, tool: Tool, run: Run, record: bool = True) -> None:
        """One run of ``tool``, recorded as case ``TOOL-RUN`` unless ``record`` is False."""
        case = f"{tool}-{run}" if record else None
        if tool is Tool.OBRECONCILE:
            self.obreconcile(run, case)
        elif tool is Tool.PYINFRA:
            self.pyinfra(run, case)
        else:
            self.ansible(tool, run, case)

    def command(
        self,
        tool: Tool,
        argv: list[str],
        cwd: Path,
        record: str | None,
        reloading: Sequence[SimulatedNode] = (),
    ) -> subprocess.CompletedProcess[str]:
        """Run one tool's command (measured as case ``record`` unless None, ``reloading`` as for
        ``measure``); it must exit 0."""
        done: list[subprocess.CompletedProcess[str]] = []

        def work() -> float:
            done.append(
                subprocess.run(
                    argv, capture_output=True, text=True, cwd=cwd, env=self.tool_env, timeout=TOOL_TIMEOUT, check=False
                )
            )
            return 0.0

        if record is None:
            work()
        else:
            self.measure(record, work, reloading=reloading)
        if done[0].returncode != 0:
            raise RuntimeError(f"{TITLES[tool]} failed ({done[0].returncode}):\n{done[0].stdout}\n{done[0].stderr}")
        return done[0]

    def check_reloads(self, tool: Tool, nodes: Sequence[SimulatedNode], before: Sequence[int], change: bool) -> None:
        reloaded = reloads_since(nodes, before, 1 if change else 0)
        if reloaded != [1 if change else 0] * len(nodes):
            raise RuntimeError(f"{TITLES[tool]}: reloads per node {reloaded}, expected {1 if change else 0} each")

    # -- obreconcile --------------------------------------------------------------------------

    def obreconcile(self, run: Run, record: str | None = None, profile: Path | None = None) -> None:
        """One apply: every upstream's file changed, one upstream's (two files per node must
        travel: that upstream's and http/_default.conf, which holds the revision), or none."""
        change = self.state[Tool.OBRECONCILE].advance(run)
        manifests = self.manifests[self.state[Tool.OBRECONCILE].key]
        # verify waits only until nginx serves the revision; at 10,000 upstreams five nodes' first
        # load on 2 cores takes longer than apply's default 10 s
        options = ["--known-hosts", str(self.fleet.known_hosts), "--forks", str(self.count)]
        options += ["--verify-timeout", str(VERIFY_TIMEOUT)]
        argv = self.fleet.cli_args("--output", "json", "apply", manifests, *options)
        if profile is not None:  # py-spy samples every thread, waiting included (cProfile: the main one only)
            argv = [str(PY_SPY), "record", "--idle", "--rate", str(SPY_RATE), "--format", "raw", "-o", str(profile)]
            argv += ["--", *self.fleet.cli_args("--output", "text", "apply", manifests), *options]
        reloads = settled_reloads(self.fleet.nodes)
        result = self.command(Tool.OBRECONCILE, argv, ROOT, record, self.fleet.nodes if change else ())
        want = "converged" if change else "unchanged"
        if profile is None:
            nodes = json.loads(result.stdout)["access_nodes"]
            statuses = {n["access_node"]: n["status"] for n in nodes}
            if set(statuses.values()) != {want} or len(statuses) != self.count:
                raise RuntimeError(f"obreconcile apply: expected every node {want}, got {statuses}")
            if run is Run.ONE and {(len(n["plan"]["files"]), n["uploaded"]) for n in nodes} != {(2, 2)}:
                raise RuntimeError(
                    f"one upstream changed: (files planned, uploaded) {[(len(n['plan']['files']), n['uploaded']) for n in nodes]}"
                )
            # work proportional to the change: the files rendered (the default file always)
            rendered = {Run.CHANGE: self.upstreams + 1, Run.NOOP: 1, Run.ONE: 2}[run]
            if {n["rendered"] for n in nodes} != {rendered}:
                raise RuntimeError(f"{run}: files rendered per node {[n['rendered'] for n in nodes]}, not {rendered}")
        self.check_reloads(Tool.OBRECONCILE, self.fleet.nodes, reloads, change)

    # -- the peers ----------------------------------------------------------------------------

    def ansible(self, tool: Tool, run: Run, record: str | None = None, timeout: float | None = None) -> bool:
        """One ansible-playbook run of the per-file or the one-file play; False when the
        per-file play was stopped after ``timeout`` (censored).

        A stopped per-file run leaves that nginx's files half old, half new: they are then
        written as the finished run would have (``restore_ansible_files``), unmeasured.
        """
        per_file = tool is Tool.ANSIBLE
        timeout = (self.ansible_timeout if per_file else TOOL_TIMEOUT) if timeout is None else timeout
        change = self.state[tool].advance(run)
        nodes = self.twins[tool]
        control = Path(tempfile.mkdtemp(prefix="cp-", dir=self.directory))
        env = {
            **self.tool_env,
            "ANSIBLE_CONFIG": str(CONFIG),
            "ANSIBLE_HOME": str(self.directory / "ansible-home"),
            "ANSIBLE_LOCAL_TEMP": str(self.directory / "ansible-home" / "tmp"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control),
            "ANSIBLE_NOCOLOR": "1",
        }
        argv = [
            str(ANSIBLE_PLAYBOOK),
            "-i",
            str(self.inventories[tool]),
            "-e",
            f"@{self.ansible_vars[self.state[tool].key]}",
            "-f",
            str(self.count),
            str(PLAYBOOK if per_file else PLAYBOOK_ONE),
        ]
        reloads = settled_reloads(nodes)
        files = [] if per_file else self.one_file_stats(nodes)
        done: list[tuple[int | None, str, str]] = []

        def work() -> float:
            done.append(run_with_deadline(argv, env, timeout))
            return stop_control_masters(control)

        if record is None:
            work()
        else:
            self.measure(record, work, censored=lambda: done[0][0] is None, reloading=nodes if change else ())
        shutil.rmtree(control, ignore_errors=True)
        returncode, stdout, stderr = done[0]
        if returncode is None and per_file:
            self.restore_ansible_files()
            return False
        recap = {m[0]: [int(x) for x in m[1:]] for m in RECAP.findall(stdout)}
        if returncode != 0 or len(recap) != self.count:
            raise RuntimeError(f"{TITLES[tool]} failed ({returncode}):\n{stdout}\n{stderr}")
        changed = {host: counts[1] for host, counts in recap.items()}
        if any((c > 0) != change for c in changed.values()):
            raise RuntimeError(f"{TITLES[tool]}: changed tasks per host {changed}, expected a change: {change}")
        self.check_reloads(tool, nodes, reloads, change)
        if not per_file:
            self.check_one_file(tool, files, change)
        return True

    def pyinfra(self, run: Run, record: str | None = None) -> None:
        """One pyinfra deploy (bench/pyinfra/deploy.py), ``--parallel`` the number of nodes."""
        change = self.state[Tool.PYINFRA].advance(run)
        nodes = self.twins[Tool.PYINFRA]
        argv = [str(PYINFRA), str(self.inventories[Tool.PYINFRA]), str(pyinfra_inputs.DEPLOY), "-y"]
        argv += [
            "--parallel",
            str(self.count),
            "--data",
            f"upstreams_file={self.pyinfra_data[self.state[Tool.PYINFRA].key]}",
        ]
        reloads = settled_reloads(nodes)
        files = self.one_file_stats(nodes)
        # cwd: pyinfra reads config.py from there and puts it on sys.path
        self.command(Tool.PYINFRA, argv, self.inventories[Tool.PYINFRA].parent, record, nodes if change else ())
        self.check_reloads(Tool.PYINFRA, nodes, reloads, change)
        self.check_one_file(Tool.PYINFRA, files, change)

    def one_file_stats(self, nodes: Sequence[SimulatedNode]) -> list[tuple[SimulatedNode, tuple[int, int] | None]]:
        """Each node's one file's (inode, mtime) before a run: a no-op must leave it alone."""
        stats: list[tuple[SimulatedNode, tuple[int, int] | None]] = []
        for node in nodes:
            path = node.config_dir / "http" / ONE_FILE
            stat = path.stat() if path.exists() else None
            stats.append((node, None if stat is None else (stat.st_ino, stat.st_mtime_ns)))
        return stats

    def check_one_file(
        self, tool: Tool, before: Sequence[tuple[SimulatedNode, tuple[int, int] | None]], change: bool
    ) -> None:
        """The one file is, byte for byte, the bench's rendering of what ``tool`` deployed, and
        was rewritten exactly when the run changed the configuration."""
        for node, stat in before:
            path = node.config_dir / "http" / ONE_FILE
            text, want = path.read_text(), self.one_file(node, tool)
            if text != want:
                diff = difflib.unified_diff(want.splitlines(), text.splitlines(), "bench", str(path), lineterm="", n=1)
                raise RuntimeError(
                    f"{TITLES[tool]}: {path} is not the bench's rendering of the workload:\n"
                    + "\n".join(list(diff)[:40])
                )
            now = path.stat()
            if ((now.st_ino, now.st_mtime_ns) != stat) != change:
                raise RuntimeError(
                    f"{TITLES[tool]}: {path} {'rewritten' if not change else 'untouched'} by a {'changing' if change else 'no-op'} run"
                )

    def one_file(self, node: SimulatedNode, tool: Tool) -> str:
        """The one-file peers' file on ``node`` for what ``tool`` deployed last."""
        data = {"listen_address": node.address, "http_port": node.http_port}
        return self.templates.get_template("all.conf.j2").render(
            {**data, "upstreams": self.workloads[self.state[tool].key]}
        )

    def ansible_files(self, node: SimulatedNode) -> dict[str, str]:
        """The files the per-file play writes on ``node`` for its current state (as its template module does)."""
        host = {"listen_address": node.address, "http_port": node.http_port}
        files = {"_default.conf": self.templates.get_template("default.conf.j2").render(host)}
        for upstream in self.workloads[self.state[Tool.ANSIBLE].key]:
            text = self.templates.get_template("upstream.conf.j2").render({**host, "item": upstream})
            files[f"{upstream['name']}.conf"] = text
        return files

    def restore_ansible_files(self) -> None:
        for node in self.twins[Tool.ANSIBLE]:
            include = node.config_dir / "http"
            include.mkdir(parents=True, exist_ok=True)
            for name, text in self.ansible_files(node).items():
                (include / name).write_text(text)
                (include / name).chmod(0o644)

    # -- the floor ----------------------------------------------------------------------------

    def floor(
        self, case: str, remote: Callable[[SimulatedNode], str], options: Sequence[str], reloads: bool = False
    ) -> None:
        nodes = self.fleet.nodes

        def work() -> float:
            with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
                for future in [pool.submit(openssh, n.sshd, remote(n), options, self.fleet.known_hosts) for n in nodes]:
                    future.result()
            return 0.0

        self.measure(case, work, reloading=nodes if reloads else ())

    def validate(self) -> None:
        """``obreconcile validate`` of the manifests a no-op apply reads (a whole process: start-up,
        load, schemas, model), and the no-op floor of the issue: that plus this round's ssh floor."""
        manifests = self.manifests[self.state[Tool.OBRECONCILE].key]
        validated = self.command(Tool.OBRECONCILE, self.fleet.cli_args("validate", manifests), ROOT, "validate")
        if "valid" not in validated.stdout + validated.stderr:
            raise RuntimeError(f"obreconcile validate: {validated.stdout}{validated.stderr}")
        ssh, loaded = self.results.samples["ssh"][-1], self.results.samples["validate"][-1]
        self.results.add(
            "ssh+validate", Sample(ssh.wall + loaded.wall, ssh.cpu + loaded.cpu, ssh.nodes_cpu + loaded.nodes_cpu)
        )

    # -- rounds -------------------------------------------------------------------------------

    def first_deploy(self) -> None:
        """Unmeasured: every tool deploys everything once; the floor's first connections.

        The per-file play's first run may be stopped at the timeout: what it wrote must be,
        byte for byte, what ``restore_ansible_files`` writes, which then completes it.
        """
        self.obreconcile(Run.CHANGE)
        node = self.fleet.nodes[0]
        ours = sorted((node.config_dir / "http").glob("*.conf"))
        size = sum(len(p.read_text()) for p in ours)
        upstream_file = len((node.config_dir / "http" / "up-00000.conf").read_text())
        print(f"  obreconcile: {size} bytes in {len(ours)} http files per node (one upstream's: {upstream_file})")
        served = [node]
        if Tool.ANSIBLE in self.twins:
            if not self.ansible(Tool.ANSIBLE, Run.CHANGE, timeout=min(self.ansible_timeout, FIRST_DEPLOY_TIMEOUT)):
                for twin in self.twins[Tool.ANSIBLE]:
                    subprocess.run(twin.nginx_command("-s", "reload").split(), check=True, capture_output=True)
                time.sleep(0.5)
            twin = self.twins[Tool.ANSIBLE][0]
            written = self.ansible_files(twin)
            for name in ("_default.conf", "up-00000.conf"):
                if (twin.config_dir / "http" / name).read_text() != written[name]:
                    raise RuntimeError(f"the bench's rendering of Ansible's {name} differs from what Ansible wrote")
            print(f"  {TITLES[Tool.ANSIBLE]}: one upstream's file {len(written['up-00000.conf'])} bytes")
            served.append(twin)
        for tool in ONE_FILE_PEERS:
            if tool in self.twins:
                self.run(tool, Run.CHANGE, record=False)  # checks the file byte for byte
                twin = self.twins[tool][0]
                theirs = len((twin.config_dir / "http" / ONE_FILE).read_text())
                print(f"  {TITLES[tool]}: {theirs} bytes in {ONE_FILE} ({theirs / size:.2f}x obreconcile's)")
                if not SIZE_MATCH[0] <= theirs / size <= SIZE_MATCH[1]:
                    raise RuntimeError(f"{TITLES[tool]} renders {theirs} bytes per node, obreconcile {size}")
                served.append(twin)
        for each in served:  # a routed upstream answers 502 (no backend listens)
            status = first_answer(each, "up-00000.example.com")
            if status != 502:
                raise RuntimeError(f"{each.name}: up-00000.example.com answered {status}, not 502\n{each.log_tail()}")
        for options in ((), X25519):
            with ThreadPoolExecutor(max_workers=self.count) as pool:
                for future in [
                    pool.submit(openssh, n.sshd, "true", options, self.fleet.known_hosts) for n in self.fleet.nodes
                ]:
                    future.result()

    def round(self, index: int, peers: Sequence[Tool]) -> None:
        """Every tool's changing, no-op and one-upstream runs (the tools' order rotates from
        round to round, because the machine drifts), then the floor."""
        tools = [Tool.OBRECONCILE, *peers]
        shift = index % len(tools)
        for tool in tools[shift:] + tools[:shift]:
            for run in Run:
                self.run(tool, run)
        self.floor("ssh", lambda n: "true", ())
        self.floor("ssh-x25519", lambda n: "true", X25519)
        self.floor("nginx", nginx_floor_command, (), reloads=True)
        self.floor("nginx-x25519", nginx_floor_command, X25519, reloads=True)
        self.validate()
        ran = [f"{tool}-{run}" for tool in tools for run in Run]
        ran += ["ssh", "ssh-x25519", "nginx", "nginx-x25519", "validate", "ssh+validate"]
        last = {c: self.results.samples[c][-1] for c in CASES if c in ran}
        line = "  ".join(f"{c} {s.wall:.2f}s" + (f" (served {s.live:.2f}s)" if s.live else "") for c, s in last.items())
        print(f"  round {index + 1}: {line}", flush=True)


def run_with_deadline(argv: list[str], env: dict[str, str], timeout: float) -> tuple[int | None, str, str]:
    """(exit code, stdout, stderr); exit code None when stopped after ``timeout`` seconds.

    The command runs in its own session; on timeout that session's process group (the
    command and its forks, started here) gets SIGTERM, then SIGKILL.
    """
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
        return process.returncode, stdout, stderr
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            stdout, stderr = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
        return None, stdout, stderr


def stop_control_masters(directory: Path) -> float:
    """Stop the ControlPersist masters in ``directory``; return the CPU seconds they used."""
    cpu = 0.0
    for socket_path in directory.iterdir():
        check = subprocess.run(
            ["ssh", "-S", str(socket_path), "-O", "check", "x"], capture_output=True, text=True, check=False
        )
        found = re.search(r"pid=(\d+)", check.stderr)
        if found:
            cpu += process_cpu(int(found[1]), children=False)
        subprocess.run(["ssh", "-S", str(socket_path), "-O", "exit", "x"], capture_output=True, check=False)
    return cpu


# -- the report ------------------------------------------------------------------------------


def report(
    results: Results, nodes: int, upstreams: int, rounds: int, ansible_rounds: int, timeout: float
) -> list[bool]:
    print(
        f"\n== {nodes} access nodes, {upstreams} upstreams x {BACKENDS_PER_UPSTREAM} backends: medians of {rounds} "
        f"rounds (Ansible: {ansible_rounds}; '>' = stopped at --ansible-timeout {timeout:g}s, a lower bound) =="
    )
    # wall: until the tool returned; served: until every node's nginx serves the change (a tool
    # that returns after signalling the reload leaves the master parsing): the targets use it
    print(f"{'case':<42} {'wall':>9} {'served':>9} {'ctl CPU':>9} {'node CPU':>9}")
    for case, title in CASES.items():
        if case not in results.samples:
            continue
        mark = ">" if results.censored(case) else " "
        figures = [f"{mark}{results.median(case, what):.2f}s" for what in ("wall", "served", "cpu", "nodes_cpu")]
        print(f"{title:<42} {figures[0]:>9} {figures[1]:>9} {figures[2]:>9} {figures[3]:>9}")
    faster = 8.0 if upstreams >= 1000 else 3.0
    large = upstreams >= 1000  # the peers' targets (issue 18) are set at 1,000 upstreams: info below
    # (title, numerator, denominator, figure, sense, bound: None = info)
    targets: list[tuple[str, str, str, str, str, float | None]] = [
        ("changing: Ansible per file / obreconcile", "ansible-change", "obr-change", "served", ">=", faster),
        (
            "changing: Ansible one file / obreconcile",
            "ansible-1f-change",
            "obr-change",
            "served",
            ">=",
            8.0 if large else None,
        ),
        ("changing: pyinfra / obreconcile", "pyinfra-change", "obr-change", "served", ">=", 2.0 if large else None),
        ("  (same, until pyinfra returned)", "pyinfra-change", "obr-change", "wall", ">=", None),
        (
            "changing: ctl CPU pyinfra / obreconcile",
            "pyinfra-change",
            "obr-change",
            "cpu",
            ">=",
            1.0 if large else None,
        ),
        ("changing: obreconcile / floor ssh+nginx", "obr-change", "nginx", "served", "<=", 2.0),
        ("  (same, floor with curve25519)", "obr-change", "nginx-x25519", "served", "<=", None),
        ("no-op: Ansible per file / obreconcile", "ansible-noop", "obr-noop", "served", ">=", 3.0),
        ("no-op: Ansible one file / obreconcile", "ansible-1f-noop", "obr-noop", "served", ">=", None),
        ("no-op: pyinfra / obreconcile", "pyinfra-noop", "obr-noop", "served", ">=", 2.0 if large else None),
        ("no-op: obreconcile / floor ssh true", "obr-noop", "ssh", "served", "<=", None),
        ("no-op: obreconcile / (ssh true + validate)", "obr-noop", "ssh+validate", "served", "<=", 1.5),
        ("  (same, floor with curve25519)", "obr-noop", "ssh-x25519", "served", "<=", None),
        ("one upstream: pyinfra / obreconcile", "pyinfra-one", "obr-one", "served", ">=", 3.0 if large else None),
        ("  (same, until pyinfra returned)", "pyinfra-one", "obr-one", "wall", ">=", None),
        ("one upstream: Ansible one file / obr", "ansible-1f-one", "obr-one", "served", ">=", None),
        ("one upstream: obreconcile / its no-op", "obr-one", "obr-noop", "served", "<=", 1.3 if large else None),
    ]
    print(f"\n{'target (median of per-round ratios)':<42} {'ratio':>8}  {'want':>6}  {'result':<6} per round")
    verdicts = []
    for title, numerator, denominator, what, sense, bound in targets:
        if numerator not in results.samples:
            continue
        per_round = results.ratios(numerator, denominator, what)
        ratio = statistics.median(per_round)
        lower = ">" if results.censored(numerator) else " "  # a censored numerator: a lower bound
        if bound is None:
            want, verdict = "", "info"
        else:
            ok = ratio >= bound if sense == ">=" else ratio <= bound
            want, verdict = f"{sense}{bound:g}x", "PASS" if ok else ("n/a" if lower == ">" else "FAIL")
            if verdict != "n/a":
                verdicts.append(ok)
        rounds_text = " ".join(f"{r:.2f}" for r in per_round)
        print(f"{title:<42} {lower}{ratio:>6.2f}x  {want:>6}  {verdict:<6} {rounds_text}")
    print(flush=True)
    return verdicts


def print_profile(path: Path, title: str, nodes: int) -> None:
    """Where the wall time of one apply went, from py-spy's raw stacks (every thread, idle included).

    The main thread by step of ``apply_command``; the workers (one per access node) by step
    of ``apply_node``, averaged per node. A sample is 1/SPY_RATE seconds.
    """
    main: dict[str, int] = {}
    workers: dict[str, int] = {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        names = [frame.split(" (")[0] for frame in stack.split(";")]
        files = [frame.split(" (")[-1] for frame in stack.split(";")]
        if names and names[0] == "Thread._bootstrap":
            if "_WorkItem.run" not in names:  # paramiko's reader threads; workers between jobs
                continue
            anchors: tuple[str, ...] = ("_apply_one", "apply_node", "_deploy", "NodeLock.__enter__")
            table = workers
        else:
            table, anchors = main, ("apply_command", "_converge", "apply_fleet")
        step = "(imports and start-up)" if "_find_and_load" in names and "apply_command" not in names else "(other)"
        last = max((i for i, n in enumerate(names) if n in anchors), default=None)
        if last is not None:
            inner = [n for n, f in zip(names[last + 1 :], files[last + 1 :], strict=True) if "reconciler/" in f]
            step = f"{names[last]} > {inner[0] if inner else '(itself: waiting, library code)'}"
        table[step] = table.get(step, 0) + int(count)
    print(f"-- {title}: py-spy, wall seconds by step --")
    for heading, table, divisor in (("main thread", main, 1), (f"per access node (mean of {nodes})", workers, nodes)):
        print(f"  {heading}:")
        for step, samples in sorted(table.items(), key=lambda item: -item[1])[:12]:
            print(f"    {samples / SPY_RATE / divisor:6.2f}s  {step}")
    print(flush=True)


def run_size(
    nodes: int,
    upstreams: int,
    rounds: int,
    peers: Sequence[Tool],
    ansible_rounds: int,
    ansible_timeout: float,
    profile: bool,
) -> list[bool]:
    with tempfile.TemporaryDirectory(prefix="obr-bench-apply-") as tmp:
        directory = Path(tmp)
        fleet: Fleet | None = None
        twins: dict[Tool, list[SimulatedNode]] = {}
        try:
            print(f"starting {nodes} access nodes (sshd + {1 + len(peers)} nginx each) ...", flush=True)
            fleet = start_fleet(directory, nodes)
            for tool in peers:  # each peer its own nginx on every node: nobody sees another's files
                for node in fleet.nodes:
                    prefix = directory / f"node{node.index}" / f"{tool}-nginx"
                    twin = SimulatedNode(node.index, node.sshd, prefix, free_port())
                    twins.setdefault(tool, []).append(twin)
                    twin.start_nginx()
                    (twin.config_dir / "http").mkdir(parents=True, exist_ok=True)  # provisioned
            bench = Bench(directory, fleet, twins, upstreams, ansible_timeout)
            print(
                f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; first deploy by every tool (not measured) ...",
                flush=True,
            )
            bench.first_deploy()
            for index in range(rounds):
                bench.round(index, [p for p in peers if p is not Tool.ANSIBLE or index < ansible_rounds])
            ran_ansible = min(rounds, ansible_rounds) if Tool.ANSIBLE in peers else 0
            verdicts = report(bench.results, nodes, upstreams, rounds, ran_ansible, ansible_timeout)
            print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            if profile:
                for run in (Run.CHANGE, Run.NOOP):
                    output = directory / f"apply-{run}.txt"
                    bench.obreconcile(run, profile=output)
                    print_profile(output, f"one {RUN_TITLES[run]} obreconcile apply", nodes)
            return verdicts
        finally:
            for each in twins.values():
                for twin in each:
                    twin.stop()
            if fleet is not None:
                fleet.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, nargs="+", default=[5, 20], help="fleet sizes (access nodes)")
    parser.add_argument("--upstreams", type=int, default=100, help="upstreams, each with 10 backends, on every node")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per fleet size (medians)")
    parser.add_argument(
        "--ansible-rounds",
        type=int,
        default=None,
        help="run the per-file Ansible play only in the first K rounds (default: every round); it is slow at scale",
    )
    parser.add_argument(
        "--ansible-timeout",
        type=float,
        default=3600.0,
        help="stop a per-file ansible-playbook run after this many seconds and report it as a lower bound",
    )
    parser.add_argument(
        "--profile", action="store_true", help="then profile one changing and one no-op apply with py-spy"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 nodes, 20 upstreams, 1 round")
    parser.add_argument(
        "--peers",
        nargs="*",
        type=Tool,
        choices=PEERS,
        default=list(PEERS),
        metavar="PEER",
        help=f"the peers to compare with (default: all of {', '.join(PEERS)}; none: obreconcile and the floor)",
    )
    parser.add_argument(
        "--without-ansible", action="store_true", help="obreconcile and the floor only (as --peers with no name)"
    )
    args = parser.parse_args(argv)
    peers: list[Tool] = [] if args.without_ansible else [p for p in PEERS if p in args.peers]
    if args.quick:
        args.nodes, args.upstreams, args.rounds = [5], 20, 1
    if args.profile and not PY_SPY.exists():
        parser.error(f"{PY_SPY} is missing: make setup (the bench extra is in requirements.lock)")
    for program, users in ((ANSIBLE_PLAYBOOK, {Tool.ANSIBLE, Tool.ANSIBLE_ONE_FILE}), (PYINFRA, {Tool.PYINFRA})):
        if users & set(peers) and not program.exists():
            parser.error(f"{program} is missing: make setup (the bench extra is in requirements.lock)")
    print(f"{os.cpu_count()} CPUs; {subprocess.run(['ssh', '-V'], capture_output=True, text=True).stderr.strip()}")
    # every tool runs from byte-compiled modules, as an install from a wheel does (pip compiles them):
    # this checkout is an editable install, whose modules Python compiles at every start when no
    # .pyc is there and PYTHONDONTWRITEBYTECODE is set (it is on this kind of machine)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "reconciler")], check=True)
    ansible_rounds = args.rounds if args.ansible_rounds is None else max(1, args.ansible_rounds)
    verdicts = [
        v
        for n in args.nodes
        for v in run_size(n, args.upstreams, args.rounds, peers, ansible_rounds, args.ansible_timeout, args.profile)
    ]
    print(f"{sum(verdicts)} of {len(verdicts)} targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
