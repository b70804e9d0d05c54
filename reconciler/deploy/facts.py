"""Facts about an access node: what is deployed there, read in one round trip.

Each fact is a shell command and a pure parser of its output (pyinfra's habit), all run
through ``Transport.run_batch``; the parsers are tested with recorded outputs. Content of
files is not read here: ``plan`` fetches only the files whose digest differs, for a diff.
"""

from __future__ import annotations

import datetime
import gzip
import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from reconciler.deploy.layout import NodeLayout
from reconciler.deploy.operator import OperatorConfig, parse_record, record_command
from reconciler.deploy.probe import served_command
from reconciler.manifest.model import AccessNode
from reconciler.transport.base import CommandResult, Transport

MARKER_FORMAT = 1
IRREGULAR = "not a regular file"  # the "digest" of a link, fifo or device in the managed directory


class MarkerState(StrEnum):
    STAGED = "staged"  # switched, not yet verified
    DEPLOYED = "deployed"  # verified live


@dataclass(frozen=True)
class Marker:
    """What obreconcile recorded on the node when it deployed the live release."""

    revision: str  # the render revision (digest of what the files are made of)
    store_id: str  # which desired-state store the push came from
    store_revision: int  # that store's revision: pushes carrying an older one are refused
    digests: Mapping[str, str]  # relative path -> sha256 of every managed file
    state: MarkerState
    deployed_by: str = ""
    deployed_at: str = ""
    release: str = ""
    inputs: Mapping[str, str] = field(default_factory=dict)  # relative path -> what it was rendered from

    def to_json(self) -> bytes:
        document = {
            "format": MARKER_FORMAT,
            "revision": self.revision,
            "store_id": self.store_id,
            "store_revision": self.store_revision,
            "digests": dict(sorted(self.digests.items())),
            "state": self.state,
            "deployed_by": self.deployed_by,
            "deployed_at": self.deployed_at,
            "release": self.release,
            "inputs": dict(sorted(self.inputs.items())),
        }
        return (json.dumps(document, indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Marker:
        data = json.loads(raw)
        return cls(
            str(data["revision"]),
            str(data.get("store_id", "")),
            int(data.get("store_revision", 0)),
            {str(k): str(v) for k, v in data.get("digests", {}).items()},
            MarkerState(str(data.get("state", "deployed"))),
            str(data.get("deployed_by", "")),
            str(data.get("deployed_at", "")),
            str(data.get("release", "")),
            {str(k): str(v) for k, v in data.get("inputs", {}).items()},
        )


class TlsFileState(StrEnum):
    """What the access node says of a certificate or key an upstream names (never its content)."""

    OK = "ok"  # a key that exists and is readable; a certificate whose expiry was read
    PRESENT = "present"  # a readable certificate whose expiry is unknown: no openssl on the node
    MISSING = "missing"
    UNREADABLE = "unreadable"
    INVALID = "invalid"  # openssl could not read it as a certificate

    @property
    def refused(self) -> bool:
        return self in (TlsFileState.MISSING, TlsFileState.UNREADABLE, TlsFileState.INVALID)


@dataclass(frozen=True)
class TlsFile:
    """A certificate or key of an upstream on the node: its state and (certificates) its expiry."""

    state: TlsFileState
    not_after: float | None = None  # seconds since the epoch


@dataclass(frozen=True)
class TlsReference:
    """Where the model names a file on the node: ``upstream api: tls.certificate /etc/ssl/a.pem``."""

    upstream: str
    field: str  # tls.certificate | tls.key
    path: str

    @property
    def certificate(self) -> bool:
        return self.field == "tls.certificate"


def tls_references(model: Mapping[str, Any]) -> list[TlsReference]:
    """The certificates and keys the upstreams of a node model (``plan.node_model``) name."""
    out = []
    for name, upstream in sorted((model.get("upstreams") or {}).items()):
        tls = upstream.get("tls") if isinstance(upstream, Mapping) else None
        if isinstance(tls, Mapping):
            for key in ("certificate", "key"):
                if isinstance(tls.get(key), str):
                    out.append(TlsReference(name, f"tls.{key}", tls[key]))
    return out


@dataclass(frozen=True)
class Facts:
    """The live state of one access node's managed configuration."""

    access_node: str
    nginx_version: str | None  # None: nginx is not installed (or not on PATH)
    link: str | None  # target of the config_dir symlink; "" a real directory; None absent
    files: Mapping[str, str]  # relative path -> sha256 of each live managed file (IRREGULAR: not a file)
    marker: Marker | None
    marker_problem: str = ""  # set when a marker exists but cannot be read
    error_log_size: int | None = None
    probe_tool: str | None = None  # curl, wget or python3: how verify asks nginx for its revision
    served: str | None = None  # the revision nginx answers now (None: unknown, no bash or no answer)
    # The model recorded at the last deploy (.obreconcile/model.json.gz), read only by plan for
    # its object-level view; None when not read ({} when there is nothing deployed).
    model: Mapping[str, Any] | None = None
    tls: Mapping[str, TlsFile] = field(default_factory=dict)  # path -> what the node says of it
    # the operator's nginx.conf as the live release recorded it, when none of its files changed
    operator: OperatorConfig | None = None
    # (files hashed, files) when the live release's stat record answered for the others
    hashed: tuple[int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "access_node": self.access_node,
            "nginx_version": self.nginx_version,
            "link": self.link,
            "files": dict(sorted(self.files.items())),
            "marker_revision": self.marker.revision if self.marker else None,
            "marker_state": self.marker.state if self.marker else None,
            "marker_store_revision": self.marker.store_revision if self.marker else None,
            **({"tls": {p: [f.state.value, f.not_after] for p, f in sorted(self.tls.items())}} if self.tls else {}),
            # a saved plan is refused when the operator's nginx.conf (as recorded) changed since
            **({"operator": dict(sorted(self.operator.files.items()))} if self.operator else {}),
        }


def fact_commands(node: AccessNode, tls: Sequence[TlsReference] = ()) -> dict[str, str]:
    """The shell commands that read every fact of ``node``, by name; ``tls``: the certificates
    and keys its upstreams name (existence and readability; a certificate's expiry with openssl,
    when the node has it). No file's content ever leaves the node."""
    layout = NodeLayout.of(node)
    d = shlex.quote(layout.config_dir)
    return {
        "nginx": "nginx -v 2>&1",
        "link": f"if [ -L {d} ]; then readlink -- {d}; elif [ -d {d} ]; then echo DIRECTORY; else echo ABSENT; fi",
        "files": files_command(layout.config_dir),
        "marker": f"cat -- {shlex.quote(layout.marker)} 2>/dev/null || true",
        "errlog": f"stat -c %s -- {shlex.quote(node.nginx.error_log)} 2>/dev/null || true",
        "probe": "command -v curl || command -v wget || command -v python3 || true",
        "served": served_command(node),
        "operator": record_command(layout),
    } | ({"tls": tls_command(tls)} if tls else {})


# The stat record (``STAT_RECORD``, in every release, written by the stage step: scripts.py):
# one line per managed file, ``<sha256> <size> <mtime> <ctime> <inode><TAB>./<path>``, the
# times as GNU find prints them (seconds, a dot, ten digits). The facts hash only the files
# whose stat is not the recorded one, or whose ctime is not older than the record itself
# (git's racy-clean rule: the stage stamps the record 20 ms after the last file was written;
# a change in the same tick as the stamp is hashed). ctime cannot be set back by a user: a
# hand edit that keeps the size and puts the mtime back is still hashed, and seen as drift.
STAT_RECORD = ".obreconcile/stat"
LISTING = (  # every managed file's stat and path; anything neither a file nor a directory: "I" and its path
    "find . -path ./.obreconcile -prune -o -type f -printf '%s %T@ %C@ %i\\t%p\\n' -o ! -type d -printf 'I\\t%p\\n'"
)
# awk: ``older(a, b)``: a is earlier than b (GNU find's times: same width, compared as strings)
AWK_OLDER = 'function older(a, b) { a = a ""; b = b ""; return length(a) == length(b) ? a < b : a + 0 < b + 0 }'
HASHED = "# hashed "  # the files fact's last line: ``# hashed <files hashed> of <files>``
HASH = "xargs -r -d '\\n' sha256sum --"  # the paths on stdin, one a line


def files_command(config_dir: str) -> str:
    """sha256sum's lines (``<hex>  ./<path>``) of every managed file live in ``config_dir``, and
    the path alone of anything neither a file nor a directory (a link, a fifo).

    With the live release's stat record (GNU find and awk on the node) only the files whose
    stat differs from it are hashed, the others answer with their recorded digest; the last
    line counts them (``# hashed 2 of 10001``). Without it (a release staged before it
    existed, an adopted directory, a node without GNU find): every file is hashed."""
    d = shlex.quote(config_dir)
    every = "find . -path ./.obreconcile -prune -o -type f -exec sha256sum -- {} + -o ! -type d -print"
    # trusted lines are printed at the end, once sha256sum (writing to the same stdout) is done
    program = (
        f"{AWK_OLDER}\n"
        'NR == FNR { i = index($1, " "); sha[$2] = substr($1, 1, i - 1); st[$2] = substr($1, i + 1); next }\n'
        '$1 == "I" { out[++n] = $2; total++; next }\n'
        '{ split($1, f, " "); total++\n'
        '  if (($2 in st) && st[$2] == $1 && older(f[3], stamp)) out[++n] = sha[$2] "  " $2\n'
        "  else { print $2 | hash; hashed++ } }\n"
        'END { close(hash); for (k = 1; k <= n; k++) print out[k]; printf "%s%d of %d\\n", done, hashed, total }'
    )
    cached = (
        f"stamp=$(find {STAT_RECORD} -printf '%T@' 2>/dev/null) && [ -n \"$stamp\" ] && "
        f"{LISTING} | awk -F '\t' -v stamp=\"$stamp\" -v hash={shlex.quote(HASH)} -v done={shlex.quote(HASHED)} "
        f"{shlex.quote(program)} {STAT_RECORD} -"
    )
    return f"cd {d} 2>/dev/null || exit 0; if [ -f {STAT_RECORD} ] && {cached}; then :; else {every}; fi"


def tls_command(references: Sequence[TlsReference]) -> str:
    """One line per file: ``<state> <path>``, or ``cert <path> notAfter=<date>``."""
    certificates = sorted({r.path for r in references if r.certificate})
    keys = sorted({r.path for r in references if not r.certificate})
    exists = 'if [ ! -e "$p" ]; then echo "missing $p"; elif [ ! -r "$p" ]; then echo "unreadable $p"; '
    parts = []
    if certificates:
        parts.append(
            f"for p in {' '.join(map(shlex.quote, certificates))}; do {exists}"
            'elif ! command -v openssl >/dev/null 2>&1; then echo "present $p"; '
            'elif e=$(openssl x509 -enddate -noout -in "$p" 2>/dev/null); then echo "cert $p $e"; '
            'else echo "invalid $p"; fi; done'
        )
    if keys:
        parts.append(f'for p in {" ".join(map(shlex.quote, keys))}; do {exists}else echo "ok $p"; fi; done')
    return "; ".join(parts)


def parse_tls(result: CommandResult) -> dict[str, TlsFile]:
    """Path -> TlsFile from ``tls_command``'s lines (paths have no spaces: the schema's class)."""
    out = {}
    for line in result.text.splitlines():
        word, _, rest = line.partition(" ")
        if word == "cert":
            path, _, end = rest.partition(" ")
            when = end.partition("=")[2].strip()
            try:
                parsed = datetime.datetime.strptime(when, "%b %d %H:%M:%S %Y GMT").replace(tzinfo=datetime.UTC)
            except ValueError:
                out[path] = TlsFile(TlsFileState.INVALID)
                continue
            out[path] = TlsFile(TlsFileState.OK, parsed.timestamp())
        elif word in set(TlsFileState) and rest:
            out[rest] = TlsFile(TlsFileState(word))
    return out


def parse_nginx_version(result: CommandResult) -> str | None:
    """'1.22.1' from 'nginx version: nginx/1.22.1'; None when nginx did not run."""
    text = (result.stdout + result.stderr).decode("utf-8", "replace")
    for line in text.splitlines():
        if "nginx version:" in line:
            return line.split("/", 1)[-1].strip() if "/" in line else line.split(":", 1)[1].strip()
    return None


def parse_link(result: CommandResult) -> str | None:
    text = result.text.strip()
    if text == "ABSENT" or not text:
        return None
    if text == "DIRECTORY":
        return ""
    return text


def parse_digests(result: CommandResult) -> dict[str, str]:
    """``sha256sum`` lines ('<hex>  ./http/a.conf') -> {'http/a.conf': '<hex>'}; a path alone
    ('./http/link.conf': not a regular file) -> ``IRREGULAR``, which no rendered file's digest is."""
    digests = {}
    for line in result.text.splitlines():
        if line.startswith("./"):
            digests[line[2:]] = IRREGULAR
            continue
        digest, _, path = line.partition("  ")
        if len(digest) == 64 and path:
            digests[path[2:] if path.startswith("./") else path] = digest
    return digests


def parse_hashed(result: CommandResult) -> tuple[int, int] | None:
    """(files hashed, files) from the files fact's last line, when the stat record was read."""
    lines = result.text.rstrip("\n").rsplit("\n", 1)
    words = lines[-1][len(HASHED) :].split(" of ") if lines[-1].startswith(HASHED) else []
    return (int(words[0]), int(words[1])) if len(words) == 2 and all(w.isdigit() for w in words) else None


def parse_marker(result: CommandResult) -> tuple[Marker | None, str]:
    raw = result.stdout.strip()
    if not raw:
        return None, ""
    try:
        return Marker.from_json(raw), ""
    except (ValueError, KeyError, TypeError) as e:
        return None, f"the marker cannot be read ({e}); the node is treated as never deployed"


def parse_size(result: CommandResult) -> int | None:
    text = result.text.strip()
    return int(text) if text.isdigit() else None


def parse_probe_tool(result: CommandResult) -> str | None:
    """'curl' from '/usr/bin/curl' (the first of curl, wget, python3 found), or None."""
    lines = result.text.split()
    return lines[0].rsplit("/", 1)[-1] if lines else None


def parse_facts(access_node: str, results: Mapping[str, CommandResult]) -> Facts:
    """Facts from the outputs of ``fact_commands`` (a pure function)."""
    marker, problem = parse_marker(results["marker"])
    return Facts(
        access_node=access_node,
        nginx_version=parse_nginx_version(results["nginx"]),
        link=parse_link(results["link"]),
        files=parse_digests(results["files"]),
        hashed=parse_hashed(results["files"]),
        marker=marker,
        marker_problem=problem,
        error_log_size=parse_size(results["errlog"]),
        probe_tool=parse_probe_tool(results["probe"]) if "probe" in results else None,
        tls=parse_tls(results["tls"]) if "tls" in results else {},
        served=parse_served(results["served"]) if "served" in results else None,
        operator=parse_record(results["operator"].text) if "operator" in results else None,
    )


def parse_served(result: CommandResult) -> str | None:
    """A revision (16 hex digits) nginx answered, or None."""
    text = result.text.strip()
    return text if len(text) == 16 and all(c in "0123456789abcdef" for c in text) else None


def observe(
    node: AccessNode, transport: Transport, with_model: bool = False, tls: Sequence[TlsReference] = ()
) -> Facts:
    """Read every fact of ``node`` in one round trip (two ``with_model``: the recorded model);
    ``tls``: the certificates and keys to look at (``tls_references`` of the desired model)."""
    facts = parse_facts(node.name, transport.run_batch(fact_commands(node, tls)))
    if not with_model:
        return facts
    raw = transport.read_file(NodeLayout.of(node).model) if facts.marker is not None else None
    return replace(facts, model=decode_model(raw) if raw else {})


class NodeModel(dict[str, Any]):
    """A node's model (``{"access_node": ..., "upstreams": {name: manifest}}``) that keeps the JSON
    of each upstream's manifest form in ``encoded``, and the compressed upstreams of each set of
    upstream names in ``members`` (encode_model): dicts shared by the nodes of one run."""

    def __init__(
        self,
        access_node: dict[str, Any],
        upstreams: dict[str, Any],
        encoded: dict[str, str],
        members: dict[tuple[str, ...], bytes],
    ) -> None:
        super().__init__(access_node=access_node, upstreams=upstreams)
        self.encoded = encoded
        self.members = members


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def encode_model(model: Mapping[str, Any]) -> bytes:
    """The model as the node keeps it: compact JSON with sorted keys, gzip-compressed.

    A model of an access node and its upstreams is two gzip members (a gzip file may hold
    several; every reader gives their concatenation): the access node's, and its upstreams'.
    A ``NodeModel`` makes the second from its upstreams' shared JSON, once for all the nodes of
    a run that serve the same upstreams (at 10,000 upstreams the JSON is 13 MB: ~0.25 s per
    node); a plain dict of the same model gives the same bytes."""
    upstreams = model.get("upstreams")
    if set(model) != {"access_node", "upstreams"} or not isinstance(upstreams, Mapping):
        return gzip.compress(_compact(model).encode(), compresslevel=6, mtime=0)
    encoded, members = (model.encoded, model.members) if isinstance(model, NodeModel) else ({}, {})
    names = tuple(sorted(upstreams))
    member = members.get(names)
    if member is None:
        for name in names:
            if name not in encoded:
                encoded[name] = _compact(upstreams[name])
        parts = ",".join(f"{_compact(name)}:{encoded[name]}" for name in names)
        member = members[names] = gzip.compress(f"{parts}}}}}".encode(), compresslevel=6, mtime=0)
    head = f'{{"access_node":{_compact(model["access_node"])},"upstreams":{{'
    return gzip.compress(head.encode(), compresslevel=6, mtime=0) + member


def decode_model(raw: bytes) -> dict[str, Any]:
    """The recorded model; {} when it cannot be read (the plan then shows every object as new)."""
    try:
        model = json.loads(gzip.decompress(raw))
    except (OSError, ValueError, EOFError):
        return {}
    return model if isinstance(model, dict) else {}
