"""The semantic rules of SPEC.md section 1, across documents and files.

They run on every document of a known kind, valid or not, so that one run reports
everything; each rule therefore reads values through the type-checking accessors below.
References (owners, groups, checks, upstreams), uniqueness per kind, backends unique per
upstream, server-name and tcp-port clashes per access node, min_servers, the check-reuse
rule, password hashes and IP literals.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from reconciler.manifest.load import PathPart
from reconciler.manifest.located import LocatedObject, Report, shown
from reconciler.manifest.model import (
    BASE_CHECKS,
    KINDS,
    RESERVED_HEADERS,
    STREAM_HASH_KEYS,
    STREAM_METHODS,
    Method,
    split_hostport,
)


def _text(data: dict[str, Any], key: str, default: str | None = None) -> str | None:
    value = data.get(key, default)
    return value if isinstance(value, str) else None


def _entries(data: dict[str, Any], key: str) -> list[tuple[int, Any]]:
    value = data.get(key)
    return list(enumerate(value)) if isinstance(value, list) else []


def _mappings(data: dict[str, Any], key: str) -> list[tuple[int, dict[str, Any]]]:
    return [(i, v) for i, v in _entries(data, key) if isinstance(v, dict)]


def _mapping(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def check_semantics(objects: list[LocatedObject], report: Report) -> None:
    index = _unique_names(objects, report)
    groups = index["Group"]
    checks = index["Check"]
    upstreams = index["Upstream"]
    served: dict[str, _Served] = {}  # what the access nodes' checks read of each upstream, made once
    for obj in objects:
        data = obj.data
        if "owner" in data:
            _reference(obj, ("owner",), "group", groups, report)
        if obj.kind == "User":
            for i, _ in _entries(data, "groups"):
                _reference(obj, ("groups", i), "group", groups, report)
            from reconciler.passwords import password_hash_problem  # argon2: only manifests with users

            password_hash = _text(data, "password_hash")
            message = password_hash_problem(password_hash) if password_hash else ""
            if message:
                report.add(obj.doc, ("password_hash",), message)
        elif obj.kind == "Check":
            if obj.name in BASE_CHECKS:
                report.add(
                    obj.doc, ("name",), f"{obj.name!r} is a base check's name; give the custom check another name"
                )
            _check_check(obj, report)
        elif obj.kind == "Upstream":
            _check_upstream(obj, groups, checks, report)
        elif obj.kind == "AccessNode":
            for i, _ in _entries(data, "upstreams"):
                _reference(obj, ("upstreams", i), "upstream", upstreams, report)
            _check_access_node(obj, upstreams, served, report)


def _check_check(obj: LocatedObject, report: Report) -> None:
    """host and expect are for http(s) checks; a HEAD answer has no body to look into."""
    data = obj.data
    for key in ("host", "expect"):
        if key in data and data.get("base_check") == "tcp":
            report.add(obj.doc, (key,), "is for http and https checks (a tcp check sends no request)", key=True)
    string = _text(data, "string", "")
    if "expect" in data and string is not None and string.startswith("HEAD "):
        report.add(obj.doc, ("expect",), "a HEAD answer has no body to look into: use GET", key=True)


def _unique_names(objects: list[LocatedObject], report: Report) -> dict[str, dict[str, LocatedObject]]:
    index: dict[str, dict[str, LocatedObject]] = {kind: {} for kind in KINDS}
    for obj in objects:
        key = _canonical_access_node(obj.name) if obj.kind == "AccessNode" else obj.name
        first = index[obj.kind].get(key)
        if first is None:
            index[obj.kind][key] = obj
            continue
        line, column = first.doc.locate(("name",))
        report.add(
            obj.doc,
            ("name",),
            f"duplicate {obj.kind} name {obj.name!r}: first defined at {first.doc.file}:{line}:{column} "
            "(names are unique per kind)",
        )
    index["AccessNode"] = {obj.name: obj for obj in index["AccessNode"].values()}
    return index


def _canonical_access_node(name: str) -> str:
    host, port = split_hostport(name, 80)
    return f"{host.lower()}:{port}"


def _reference(
    obj: LocatedObject, path: tuple[PathPart, ...], what: str, known: dict[str, LocatedObject], report: Report
) -> None:
    value: Any = obj.data
    for part in path:
        value = value[part]
    if not isinstance(value, str) or value in known:
        return  # a wrong type is the schema's to report
    close = difflib.get_close_matches(value, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    report.add(obj.doc, path, f"unknown {what} {shown(value)} (no {what} of that name is defined{hint})")


def _check_upstream(
    obj: LocatedObject, groups: dict[str, LocatedObject], checks: dict[str, LocatedObject], report: Report
) -> None:
    data = obj.data
    owner_name = _text(data, "owner")
    owner = groups.get(owner_name or "")
    permissions = owner.data.get("global_permissions") if owner else None
    owner_reads_all = isinstance(permissions, list) and bool(
        {"GLOBAL_RO", "GLOBAL_RW", "SUPER"} & set(map(str, permissions))
    )
    for i, name in _entries(data, "checks"):
        if not isinstance(name, str) or name in BASE_CHECKS:
            continue
        check = checks.get(name)
        if check is None:
            _reference(obj, ("checks", i), "check", checks, report)
        elif owner is not None and check.data.get("owner") != owner_name and not owner_reads_all:
            report.add(
                obj.doc,
                ("checks", i),
                f"check {name!r} belongs to group {shown(check.data.get('owner'))}; group {owner_name!r} "
                "may use another group's check only with GLOBAL_RO",
            )
    seen_groups: set[str] = set()
    for i, rule in _mappings(data, "acl"):
        group = _text(rule, "group_name")
        if group is None:
            continue
        _reference(obj, ("acl", i, "group_name"), "group", groups, report)
        if group in seen_groups:
            report.add(obj.doc, ("acl", i, "group_name"), f"group {group!r} has more than one acl rule")
        seen_groups.add(group)
    _check_backends(obj, report)
    _check_balancing(obj, report)
    listen = _mapping(data, "listen")
    if listen.get("protocol") == "tcp" and "tls" in data:
        report.add(
            obj.doc, ("tls",), "is for http upstreams (a tcp upstream's bytes are passed on as they are)", key=True
        )
    hsts = _mapping(_mapping(data, "tls"), "hsts")
    if hsts.get("preload") is True:
        age = hsts.get("max_age", 31536000)
        if hsts.get("include_subdomains") is not True or (isinstance(age, int) and age < 31536000):
            report.add(
                obj.doc,
                ("tls", "hsts", "preload"),
                "preload needs include_subdomains: true and a max_age of at least 31536000 (the preload list's rules)",
            )
    if listen.get("protocol") == "tcp" and "access" in data:
        report.add(obj.doc, ("access",), "access rules are for http upstreams", key=True)
    access = _mapping(data, "access")
    for key in ("allow", "deny"):
        for i, network in _entries(access, key):
            looks_right = isinstance(network, str) and _NETWORK.fullmatch(network)  # else the schema's
            message = _network_problem(network) if looks_right else ""
            if message:
                report.add(obj.doc, ("access", key, i), message)
    if listen.get("protocol") != "tcp":
        _check_http_proxy(obj, report)
        if listen.get("strip_path") is True and listen.get("path", "/") == "/":
            report.add(obj.doc, ("listen", "strip_path"), "needs a path other than '/' to strip")


def _check_http_proxy(obj: LocatedObject, report: Report) -> None:
    """Headers (one of value and variable, not reserved, not twice), retries and backend TLS."""
    proxy = _mapping(obj.data, "proxy")
    seen: dict[str, int] = {}
    for i, header in _mappings(proxy, "headers"):
        where: tuple[PathPart, ...] = ("proxy", "headers", i)
        if ("value" in header) == ("variable" in header):
            report.add(obj.doc, where, "give exactly one of value (a fixed text) and variable (an nginx variable)")
        name = _text(header, "name")
        if name is None:
            continue
        if name.lower() in RESERVED_HEADERS:
            report.add(
                obj.doc,
                (*where, "name"),
                f"{name!r} is set by obreconcile itself or is a hop-by-hop header: it cannot be set here "
                "(websockets: true passes Upgrade and Connection)",
            )
        elif name.lower() in seen:
            report.add(
                obj.doc,
                (*where, "name"),
                f"header {name!r} is listed twice (as proxy.headers[{seen[name.lower()]}] too)",
            )
        seen.setdefault(name.lower(), i)
    retries = _mapping(proxy, "retries")
    conditions = [c for _, c in _entries(retries, "conditions")]
    if "off" in conditions and len(conditions) > 1:
        report.add(
            obj.doc,
            ("proxy", "retries", "conditions"),
            "off turns retries off and cannot be combined with other conditions",
        )
    https = proxy.get("backend_protocol") == "https"
    if "backend_tls" in proxy and not https:
        report.add(obj.doc, ("proxy", "backend_tls"), "is for backend_protocol https only")
    tls = _mapping(proxy, "backend_tls")
    if https and tls.get("verify", True) is True:
        tls_where = ("proxy", "backend_tls") if "backend_tls" in proxy else ("proxy", "backend_protocol")
        for needed, what in (
            ("ca_certificate", "a CA bundle on the access node to verify the backends' certificates against"),
            ("server_name", "the name the backends' certificates are verified for (and sent as SNI)"),
        ):
            if needed not in tls:
                report.add(
                    obj.doc,
                    tls_where,
                    f"verifying https backends needs backend_tls.{needed}, {what}; or set backend_tls.verify: false",
                )


def _check_balancing(obj: LocatedObject, report: Report) -> None:
    """Combinations of balancing fields, the listen protocol and failover tiers that nginx refuses."""
    data = obj.data
    balancing = _mapping(data, "balancing")
    method_text = _text(balancing, "method", Method.ROUND_ROBIN.value)
    if method_text not in set(Method):
        return  # the schema's to report
    method = Method(method_text)
    tcp = _mapping(data, "listen").get("protocol") == "tcp"
    where = ("balancing", "method") if "method" in balancing else ("balancing",)
    key = _text(balancing, "key")
    if tcp and method not in STREAM_METHODS:
        report.add(obj.doc, where, f"nginx's stream module (tcp) has no {method}; use hash with key $remote_addr")
    if method is Method.HASH and "key" not in balancing:
        report.add(obj.doc, where, "hash needs a key: $remote_addr, $request_uri, $host or $cookie_NAME")
    for name in ("key", "consistent"):
        if name in balancing and method is not Method.HASH and balancing[name] is not False:
            report.add(obj.doc, ("balancing", name), f"is for method hash only (method is {method})")
    if tcp and method is Method.HASH and key is not None and key not in STREAM_HASH_KEYS:
        report.add(
            obj.doc,
            ("balancing", "key"),
            f"a tcp upstream hashes on $remote_addr only (nginx's stream module has no {key})",
        )
    if method.takes_backup:
        return
    for i, node in _mappings(data, "nodes"):
        tier = node.get("failover", 0)
        if isinstance(tier, int) and not isinstance(tier, bool) and tier > 0:
            report.add(
                obj.doc,
                ("nodes", i, "failover"),
                f"failover tier {tier} makes this backend a backup server, and nginx refuses backup servers with "
                f'balancing method {method} ("balancing method does not support parameter backup"); '
                "use round_robin or least_conn, or keep every backend in tier 0",
            )


def _check_backends(obj: LocatedObject, report: Report) -> None:
    data = obj.data
    seen: dict[tuple[str, int], int] = {}
    usable = 0
    for i, node in _mappings(data, "nodes"):
        if node.get("force_status", "normal") not in ("down", "d"):
            usable += 1
        hostname = _text(node, "hostname")
        if hostname is None:
            continue
        address = split_hostport(hostname, 80)
        message = _ip_literal_problem(address[0]) if obj.valid else ""
        if message:
            report.add(obj.doc, ("nodes", i, "hostname"), message)
        key = (address[0].lower(), address[1])
        if key in seen:
            report.add(
                obj.doc,
                ("nodes", i, "hostname"),
                f"backend {hostname!r} is listed twice (as nodes[{seen[key]}] too); hostnames are unique in an upstream",
            )
        seen.setdefault(key, i)
    # An upstream without backends is allowed (the API adds them one by one); it is not rendered.
    min_servers = data.get("min_servers", 1)
    has_nodes = bool(_mappings(data, "nodes"))
    if isinstance(min_servers, int) and not isinstance(min_servers, bool) and has_nodes and min_servers > usable:
        report.add(
            obj.doc,
            ("min_servers",) if "min_servers" in data else ("nodes",),
            f"is {min_servers} but the upstream has only {usable} backends not forced down",
        )


_NETWORK = re.compile(r"[0-9A-Fa-f:.]{2,45}(?:/[0-9]{1,3})?")  # the schema's pattern


def _network_problem(text: str) -> str:
    """A message when ``text`` is not an IP network in CIDR notation (or one address)."""
    try:
        ipaddress.ip_network(text, strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            return f"{shown(text)} is not an IP network (10.0.0.0/8, 2001:db8::/32 or one address)"
        return f"{shown(text)} has host bits set: the network is {str(loose)!r}"
    return ""


# A dotted quad that ipaddress takes (decimal octets up to 255, no leading zero): most backends
# are one, and ipaddress's own parse was 40 % of the semantic checks of 100,000 backends.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_VALID_IPV4 = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")


def _ip_literal_problem(host: str) -> str:
    """A message when ``host`` looks like an IP address but is not a valid one."""
    looks_v4 = host.count(".") == 3 and host.replace(".", "").isdigit()
    if not looks_v4 and ":" not in host:
        return ""
    if looks_v4 and _VALID_IPV4.fullmatch(host):
        return ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return f"{shown(host)} is not a valid IP address"
    return ""


@dataclass(frozen=True)
class _Served:
    """What the checks of an access node read of an upstream it serves (the same for every node)."""

    tcp: bool
    port: int | None  # a tcp upstream's port; None when it is not a number (the schema says so)
    names: tuple[str, ...]  # an http upstream's server names (its own name when it has none)
    path: str | None  # None when it is not text (the schema says so)
    tls: Any


def _served(upstream: LocatedObject, name: str) -> _Served:
    listen = _mapping(upstream.data, "listen")
    if listen.get("protocol", "http") == "tcp":
        port = listen.get("port")
        return _Served(True, port if isinstance(port, int) else None, (), None, None)
    names = [n for _, n in _entries(listen, "server_names")] if "server_names" in listen else [name]
    text = tuple(n for n in names if isinstance(n, str))
    return _Served(False, None, text, _text(listen, "path", "/"), upstream.data.get("tls"))


def _check_access_node(
    obj: LocatedObject, upstreams: dict[str, LocatedObject], served: dict[str, _Served], report: Report
) -> None:
    data = obj.data
    host, http_port = split_hostport(obj.name, 80)
    message = _ip_literal_problem(host) if obj.valid else ""
    if message:
        report.add(obj.doc, ("name",), message)
    address = _text(data, "listen_address", "*")
    if obj.valid and address and address != "*":
        message = _ip_literal_problem(address.strip("[]"))
        if message:
            report.add(obj.doc, ("listen_address",), message)
    routes: dict[tuple[str, str], str] = {}
    name_tls: dict[str, tuple[str, Any]] = {}  # server name -> (first upstream, its tls)
    https_port = data.get("https_port", 443)
    uses_tls = False
    tcp_ports: dict[int, str] = {}
    for i, name in _entries(data, "upstreams"):
        upstream = upstreams.get(name) if isinstance(name, str) else None
        if upstream is None:
            continue
        seen = served.get(name)
        if seen is None:
            seen = served[name] = _served(upstream, name)
        if seen.tcp:
            port = seen.port
            if port is None:
                continue
            other = tcp_ports.setdefault(port, name)
            if port == http_port:
                report.add(
                    obj.doc,
                    ("upstreams", i),
                    f"tcp upstream {name!r} listens on port {port}, the access node's http port",
                )
            elif other != name:
                report.add(
                    obj.doc,
                    ("upstreams", i),
                    f"upstreams {other!r} and {name!r} both listen on tcp port {port} on this access node",
                )
            continue
        path, tls = seen.path, seen.tls
        if path is None:
            continue
        uses_tls = uses_tls or tls is not None
        for server_name in seen.names:
            first, first_tls = name_tls.setdefault(server_name, (name, tls))
            if first != name and first_tls != tls:
                report.add(
                    obj.doc,
                    ("upstreams", i),
                    f"upstreams {first!r} and {name!r} share server name {server_name!r} but not their tls settings "
                    "(the routes of one server name have one certificate)",
                )
                break
        where = "" if path == "/" else f" at path {path!r}"
        for server_name in seen.names:
            other = routes.setdefault((server_name, path), name)
            if other != name:
                report.add(
                    obj.doc,
                    ("upstreams", i),
                    f"upstreams {other!r} and {name!r} both serve server name {server_name!r}{where} on this access node",
                )
    if uses_tls and isinstance(https_port, int):
        port_where = ("https_port",) if "https_port" in data else ("upstreams",)
        if https_port == http_port:
            report.add(obj.doc, port_where, f"the https port {https_port} is the access node's http port")
        elif https_port in tcp_ports:
            report.add(
                obj.doc,
                port_where,
                f"tcp upstream {tcp_ports[https_port]!r} listens on port {https_port}, the https port",
            )
