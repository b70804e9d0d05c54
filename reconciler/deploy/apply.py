"""Apply a plan on one access node, in SPEC.md §2's order, leaving it on the old or the new release.

    lock + observe → plan → stage → prune → switch → test → reload → verify → marker → unlock

Two round trips when the node changes, one when it does not (plus the lock's release):

- lock: ``flock`` on ``<config_dir>.lock``, held by a command whose stdin is ours (layout.py),
  which reads the node's facts once it holds the lock (facts.py's commands) and reports them
  in the same answer;
- stage … marker: one script (scripts.py) with the release as a compressed tar on its stdin;
- stage: the complete new release is written to ``<config_dir>.releases/<id>/``, its marker
  saying ``staged`` (and the ``deployed`` one beside it, renamed over it last);
- switch: a new symlink renamed over ``<config_dir>`` (one ``rename(2)``);
- test: ``test_command`` runs against the complete new configuration with the new release
  linked in, under the lock and before any reload; when it fails the link is renamed back at
  once, so the running nginx never sees the new files (docs/apply.md says why this order);
- reload, then verify from nginx itself: its default server must answer the new revision
  and its error log must show no ``[emerg]`` since the reload; otherwise roll back (link the
  previous release, reload it) and report;
- marker: ``deployed`` renamed over the ``staged`` marker in the live release, last.

Each failure is a ``NodeError`` naming the access node, the step and nginx's message.
"""

from __future__ import annotations

import getpass
import gzip
import io
import os
import posixpath
import shlex
import socket
import tarfile
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from reconciler.deploy.facts import (
    IRREGULAR,
    Facts,
    Marker,
    MarkerState,
    encode_model,
    fact_commands,
    parse_facts,
    tls_references,
)
from reconciler.deploy.layout import LOCK_BUSY_EXIT, MARKER, MODEL, NodeLayout
from reconciler.deploy.operator import RECORD, RECORD_PATHS, OperatorConfig
from reconciler.deploy.operator_read import record_now, settled
from reconciler.deploy.plan import NodePlan, Refusal, StoreRef, plan_node, settle
from reconciler.deploy.probe import PROBE_PATH, probe_address, probe_function
from reconciler.deploy.scripts import (
    HOLDER,
    Deploy,
    lock_command,
    parse_steps,
    reload_script,
    settled_log_size,
    steps_script,
    switch_script,
    verify_outcome,
    verify_script,
)
from reconciler.errors import CommandError, NodeError, ObreconcileError, RenderError, Step
from reconciler.manifest.model import AccessNode
from reconciler.render.renderer import DEFAULT_FILE, RefusedUpstream, RenderedAccessNode, RenderedFiles
from reconciler.store import DeployRecord, DeployResult
from reconciler.transport import CommandResult, Transport
from reconciler.transport.batch import batch_script, parse_batch
from reconciler.transport.held import HeldCommand

__all__ = ["PROBE_PATH", "ApplySettings", "NodeLock", "NodeResult", "NodeStatus", "apply_node", "probe_address"]


@dataclass(frozen=True)
class ApplySettings:
    force: bool = False  # push even when fencing refuses (an older store revision)
    lock_timeout: float = 60.0  # seconds to wait for another apply's lock on a node
    verify_timeout: float = 10.0  # seconds for nginx to serve the new revision after a reload
    deployed_by: str = ""
    # set by the CLI on SIGINT/SIGTERM: start no node and no deploy any more (one in hand ends)
    interrupt: threading.Event | None = field(default=None, compare=False)

    @property
    def interrupted(self) -> bool:
        return self.interrupt is not None and self.interrupt.is_set()


INTERRUPTED = "interrupted before this access node was changed"


class NodeStatus(StrEnum):
    """How applying on one access node ended."""

    UNCHANGED = "unchanged"
    CONVERGED = "converged"
    FAILED = "failed"
    SKIPPED = "skipped"  # not tried: an earlier --serial batch failed, or apply was interrupted


@dataclass(frozen=True)
class NodeResult:
    """What happened on one access node."""

    access_node: str
    status: NodeStatus
    plan: NodePlan | None = None
    step: Step | None = None  # where it failed
    error: str = ""
    reloaded: bool = False
    rolled_back: bool = False
    seconds: float = 0.0
    uploaded: int = 0  # managed files sent to the node (the others were copied there from the live release)
    rendered: int = 0  # managed files rendered (the others' inputs were those the live release was rendered from)

    @property
    def ok(self) -> bool:
        return self.status in (NodeStatus.UNCHANGED, NodeStatus.CONVERGED)

    def record(self, revision: int, by: str = "") -> DeployRecord | None:
        """The store's record of this outcome at store ``revision`` (a skipped node keeps its last);
        ``by``: who pushed (``obreconcile serve HOST``, ``apply USER@HOST``; default USER@HOST)."""
        if self.status == NodeStatus.SKIPPED:
            return None
        digests = {f.path: f.new_digest or "" for f in self.plan.files} if self.plan is not None and self.ok else {}
        result = DeployResult.CONVERGED if self.ok else DeployResult.FAILED
        step = "" if self.ok or self.step is None else str(self.step)
        return DeployRecord(
            self.access_node,
            revision,
            digests,
            result,
            self.error,
            by=by or default_deployer(),
            seconds=self.seconds,
            step=step,
            refused=tuple(r.to_dict() for r in self.refused_upstreams),
        )

    @property
    def refused_upstreams(self) -> tuple[RefusedUpstream, ...]:
        """Upstreams the renderer refused on this node (left at their last good rendering)."""
        return self.plan.refused_upstreams if self.plan is not None else ()

    @property
    def refusal(self) -> Refusal | None:
        """Why the node refused the push (fenced, no nginx), when it did."""
        return self.plan.refusal if self.plan is not None and not self.ok and self.step == Step.PLAN else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "access_node": self.access_node,
            "status": self.status,
            "step": self.step or "",
            "error": self.error,
            "reloaded": self.reloaded,
            "rolled_back": self.rolled_back,
            "seconds": round(self.seconds, 3),
            "uploaded": self.uploaded,
            "rendered": self.rendered,
            "plan": self.plan.to_dict() if self.plan else None,
        }


def default_deployer() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def lock_holder(deployed_by: str = "") -> str:
    """Who holds a node's lock, as its lock file says: user@host, pid, what, since when (UTC)."""
    what = f" ({deployed_by})" if deployed_by else ""
    since = datetime.now(UTC).isoformat(timespec="seconds")
    return f"{default_deployer()} pid {os.getpid()}{what} since {since}"


class NodeLock:
    """``flock`` on the node's lock file, held while this object lives (a context manager).

    With ``facts`` (name -> command, facts.py's), the commands run as soon as the lock is
    held and ``results`` holds their outcomes: locking and observing cost one round trip.
    """

    def __init__(
        self,
        transport: Transport,
        layout: NodeLayout,
        timeout: float,
        facts: Mapping[str, str] | None = None,
        holder: str = "",
    ) -> None:
        self.transport, self.layout, self.timeout = transport, layout, timeout
        self.facts = dict(facts or {})
        self.holder = holder or lock_holder()
        self.held: HeldCommand | None = None
        self.results: dict[str, CommandResult] = {}

    def __enter__(self) -> NodeLock:
        wait = max(1, round(self.timeout))
        script, boundary = batch_script(self.facts)
        sentinel = f"{boundary} done"
        then = f"{script}\nprintf '%s\\n' {shlex.quote(sentinel)}; printf '%s\\n' {shlex.quote(sentinel)} >&2"
        self.held = self.transport.hold(lock_command(self.layout, wait, then, self.holder))
        try:
            answer = self.held.read_until(sentinel.encode(), self.timeout + 15 + (self.transport.command_timeout or 0))
        except BaseException:
            self.held.release()
            raise
        if answer.exit_code is None and answer.stdout.startswith(b"locked\n"):
            parsed = parse_batch(answer.stdout[len(b"locked\n") :], answer.stderr, boundary, list(self.facts))
            if parsed is not None:
                self.results = {name: CommandResult(*parts) for name, parts in parsed.items()}
                return self
        self.held.release()
        if answer.exit_code == LOCK_BUSY_EXIT:
            text = answer.stderr.decode("utf-8", "replace")
            holder = text[text.find(HOLDER) + len(HOLDER) :].strip() if HOLDER in text else ""
            who = f": held by {holder}" if holder else ""
            message = f"another apply held {self.layout.lock} for {wait}s (--lock-timeout){who}"
            raise NodeError(self.transport.name, Step.LOCK, message)
        if answer.stdout.startswith(b"locked\n"):
            raise CommandError(self.transport.target, "(facts under the lock)", answer.exit_code or 1, answer.stderr)
        raise NodeError(
            self.transport.name, Step.LOCK, f"cannot lock {self.layout.lock}", answer.stderr.decode("utf-8", "replace")
        )

    def __exit__(self, *exc: object) -> None:
        if self.held is not None:
            self.held.release()


def apply_node(
    node: AccessNode,
    rendered: RenderedAccessNode | Future[RenderedAccessNode],
    model: dict[str, Any],
    transport: Transport,
    store: StoreRef,
    settings: ApplySettings,
    expected_facts: str | None = None,
) -> NodeResult:
    """Converge one access node; never raises for the node's own failures (see NodeResult).

    ``rendered`` may still be rendering (a Future): the node is locked and observed meanwhile.
    """
    started = time.monotonic()
    plan: NodePlan | None = None
    if settings.interrupted:
        return NodeResult(node.name, NodeStatus.SKIPPED, error=INTERRUPTED)
    try:
        commands = fact_commands(node, tls_references(model))
        holder = lock_holder(settings.deployed_by)
        with NodeLock(transport, NodeLayout.of(node), settings.lock_timeout, commands, holder) as lock:
            facts = parse_facts(node.name, lock.results)
            if isinstance(rendered, Future):
                rendered = _rendered(node, rendered)
            try:  # only the files whose inputs changed since the live release are rendered
                rendered = settle(rendered, facts)
            except RenderError as e:  # the access node's own files (its default server, the header)
                raise NodeError(node.name, Step.RENDER, str(e)) from e
            rendered, operator, read_now = settled(node, rendered, facts, transport)
            plan = plan_node(rendered, facts, model, store, settings.force)
            if expected_facts is not None and plan.facts_digest != expected_facts:
                raise NodeError(node.name, Step.PLAN, "the node changed since the saved plan was made: plan again")
            if plan.refused:
                raise NodeError(node.name, Step.PLAN, plan.refused)
            if not plan.changed:
                if read_now and operator is not None and facts.link:  # so that the next apply need not read it
                    record_now(transport, NodeLayout.of(node), operator)
                return NodeResult(
                    node.name, NodeStatus.UNCHANGED, plan, seconds=time.monotonic() - started, rendered=_count(rendered)
                )
            if settings.interrupted:  # the last moment nothing has changed on the node yet
                return NodeResult(
                    node.name, NodeStatus.SKIPPED, plan, error=INTERRUPTED, seconds=time.monotonic() - started
                )
            try:
                uploaded = _deploy(node, rendered, model, transport, store, settings, facts, plan.kept, operator)
            except RenderError as e:  # a file that travels without a plan of its own (a first deploy)
                raise NodeError(node.name, Step.RENDER, str(e)) from e
            return NodeResult(
                node.name,
                NodeStatus.CONVERGED,
                plan,
                reloaded=True,
                seconds=time.monotonic() - started,
                uploaded=uploaded,
                rendered=_count(rendered),
            )
    except NodeError as e:
        return NodeResult(
            node.name,
            NodeStatus.FAILED,
            plan,
            e.step,
            e.message,
            reloaded=e.reloaded,
            rolled_back=e.rolled_back,
            seconds=time.monotonic() - started,
        )
    except ObreconcileError as e:  # transport: unreachable, host key, authentication, lost link
        return NodeResult(node.name, NodeStatus.FAILED, plan, Step.CONNECT, str(e), seconds=time.monotonic() - started)


def _count(rendered: RenderedAccessNode) -> int:
    files = rendered.files
    return sum(map(files.rendered, files)) if isinstance(files, RenderedFiles) else len(files)


def _rendered(node: AccessNode, future: Future[RenderedAccessNode]) -> RenderedAccessNode:
    try:
        return future.result()
    except ObreconcileError as e:
        raise NodeError(node.name, Step.RENDER, str(e)) from e


def _deploy(
    node: AccessNode,
    rendered: RenderedAccessNode,
    model: dict[str, Any],
    transport: Transport,
    store: StoreRef,
    settings: ApplySettings,
    facts: Facts,
    kept: Mapping[str, str],
    operator: OperatorConfig | None = None,
) -> int:
    """Stage, switch, test, reload, verify and mark the new release in one round trip (scripts.py);
    on a failure switch back or roll back, and raise ``NodeError``. The number of files uploaded.

    The new release starts as a copy of the live one (on the node) and the tar brings only the
    files that differ from the live files (and the marker and model): one upstream changed,
    two files travel (its own and ``http/_default.conf``, which holds the revision). The files
    of refused upstreams (``rendered.kept``) come along from the live release as they are, and
    ``kept`` (path -> digest, ``NodePlan.kept``) is what the marker records of them.

    ``operator``: the operator's configuration the render was settled against, recorded in the
    release (``operator.RECORD``) so that later applies need not read it again; none: a record
    the live release has is not carried over."""
    layout = NodeLayout.of(node)
    now = datetime.now(UTC)
    release_id = f"{now.strftime('%Y%m%dT%H%M%S.%fZ')}-{rendered.revision}"
    release = layout.release(release_id)
    digests = dict(rendered.digests or {})
    recorded = facts.marker.inputs if facts.marker else {}
    marker = Marker(
        revision=rendered.revision,
        store_id=store.store_id,
        store_revision=store.revision,
        digests={**digests, **kept},
        state=MarkerState.STAGED,
        deployed_by=settings.deployed_by or default_deployer(),
        deployed_at=now.isoformat(timespec="seconds"),
        release=release_id,
        inputs={**rendered.inputs, **{p: recorded[p] for p in kept if p in recorded}},
    )
    previous = _adopt(transport, layout, facts)
    # only what differs from the live files travels; the rest is copied from the live release
    upload = {p for p, digest in digests.items() if facts.files.get(p) != digest}
    carried = tuple(sorted(p for p in rendered.kept if facts.files.get(p, IRREGULAR) != IRREGULAR))
    copied = (
        previous is not None
        and (len(upload) < len(rendered.files) or bool(carried))
        and IRREGULAR not in facts.files.values()
    )
    if not copied:
        upload = set(rendered.files)
    contents: dict[str, bytes] = {path: rendered.files[path].encode() for path in upload}
    contents.update(
        {
            MARKER: marker.to_json(),  # the stage makes the deployed one from it (scripts.deployed_marker)
            MODEL: encode_model(model),
            **(operator.record() if operator is not None else {}),
        }
    )
    deploy = Deploy(
        layout,
        release,
        node.nginx.test_command,
        reload_script(node.nginx.reload_command, probe_address(node)),
        node.nginx.error_log,
        rendered.revision,
        probe_function(probe_address(node), facts.probe_tool) if _can_probe(facts, rendered.files) else None,
        settings.verify_timeout,
        base=previous if copied else None,
        removed=_removed(node, facts, rendered, operator is None) if copied else (),
        carried=tuple(_safe(node.name, p) for p in carried) if previous is not None and not copied else (),
        previous=previous,
        listeners=tcp_listeners(node, model, rendered.files),
        probe_tool=facts.probe_tool,
    )
    commands = deploy.steps()
    script, boundary = steps_script(commands, deploy.restore())
    timeout = settings.verify_timeout + (transport.command_timeout or 0)
    answer = transport.run(script, input=_tar(transport.name, contents), timeout=timeout)
    steps = parse_steps(answer, boundary, list(commands))
    failed, result = next(reversed(steps.items()), ("stage", CommandResult(answer.exit_code or 1, b"", answer.stderr)))
    if failed == "marker" and result.ok:
        return len(upload)
    if result.ok:  # the script broke off after a step that succeeded (the shell died, sudo refused)
        failed, result = _broke_off(failed, answer)
    if failed == "stage":
        raise NodeError(node.name, Step.STAGE, f"cannot write the new release {release}", result.stderr)
    if failed == "switch":
        raise NodeError(node.name, Step.SWITCH, f"cannot link {layout.config_dir} to {release}", result.stderr)
    if failed == "test":
        _switch_back(transport, layout, previous)
        transport.run(["rm", "-rf", "--", release])
        message = f"{node.nginx.test_command!r} refused the new configuration"
        raise NodeError(node.name, Step.TEST, message, result.stderr or result.stdout)
    if failed == "marker":
        raise NodeError(node.name, Step.MARKER, f"cannot mark {release} deployed", result.stderr, reloaded=True)
    if failed == "reload":
        stderr = result.stderr.decode("utf-8", "replace").strip()
        problem = f"{node.nginx.reload_command!r} failed (exit {result.exit_code}): {stderr}"
    else:  # verify (prune and size always succeed)
        problem = verify_outcome(
            result, rendered.revision, deploy.probe is not None, settings.verify_timeout, stream_include(node)
        )
    outcome = _roll_back(transport, node, layout, previous, facts, settings)
    raise NodeError(
        node.name,
        Step.RELOAD if failed == "reload" else Step.VERIFY,
        f"{problem}; {outcome}",
        reloaded=True,
        rolled_back=True,
    )


def _removed(node: AccessNode, facts: Facts, rendered: RenderedAccessNode, unrecorded: bool) -> tuple[str, ...]:
    """The paths of the live release the new one does not have (the refused upstreams' files
    stay; ``unrecorded``: nor the record of the operator's configuration, which the copy would
    carry over)."""
    removed = {_safe(node.name, p) for p in set(facts.files) - set(rendered.files) - rendered.kept}
    return tuple(sorted(removed | ({RECORD, RECORD_PATHS} if unrecorded else set())))


def _broke_off(last: str, answer: CommandResult) -> tuple[str, CommandResult]:
    """Which step to report when the deploy script stopped after ``last`` succeeded: the next one,
    failed (so that a switched node is switched back, a reloaded one rolled back)."""
    following = {"stage": "switch", "prune": "switch", "switch": "test", "test": "reload", "size": "reload"}
    step = following.get(last, "verify")
    stderr = f"the deploy script stopped after {last} (exit {answer.exit_code})\n".encode() + answer.stderr
    return step, CommandResult(answer.exit_code or 1, b"", stderr)


def _tar(node: str, contents: Mapping[str, bytes]) -> bytes:
    """The release as one gzip-compressed tar stream (paths relative to the release directory).

    Compressed because the bytes are sent by a worker thread that competes for the GIL with
    rendering and the other nodes' workers (a 32 KiB packet at a time): 100 upstreams' files
    are ~290 KB as a tar, ~25 KB compressed. zlib releases the GIL while it works.
    """
    members = sorted((_safe(node, p).encode(), d) for p, d in contents.items())
    mtime = int(time.time())
    if all(len(name) <= USTAR_NAME for name, _ in members):
        archive = _ustar(members, mtime)
    else:  # a long name: tarfile's PAX headers
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, data in members:
                info = tarfile.TarInfo(name.decode())
                info.size, info.mode, info.mtime = len(data), 0o644, mtime
                tar.addfile(info, io.BytesIO(data))
        archive = buffer.getvalue()
    return gzip.compress(archive, compresslevel=1, mtime=0)


USTAR_NAME = 100  # bytes of a member's name in a ustar header (longer: a PAX header)


def _ustar(members: list[tuple[bytes, bytes]], mtime: int) -> bytes:
    """A POSIX ustar archive of regular files (mode 0644, owner 0), names of at most 100 bytes.

    What ``tarfile`` writes for these members, in a fifth of its time: tarfile builds every
    header field by field (about 40 us a member: 40 ms of the controller's CPU per access node
    at 1,000 files, on the main thread's GIL); here a header is one template, the name, the size
    and the checksum. tests/deploy reads these archives back with tarfile and GNU tar unpacks
    them on every node."""
    parts: list[bytes | bytearray] = []
    stamp = b"%011o\0" % mtime
    for name, data in members:
        header = bytearray(_USTAR_TEMPLATE)
        header[0 : len(name)] = name
        header[124:136] = b"%011o\0" % len(data)
        header[136:148] = stamp
        header[148:156] = b"%06o\0 " % sum(header)  # the checksum counts its own field as spaces
        parts += (header, data, bytes(-len(data) % 512))
    parts.append(bytes(1024))  # the end of the archive: two zero blocks
    return b"".join(parts)


def _ustar_template() -> bytes:
    header = bytearray(512)
    header[100:108] = b"0000644\0"  # mode
    header[108:124] = b"0000000\0" * 2  # uid, gid
    header[148:156] = b" " * 8  # the checksum, while it is summed
    header[156:157] = b"0"  # a regular file
    header[257:265] = b"ustar\x0000"  # magic and version
    return bytes(header)


_USTAR_TEMPLATE = _ustar_template()


def _safe(node: str, path: str) -> str:
    """``path`` when it stays inside the release (it is written or removed there)."""
    if path.startswith("/") or ".." in path.split("/"):
        raise NodeError(node, Step.STAGE, f"refusing to write outside the release: {path!r}")
    return path


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


def _switch(transport: Transport, layout: NodeLayout, target: str) -> None:
    result = transport.run(switch_script(layout, target))
    if not result.ok:
        raise NodeError(transport.name, Step.SWITCH, f"cannot link {layout.config_dir} to {target}", result.stderr)


def _switch_back(transport: Transport, layout: NodeLayout, previous: str | None) -> None:
    if previous is not None:
        _switch(transport, layout, previous)
    else:  # nothing was deployed before: no managed files at all
        transport.run(["rm", "-f", "--", layout.config_dir], check=True)


def _can_probe(facts: Facts, files: Mapping[str, str]) -> bool:
    """Whether verify can ask nginx for its revision: the default server is in the release and
    the node has curl, wget or python3 (without them only the error log is read)."""
    return DEFAULT_FILE in files and facts.probe_tool is not None


def tcp_listeners(node: AccessNode, model: Mapping[str, Any], files: Mapping[str, str]) -> tuple[str, ...]:
    """``host:port`` (as seen from the node) of every tcp upstream rendered into ``files``."""
    ports = {
        upstream.get("listen", {}).get("port")
        for name, upstream in model.get("upstreams", {}).items()
        if upstream.get("listen", {}).get("protocol") == "tcp" and f"stream/{name}.conf" in files
    }
    return tuple(probe_address(node, port) for port in sorted(p for p in ports if isinstance(p, int)))


def stream_include(node: AccessNode) -> str:
    """The line nginx.conf's ``stream {}`` needs (docs/render.md)."""
    return f"include {posixpath.join(node.nginx.config_dir, 'stream')}/*.conf;"


def _roll_back(
    transport: Transport,
    node: AccessNode,
    layout: NodeLayout,
    previous: str | None,
    facts: Facts,
    settings: ApplySettings,
) -> str:
    """Link the previous release again, reload it and verify it; say how that went (one round trip)."""
    try:
        old = facts.marker.revision if facts.marker and previous else None
        probe = probe_function(probe_address(node), facts.probe_tool) if _can_probe(facts, facts.files) else None
        commands = {
            "switch": switch_script(layout, previous) if previous else f"rm -f -- {shlex.quote(layout.config_dir)}",
            "size": settled_log_size(node.nginx.error_log),  # after the failed reload's last line
            "reload": reload_script(node.nginx.reload_command, probe_address(node)),
        }
        if old is not None:
            commands["verify"] = verify_script(old, probe, node.nginx.error_log, "$size", settings.verify_timeout)
        script, boundary = steps_script(commands)
        steps = parse_steps(transport.run(script, timeout=settings.verify_timeout + 60), boundary, list(commands))
        failed, result = next(reversed(steps.items()), ("switch", CommandResult(1, b"", b"")))
        if failed == "switch" and not result.ok:
            return f"rollback failed: cannot link {layout.config_dir} back: {result.stderr.decode('utf-8', 'replace').strip()}"
        if failed == "reload" and not result.ok:
            stderr = result.stderr.decode("utf-8", "replace").strip()
            return f"rolled back the files, but reloading them failed too: {stderr}"
        if failed == "verify" and old is not None:
            problem = verify_outcome(result, old, probe is not None, settings.verify_timeout)
            if problem:
                return f"rolled back to the previous release, but {problem}"
        return "rolled back to the previous release and reloaded it"
    except ObreconcileError as e:
        return f"rollback failed: {e}"
