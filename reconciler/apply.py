"""Apply a plan on one access node, in SPEC.md §2's order, leaving it on the old or the new release.

    lock → observe → plan → stage → switch → test → reload → verify → marker → prune → unlock

- lock: ``flock`` on ``<config_dir>.lock``, held by a command whose stdin is ours (layout.py);
- stage: the complete new release is written to ``<config_dir>.releases/<id>/`` in one round
  trip (a tar stream on stdin), its marker saying ``staged``;
- switch: a new symlink renamed over ``<config_dir>`` (one ``rename(2)``);
- test: ``test_command`` runs against the complete new configuration with the new release
  linked in, under the lock and before any reload; when it fails the link is renamed back at
  once, so the running nginx never sees the new files (docs/apply.md says why this order);
- reload, then verify from nginx itself: its default server must answer the new revision
  and its error log must show no ``[emerg]`` since the reload; otherwise roll back (link the
  previous release, reload it) and report;
- marker: rewritten ``deployed`` in the live release, last.

Each failure is a ``NodeError`` naming the access node, the step and nginx's message.
"""

from __future__ import annotations

import getpass
import io
import posixpath
import shlex
import socket
import tarfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from reconciler.errors import NodeError, ObreconcileError
from reconciler.layout import KEEP_RELEASES, LOCK_BUSY_EXIT, MARKER, MODEL, NodeLayout
from reconciler.manifest.model import AccessNode
from reconciler.observe import Facts, Marker, encode_model, observe
from reconciler.plan import NodePlan, StoreRef, plan_node, sha256
from reconciler.render import DEFAULT_FILE, RenderedAccessNode
from reconciler.transport import CommandResult, Transport
from reconciler.transport.held import HeldCommand

PROBE_PATH = "/.well-known/obreconcile/revision"


@dataclass(frozen=True)
class ApplySettings:
    force: bool = False  # push even when fencing refuses (an older store revision)
    lock_timeout: float = 60.0  # seconds to wait for another apply's lock on a node
    verify_timeout: float = 10.0  # seconds for nginx to serve the new revision after a reload
    deployed_by: str = ""


@dataclass(frozen=True)
class NodeResult:
    """What happened on one access node."""

    access_node: str
    status: str  # "unchanged" | "converged" | "failed" | "skipped"
    plan: NodePlan | None = None
    step: str = ""
    error: str = ""
    reloaded: bool = False
    rolled_back: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in ("unchanged", "converged")

    def to_dict(self) -> dict[str, Any]:
        return {
            "access_node": self.access_node,
            "status": self.status,
            "step": self.step,
            "error": self.error,
            "reloaded": self.reloaded,
            "rolled_back": self.rolled_back,
            "seconds": round(self.seconds, 3),
            "plan": self.plan.to_dict() if self.plan else None,
        }


def default_deployer() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class NodeLock:
    """``flock`` on the node's lock file, held while this object lives (a context manager)."""

    def __init__(self, transport: Transport, layout: NodeLayout, timeout: float) -> None:
        self.transport, self.layout, self.timeout = transport, layout, timeout
        self.held: HeldCommand | None = None

    def __enter__(self) -> NodeLock:
        lock = shlex.quote(self.layout.lock)
        wait = max(1, round(self.timeout))
        command = (
            f"mkdir -p -- {shlex.quote(self.layout.parent)} && "
            f"exec flock -w {wait} -E {LOCK_BUSY_EXIT} {lock} sh -c 'echo locked; exec cat >/dev/null'"
        )
        self.held = self.transport.hold(command)
        start = self.held.first_line(self.timeout + 15)
        if start.line == "locked":
            return self
        self.held.release()
        if start.exit_code == LOCK_BUSY_EXIT:
            raise NodeError(self.transport.name, "lock", f"another apply held {self.layout.lock} for {wait}s")
        raise NodeError(self.transport.name, "lock", f"cannot lock {self.layout.lock}", start.stderr)

    def __exit__(self, *exc: object) -> None:
        if self.held is not None:
            self.held.release()


def apply_node(
    node: AccessNode,
    rendered: RenderedAccessNode,
    model: dict[str, Any],
    transport: Transport,
    store: StoreRef,
    settings: ApplySettings,
    expected_facts: str | None = None,
) -> NodeResult:
    """Converge one access node; never raises for the node's own failures (see NodeResult)."""
    started = time.monotonic()
    plan: NodePlan | None = None
    try:
        with NodeLock(transport, NodeLayout.of(node), settings.lock_timeout):
            facts = observe(node, transport)
            plan = plan_node(rendered, facts, model, store, settings.force)
            if expected_facts is not None and plan.facts_digest != expected_facts:
                raise NodeError(node.name, "plan", "the node changed since the saved plan was made: plan again")
            if plan.refused:
                raise NodeError(node.name, "plan", plan.refused)
            if not plan.changed:
                return NodeResult(node.name, "unchanged", plan, seconds=time.monotonic() - started)
            _deploy(node, rendered, model, transport, store, settings, facts)
            return NodeResult(node.name, "converged", plan, reloaded=True, seconds=time.monotonic() - started)
    except NodeError as e:
        return NodeResult(
            node.name,
            "failed",
            plan,
            e.step,
            e.message,
            reloaded=e.reloaded,
            rolled_back=e.rolled_back,
            seconds=time.monotonic() - started,
        )
    except ObreconcileError as e:  # transport: unreachable, host key, authentication, lost link
        return NodeResult(node.name, "failed", plan, "connect", str(e), seconds=time.monotonic() - started)


def _deploy(
    node: AccessNode,
    rendered: RenderedAccessNode,
    model: dict[str, Any],
    transport: Transport,
    store: StoreRef,
    settings: ApplySettings,
    facts: Facts,
) -> None:
    layout = NodeLayout.of(node)
    now = datetime.now(UTC)
    release_id = f"{now.strftime('%Y%m%dT%H%M%S.%fZ')}-{rendered.revision}"
    release = layout.release(release_id)
    marker = Marker(
        revision=rendered.revision,
        store_id=store.store_id,
        store_revision=store.revision,
        digests={path: sha256(text) for path, text in rendered.files.items()},
        state="staged",
        deployed_by=settings.deployed_by or default_deployer(),
        deployed_at=now.isoformat(timespec="seconds"),
        release=release_id,
    )
    previous = _adopt(transport, layout, facts)
    _stage(transport, layout, release, rendered, marker, encode_model(model))
    test = _switch_and_test(transport, node, layout, release)
    if not test.ok:
        _switch_back(transport, layout, previous)
        transport.run(["rm", "-rf", "--", release])
        raise NodeError(
            node.name, "test", f"{node.nginx.test_command!r} refused the new configuration", test.stderr or test.stdout
        )
    reload, log_size = _reload(transport, node)
    problem = (
        f"{node.nginx.reload_command!r} failed (exit {reload.exit_code}): {reload.stderr.decode('utf-8', 'replace').strip()}"
        if not reload.ok
        else _verify(
            transport, node, rendered.revision, _can_probe(facts, rendered.files), log_size, settings.verify_timeout
        )
    )
    if problem:
        outcome = _roll_back(transport, node, layout, previous, facts, settings)
        raise NodeError(
            node.name, "verify" if reload.ok else "reload", f"{problem}; {outcome}", reloaded=True, rolled_back=True
        )
    transport.write_file(posixpath.join(release, MARKER), replace(marker, state="deployed").to_json())


def _adopt(transport: Transport, layout: NodeLayout, facts: Facts) -> str | None:
    """The release live before this apply (a path), taking over a plain directory as one."""
    if facts.link is None:
        return None
    if facts.link != "":
        return facts.link
    adopted = layout.release("00000000-adopted")
    transport.run(
        f"mkdir -p -- {shlex.quote(layout.releases)} && rm -rf -- {shlex.quote(adopted)} && "
        f"mv -T -- {shlex.quote(layout.config_dir)} {shlex.quote(adopted)} && "
        f"ln -s -- {shlex.quote(adopted)} {shlex.quote(layout.config_dir)}",
        check=True,
    )
    return adopted


def _stage(
    transport: Transport, layout: NodeLayout, release: str, rendered: RenderedAccessNode, marker: Marker, model: bytes
) -> None:
    """Write the complete release in one round trip: a tar stream unpacked into a new directory."""
    buffer = io.BytesIO()
    contents: dict[str, bytes] = {path: text.encode() for path, text in rendered.files.items()}
    contents.update({MARKER: marker.to_json(), MODEL: model})
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, data in sorted(contents.items()):
            if path.startswith("/") or ".." in path.split("/"):
                raise NodeError(transport.name, "stage", f"refusing to write outside the release: {path!r}")
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    q = shlex.quote(release)
    result = transport.run(
        f"set -e; mkdir -p -- {shlex.quote(layout.releases)}; mkdir -- {q}; "
        f"tar -x --no-same-owner --no-same-permissions -C {q} -f -; chmod -R a+rX -- {q}; " + _prune_script(layout),
        input=buffer.getvalue(),
    )
    if not result.ok:
        transport.run(["rm", "-rf", "--", release])
        raise NodeError(transport.name, "stage", f"cannot write the new release {release}", result.stderr)


def _switch_script(layout: NodeLayout, target: str) -> str:
    """Point ``config_dir`` at ``target`` with one rename of a new symlink over it."""
    link = f"{layout.config_dir}.obr-switch"
    return (
        f"rm -f -- {shlex.quote(link)} && ln -s -- {shlex.quote(target)} {shlex.quote(link)} && "
        f"mv -f -T -- {shlex.quote(link)} {shlex.quote(layout.config_dir)}"
    )


def _switch(transport: Transport, layout: NodeLayout, target: str) -> None:
    result = transport.run(_switch_script(layout, target))
    if not result.ok:
        raise NodeError(transport.name, "switch", f"cannot link {layout.config_dir} to {target}", result.stderr)


_SWITCH_FAILED = 97


def _switch_and_test(transport: Transport, node: AccessNode, layout: NodeLayout, release: str) -> CommandResult:
    """Link the new release and run ``test_command`` against it, in one round trip."""
    result = transport.run(
        f"{{ {_switch_script(layout, release)}; }} || exit {_SWITCH_FAILED}\n{node.nginx.test_command}"
    )
    if result.exit_code == _SWITCH_FAILED:
        raise NodeError(transport.name, "switch", f"cannot link {layout.config_dir} to {release}", result.stderr)
    return result


def _reload(transport: Transport, node: AccessNode) -> tuple[CommandResult, int | None]:
    """Run ``reload_command``; with the error log's size just before, in one round trip."""
    results = transport.run_batch(
        {
            "size": f"stat -c %s -- {shlex.quote(node.nginx.error_log)} 2>/dev/null || true",
            "reload": node.nginx.reload_command,
        }
    )
    size = results["size"].text.strip()
    return results["reload"], int(size) if size.isdigit() else None


def _switch_back(transport: Transport, layout: NodeLayout, previous: str | None) -> None:
    if previous is not None:
        _switch(transport, layout, previous)
    else:  # nothing was deployed before: no managed files at all
        transport.run(["rm", "-f", "--", layout.config_dir], check=True)


def _can_probe(facts: Facts, files: Mapping[str, str]) -> bool:
    """Whether verify can ask nginx for its revision: the default server is in the release and
    the node has curl, wget or python3 (without them only the error log is read)."""
    return DEFAULT_FILE in files and facts.probe_tool is not None


def probe_address(node: AccessNode) -> str:
    """Where the node's own default server answers the revision (from the node itself)."""
    address = node.listen_address
    if address in ("*", "0.0.0.0"):
        address = "127.0.0.1"
    elif address in ("[::]",):
        address = "[::1]"
    return f"{address}:{node.http_port}"


def probe_command(node: AccessNode) -> str:
    url = shlex.quote(f"http://{probe_address(node)}{PROBE_PATH}")
    return (
        f"curl -fsS --max-time 2 {url} 2>/dev/null || wget -qO- -T 2 {url} 2>/dev/null || "
        f"python3 -c 'import sys,urllib.request;print(urllib.request.urlopen(sys.argv[1],timeout=2).read().decode())' {url}"
    )


def _emergency_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if any(w in line for w in ("[emerg]", "[alert]", "[crit]"))]


def _verify(
    transport: Transport, node: AccessNode, revision: str, probe: bool, log_size: int | None, timeout: float
) -> str:
    """'' when nginx serves ``revision``; else what went wrong (in nginx's own words).

    Each round trip reads what nginx logged since the reload (``[emerg]``, ``[alert]``,
    ``[crit]`` lines) and, when ``probe``, asks nginx's default server for its revision
    (without the probe only the error log is read).
    """
    deadline = time.monotonic() + timeout
    commands = {}
    if log_size is not None:
        commands["log"] = f"tail -c +{log_size + 1} -- {shlex.quote(node.nginx.error_log)} 2>/dev/null || true"
    if probe:
        commands["probe"] = probe_command(node)
    while True:
        results = transport.run_batch(commands) if commands else {}
        emergencies = _emergency_lines(results["log"].text) if "log" in results else []
        if emergencies:
            return "nginx did not load the new configuration: " + " | ".join(emergencies[-3:])
        if not probe:
            return ""
        served = results["probe"].text.strip()
        if served == revision:
            return ""
        if time.monotonic() >= deadline:
            return (
                f"nginx still serves revision {served or '(no answer)'} {timeout:g}s after the reload, not {revision}"
            )
        time.sleep(0.05)


def _roll_back(
    transport: Transport,
    node: AccessNode,
    layout: NodeLayout,
    previous: str | None,
    facts: Facts,
    settings: ApplySettings,
) -> str:
    """Link the previous release again and reload it; say how that went."""
    try:
        _switch_back(transport, layout, previous)
        reload, log_size = _reload(transport, node)
        if not reload.ok:
            return f"rolled back the files, but reloading them failed too: {reload.stderr.decode('utf-8', 'replace').strip()}"
        old = facts.marker.revision if facts.marker and previous else None
        if old is not None:
            has_probe = _can_probe(facts, facts.files)
            problem = _verify(transport, node, old, has_probe, log_size, settings.verify_timeout)
            if problem:
                return f"rolled back to the previous release, but {problem}"
        return "rolled back to the previous release and reloaded it"
    except ObreconcileError as e:
        return f"rollback failed: {e}"


def _prune_script(layout: NodeLayout) -> str:
    """Keep the KEEP_RELEASES newest releases (names sort by time) and always the live one."""
    q = shlex.quote(layout.releases)
    return (
        f"cd {q} && live=$(readlink -- {shlex.quote(layout.config_dir)} || true) && "
        f"ls -1 | LC_ALL=C sort | head -n -{KEEP_RELEASES} | "
        f'while read -r r; do [ "{layout.releases}/$r" = "$live" ] || rm -rf -- "$r"; done || true'
    )
