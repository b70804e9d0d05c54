"""The desired state as frozen dataclasses: the only form of the manifests later stages see.

Objects are built here only from documents that passed validation, with every default
of SPEC.md section 1 filled in, so that no later stage ever looks a default up again.
``to_manifest`` turns an object back into the manifest form (for the store and the API).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import Field, dataclass, field, fields
from enum import StrEnum
from typing import Any

API_VERSION = "openbalancer/v1"
KINDS = ("Group", "User", "Check", "Upstream", "AccessNode")
FORCE_STATUS = {"u": "up", "d": "down", "n": "normal", "up": "up", "down": "down", "normal": "normal"}
DEFAULT_HTTP_CHECK = "GET / 200-399"
HTTP_METHODS = ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE")
"""The methods a check may send (the schema's allow-list)."""

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def duration_seconds(text: str) -> float:
    """Seconds in an nginx time as the schemas allow it ('500ms', '10s', '1m', '30')."""
    digits = text.rstrip("mshd")
    unit = text[len(digits) :] or "s"
    return int(digits) * _UNITS_MS[unit] / 1000


def split_hostport(hostname: str, default_port: int) -> tuple[str, int]:
    """('app1.internal', 8080) from 'app1.internal:8080'; IPv6 literals keep no brackets."""
    if hostname.startswith("["):
        host, _, rest = hostname[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    host, sep, port = hostname.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return hostname, default_port


@dataclass(frozen=True)
class Source:
    """Where an object came from: a manifest file and line, or an API user."""

    file: str = ""
    line: int = 0


@dataclass(frozen=True)
class Group:
    name: str
    global_permissions: tuple[str, ...] = ()
    source: Source = field(default=Source(), compare=False, repr=False)


@dataclass(frozen=True)
class User:
    name: str
    password_hash: str
    groups: tuple[str, ...]
    full_name: str = ""
    enabled: bool = True
    source: Source = field(default=Source(), compare=False, repr=False)


@dataclass(frozen=True)
class Check:
    name: str
    owner: str
    base_check: BaseCheck
    string: str = ""
    interval: str = "5s"
    timeout: str = "2s"
    rise: int = 2
    fall: int = 3
    source: Source = field(default=Source(), compare=False, repr=False)
    host: str | None = None  # http(s): the Host header sent
    expect: str | None = None  # http(s): a text the body must contain

    @property
    def request(self) -> str:
        """The string with the default filled in for http and https."""
        if self.base_check == BaseCheck.TCP:
            return ""
        return self.string or DEFAULT_HTTP_CHECK


@dataclass(frozen=True)
class Backend:
    """A backend node of an upstream (the API's 'node')."""

    hostname: str
    weight: int = 1
    max_fails: int = 1
    fail_timeout: str = "10s"
    force_status: str = "normal"
    failover: int = 0

    @property
    def address(self) -> tuple[str, int]:
        return split_hostport(self.hostname, 80)


@dataclass(frozen=True)
class AclRule:
    group_name: str
    rule: str


class BaseCheck(StrEnum):
    """SPEC.md §3's base checks: what every check is built on."""

    TCP = "tcp"
    HTTP = "http"
    HTTPS = "https"


BASE_CHECKS = tuple(BaseCheck)


class Method(StrEnum):
    """An upstream's balancing method (schemas/upstream.schema.json ``balancing.method``)."""

    ROUND_ROBIN = "round_robin"
    LEAST_CONN = "least_conn"
    IP_HASH = "ip_hash"
    HASH = "hash"
    RANDOM = "random"
    RANDOM_TWO_LEAST_CONN = "random_two_least_conn"

    @property
    def takes_backup(self) -> bool:
        """nginx: 'balancing method does not support parameter "backup"' for the others."""
        return self in (Method.ROUND_ROBIN, Method.LEAST_CONN)


STREAM_METHODS = frozenset(Method) - {Method.IP_HASH}
"""The methods nginx's stream module has (ip_hash is http only)."""

HASH_KEY = re.compile(r"\$(remote_addr|request_uri|host|cookie_[A-Za-z0-9_]{1,64})")
"""The allow-list of ``balancing.key``: the same as the schema's pattern (group 1: the variable)."""
STREAM_HASH_KEYS = frozenset({"$remote_addr"})


@dataclass(frozen=True)
class Balancing:
    method: Method = Method.ROUND_ROBIN
    key: str | None = None
    consistent: bool = False


class RetryCondition(StrEnum):
    """nginx's ``proxy_next_upstream`` conditions."""

    ERROR = "error"
    TIMEOUT = "timeout"
    INVALID_HEADER = "invalid_header"
    HTTP_500 = "http_500"
    HTTP_502 = "http_502"
    HTTP_503 = "http_503"
    HTTP_504 = "http_504"
    HTTP_403 = "http_403"
    HTTP_404 = "http_404"
    HTTP_429 = "http_429"
    NON_IDEMPOTENT = "non_idempotent"
    OFF = "off"


HEADER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,63}")
HEADER_VALUE = re.compile(r"[A-Za-z0-9._:/\[\]*@+=,~%-]{1,256}")
HEADER_VARIABLES = frozenset(
    {
        "$remote_addr",
        "$remote_port",
        "$scheme",
        "$host",
        "$request_id",
        "$request_uri",
        "$server_name",
        "$server_port",
        "$ssl_protocol",
        "$ssl_cipher",
        "$ssl_server_name",
    }
)
"""The allow-lists of ``proxy.headers`` (the same as the schema's)."""
RESERVED_HEADERS = frozenset(
    {
        "host",
        "connection",
        "upgrade",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "content-length",
        "proxy-connection",
        "x-real-ip",
        "x-forwarded-for",
        "x-forwarded-proto",
    }
)
"""Headers obreconcile sets itself, and hop-by-hop headers: not settable through ``proxy.headers``."""


@dataclass(frozen=True)
class Retries:
    conditions: tuple[RetryCondition, ...] = (RetryCondition.ERROR, RetryCondition.TIMEOUT)
    tries: int = 0
    timeout: str = "0"


@dataclass(frozen=True)
class Header:
    """An extra request header: a fixed ``value`` or an allow-listed nginx ``variable``."""

    name: str
    value: str | None = None
    variable: str | None = None


@dataclass(frozen=True)
class BackendTls:
    server_name: str | None = None
    verify: bool = True
    ca_certificate: str | None = None


@dataclass(frozen=True)
class HttpProxy:
    """How an http upstream is proxied; the defaults are what was rendered before these existed."""

    connect_timeout: str = "5s"
    send_timeout: str = "60s"
    read_timeout: str = "60s"
    client_max_body_size: str | None = None
    buffering: bool = True
    websockets: bool = False
    retries: Retries = Retries()
    keepalive: int = 16
    headers: tuple[Header, ...] = ()
    backend_protocol: str = "http"
    backend_tls: BackendTls | None = None


@dataclass(frozen=True)
class TcpProxy:
    connect_timeout: str = "5s"
    timeout: str = "10m"
    proxy_protocol: bool = False


OMIT_DEFAULT = {"omit_default": True}
"""Field metadata: ``to_manifest`` leaves the field out while it has its default (or, for a
section, equals its type's default ``type(value)()``), so that objects that do not use a newer
field keep the manifest form they had before it existed."""


@dataclass(frozen=True)
class Listen:
    protocol: str = "http"
    server_names: tuple[str, ...] = ()
    port: int | None = None
    path: str = field(default="/", metadata=OMIT_DEFAULT)
    strip_path: bool = field(default=False, metadata=OMIT_DEFAULT)


@dataclass(frozen=True)
class RateLimit:
    rps: int
    burst: int = 0
    clients: int = 100_000

    @property
    def zone_megabytes(self) -> int:
        """nginx keeps about 16,000 client states (64 bytes each) per megabyte of zone."""
        return max(1, -(-self.clients // 16_000))


@dataclass(frozen=True)
class Access:
    """Which clients may reach an http upstream (networks as written, validated) and how fast."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    rate_limit: RateLimit | None = None


@dataclass(frozen=True)
class Hsts:
    max_age: int = 31536000
    include_subdomains: bool = False
    preload: bool = False


@dataclass(frozen=True)
class Tls:
    """TLS termination of an http upstream: a certificate and key by their paths on the access node."""

    certificate: str
    key: str
    redirect_http: bool = False
    hsts: Hsts | None = None


@dataclass(frozen=True)
class Upstream:
    name: str
    owner: str
    listen: Listen
    min_servers: int = 1
    checks: tuple[str, ...] = ()
    nodes: tuple[Backend, ...] = ()
    acl: tuple[AclRule, ...] = ()
    description: str | None = None  # for people (the dashboard shows it); absent when None
    source: Source = field(default=Source(), compare=False, repr=False)
    balancing: Balancing = field(default=Balancing(), metadata=OMIT_DEFAULT)
    proxy: HttpProxy | TcpProxy = field(default=HttpProxy(), metadata=OMIT_DEFAULT)
    tls: Tls | None = None
    access: Access = field(default=Access(), metadata=OMIT_DEFAULT)


@dataclass(frozen=True)
class Connection:
    type: str = "ssh"
    host: str = ""
    port: int = 22
    user: str | None = None
    identity_file: str | None = None
    sudo: bool = False


@dataclass(frozen=True)
class NginxSettings:
    config_dir: str = "/etc/nginx/openbalancer"
    test_command: str = "nginx -t"
    reload_command: str = "nginx -s reload"
    error_log: str = "/var/log/nginx/error.log"


@dataclass(frozen=True)
class AccessNode:
    name: str
    owner: str
    connection: Connection
    description: str = ""
    listen_address: str = "*"
    upstreams: tuple[str, ...] = ()
    nginx: NginxSettings = NginxSettings()
    source: Source = field(default=Source(), compare=False, repr=False)
    https_port: int = field(default=443, metadata=OMIT_DEFAULT)
    http2: bool = field(default=True, metadata=OMIT_DEFAULT)

    @property
    def http_port(self) -> int:
        return split_hostport(self.name, 80)[1]


@dataclass(frozen=True)
class DesiredState:
    """Every object of the desired state, by kind and name."""

    groups: Mapping[str, Group] = field(default_factory=dict)
    users: Mapping[str, User] = field(default_factory=dict)
    checks: Mapping[str, Check] = field(default_factory=dict)
    upstreams: Mapping[str, Upstream] = field(default_factory=dict)
    access_nodes: Mapping[str, AccessNode] = field(default_factory=dict)

    def of_kind(self, kind: str) -> Mapping[str, Any]:
        return {
            "Group": self.groups,
            "User": self.users,
            "Check": self.checks,
            "Upstream": self.upstreams,
            "AccessNode": self.access_nodes,
        }[kind]

    @classmethod
    def from_kinds(cls, by_kind: Mapping[str, Mapping[str, Any]]) -> DesiredState:
        """A desired state from objects by kind, then by name (a missing kind is empty)."""
        return cls(*(dict(by_kind.get(kind, {})) for kind in KINDS))

    @classmethod
    def from_documents(cls, documents: Iterable[Mapping[str, Any]], source: Source = Source()) -> DesiredState:
        """A desired state from schema-valid manifest documents (no rule is checked here)."""
        by_kind: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
        for doc in documents:
            by_kind[doc["kind"]][doc["name"]] = build_object(doc["kind"], doc, source)
        return cls.from_kinds(by_kind)


def whole_number(value: float) -> int | float:
    """One rule for numbers, wherever a document comes from (manifests, API bodies): a number
    with an integral value is that integer (``2.0`` is ``2``, as JSON Schema's "integer" says,
    Draft 2020-12), so that the store, the API and the renderer all hold ``2``. Any other
    fraction stays a float, which every schema refuses (no field takes a fraction)."""
    return int(value) if math.isfinite(value) and value.is_integer() else value


def whole_numbers(value: Any) -> Any:
    """``value`` (a JSON-like document) with ``whole_number`` applied to every float in it."""
    if isinstance(value, float):
        return whole_number(value)
    if isinstance(value, Mapping):
        return {k: whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [whole_numbers(v) for v in value]
    return value


def build_object(kind: str, data: Mapping[str, Any], source: Source = Source()) -> Any:
    """The model object of one schema-valid manifest document (or API body)."""
    name = data["name"]
    if kind == "Group":
        return Group(name, tuple(sorted(data.get("global_permissions", ()))), source)
    if kind == "User":
        return User(
            name,
            data["password_hash"],
            tuple(data["groups"]),
            data.get("full_name", ""),
            data.get("enabled", True),
            source,
        )
    if kind == "Check":
        return Check(
            name,
            data["owner"],
            BaseCheck(data["base_check"]),
            data.get("string", ""),
            data.get("interval", "5s"),
            data.get("timeout", "2s"),
            data.get("rise", 2),
            data.get("fall", 3),
            source,
            host=data.get("host"),
            expect=data.get("expect"),
        )
    if kind == "Upstream":
        return _upstream(data, source)
    if kind == "AccessNode":
        return _access_node(data, source)
    raise ValueError(f"unknown kind {kind!r}")


def _upstream(data: Mapping[str, Any], source: Source) -> Upstream:
    listen = data.get("listen", {})
    protocol = listen.get("protocol", "http")
    server_names = tuple(listen.get("server_names", [data["name"]])) if protocol == "http" else ()
    nodes = tuple(
        Backend(
            n["hostname"],
            n.get("weight", 1),
            n.get("max_fails", 1),
            n.get("fail_timeout", "10s"),
            FORCE_STATUS[n.get("force_status", "normal")],
            n.get("failover", 0),
        )
        for n in data.get("nodes", ())
    )
    return Upstream(
        data["name"],
        data["owner"],
        Listen(protocol, server_names, listen.get("port"), listen.get("path", "/"), listen.get("strip_path", False)),
        data.get("min_servers", 1),
        tuple(data.get("checks", ())),
        nodes,
        tuple(AclRule(a["group_name"], a["rule"]) for a in data.get("acl", ())),
        data.get("description"),
        source,
        balancing=_balancing(data.get("balancing", {})),
        proxy=_tcp_proxy(data.get("proxy", {})) if protocol == "tcp" else _http_proxy(data.get("proxy", {})),
        tls=_tls(data["tls"]) if "tls" in data else None,
        access=_access(data.get("access", {})),
    )


def _access(data: Mapping[str, Any]) -> Access:
    limit = data.get("rate_limit")
    return Access(
        tuple(data.get("allow", ())),
        tuple(data.get("deny", ())),
        None if limit is None else RateLimit(limit["rps"], limit.get("burst", 0), limit.get("clients", 100_000)),
    )


def _tls(data: Mapping[str, Any]) -> Tls:
    hsts = data.get("hsts")
    return Tls(
        data["certificate"],
        data["key"],
        data.get("redirect_http", False),
        None
        if hsts is None
        else Hsts(hsts.get("max_age", 31536000), hsts.get("include_subdomains", False), hsts.get("preload", False)),
    )


def _tcp_proxy(data: Mapping[str, Any]) -> TcpProxy:
    d = TcpProxy()
    return TcpProxy(
        data.get("connect_timeout", d.connect_timeout),
        data.get("timeout", d.timeout),
        data.get("proxy_protocol", d.proxy_protocol),
    )


_HTTP_PROXY = HttpProxy()  # the defaults, made once


def _http_proxy(data: Mapping[str, Any]) -> HttpProxy:
    d = _HTTP_PROXY
    retries = data.get("retries", {})
    tls = data.get("backend_tls")
    return HttpProxy(
        data.get("connect_timeout", d.connect_timeout),
        data.get("send_timeout", d.send_timeout),
        data.get("read_timeout", d.read_timeout),
        data.get("client_max_body_size"),
        data.get("buffering", d.buffering),
        data.get("websockets", d.websockets),
        Retries(
            tuple(RetryCondition(c) for c in retries.get("conditions", d.retries.conditions)),
            retries.get("tries", d.retries.tries),
            retries.get("timeout", d.retries.timeout),
        ),
        data.get("keepalive", d.keepalive),
        tuple(Header(h["name"], h.get("value"), h.get("variable")) for h in data.get("headers", ())),
        data.get("backend_protocol", d.backend_protocol),
        None if tls is None else BackendTls(tls.get("server_name"), tls.get("verify", True), tls.get("ca_certificate")),
    )


def _balancing(data: Mapping[str, Any]) -> Balancing:
    return Balancing(Method(data.get("method", "round_robin")), data.get("key"), data.get("consistent", False))


def _access_node(data: Mapping[str, Any], source: Source) -> AccessNode:
    conn = data.get("connection", {})
    nginx = data.get("nginx", {})
    defaults = NginxSettings()
    return AccessNode(
        data["name"],
        data["owner"],
        Connection(
            conn.get("type", "ssh"),
            conn.get("host", split_hostport(data["name"], 80)[0]),
            conn.get("port", 22),
            conn.get("user"),
            conn.get("identity_file"),
            conn.get("sudo", False),
        ),
        data.get("description", ""),
        data.get("listen_address", "*"),
        tuple(data.get("upstreams", ())),
        NginxSettings(
            nginx.get("config_dir", defaults.config_dir),
            nginx.get("test_command", defaults.test_command),
            nginx.get("reload_command", defaults.reload_command),
            nginx.get("error_log", defaults.error_log),
        ),
        source,
        https_port=data.get("https_port", 443),
        http2=data.get("http2", True),
    )


def to_manifest(kind: str, obj: Any) -> dict[str, Any]:
    """The manifest document of a model object, every default written out."""
    doc: dict[str, Any] = {"apiVersion": API_VERSION, "kind": kind}
    doc.update(_plain(obj))
    return doc


def _is_default(f: Field[Any], value: Any) -> bool:
    if value == f.default:
        return True
    return hasattr(value, "__dataclass_fields__") and value == type(value)()


_SCALARS = frozenset({str, int, float, bool})


_FIELDS: dict[type, tuple[tuple[Field[Any], bool], ...]] = {}


def _fields(cls: type) -> tuple[tuple[Field[Any], bool], ...]:
    """A model class's fields written in manifests (not ``source``), each with whether it is
    left out at its default (``dataclasses.fields`` and three reads per field were 3/4 of
    ``to_manifest``: 109 us of an upstream of 10 backends, now 27 us)."""
    plan = _FIELDS.get(cls)
    if plan is None:
        plan = _FIELDS[cls] = tuple(
            (f, bool(f.metadata.get("omit_default"))) for f in fields(cls) if f.name != "source"
        )
    return plan


def _plain(value: Any) -> Any:
    if type(value) in _SCALARS:
        return value
    if hasattr(value, "__dataclass_fields__"):
        plain = {}
        for f, omit_default in _fields(type(value)):
            v = getattr(value, f.name)
            if v is None or v == () or (omit_default and _is_default(f, v)):
                continue
            plain[f.name] = _plain(v)
        return plain
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, StrEnum):
        return value.value
    return value
