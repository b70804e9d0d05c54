"""Backend hostnames to addresses, behind a tiny interface so that rendering is deterministic.

SPEC.md section 2: obreconcile renders addresses, never names, so that a DNS failure never
makes nginx refuse a configuration; a name that does not resolve is reported and keeps its
last known address. A resolver answers a :class:`Resolution`: the addresses to render
(sorted, IPv4 before IPv6) and, when the lookup failed, why. IP literals are never looked up
(see :func:`ip_literal`).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Resolution:
    """The addresses of a host; ``error`` is set when the lookup failed.

    A failed lookup may still carry addresses: the last ones known for that name.
    """

    addresses: tuple[str, ...]
    error: str = ""


class Resolver(Protocol):
    def resolve(self, host: str) -> Resolution:
        """The addresses of ``host`` (a DNS name; IP literals never reach a resolver)."""
        ...

    def remember(self, addresses: Mapping[str, Sequence[str]]) -> None:
        """Take these as the last known addresses of names not looked up yet (from the store)."""
        ...

    def learned(self) -> dict[str, tuple[str, ...]]:
        """Names whose addresses are new or changed since the last call: to record in the store."""
        ...


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
CANONICAL_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


def ip_literal(host: str) -> str | None:
    """The canonical text of ``host`` when it is an IP address (no brackets), else None."""
    if CANONICAL_IPV4.fullmatch(host):
        return host  # the common case, without ipaddress's cost
    if not host or not (host[0].isdigit() or ":" in host):
        return None
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def sorted_addresses(addresses: Sequence[str]) -> tuple[str, ...]:
    """Unique addresses, IPv4 first, each family in numeric order."""
    parsed = {ipaddress.ip_address(a) for a in addresses}
    return tuple(str(a) for a in sorted(parsed, key=lambda a: (a.version, int(a))))


class SystemResolver:
    """The system's resolver (``getaddrinfo``), with a cache and the last known addresses.

    Answers are kept for ``ttl`` seconds, so that a render of many upstreams sharing a name
    looks it up once; a name that stops resolving keeps the addresses it last had. Those
    start from ``last_known`` (the store's, so that they outlive this process), and
    ``learned()`` gives what changed since, to be recorded back. One object may serve the
    renderer (in a thread) and the health checks at once: its tables are under a lock.
    """

    def __init__(
        self,
        ttl: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        last_known: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.ttl = ttl
        self._clock = clock
        self._cache: dict[str, tuple[float, Resolution]] = {}
        self._last_known: dict[str, tuple[str, ...]] = {h: tuple(a) for h, a in (last_known or {}).items()}
        self._learned: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()

    def remember(self, addresses: Mapping[str, Sequence[str]]) -> None:
        with self._lock:
            for host, found in addresses.items():
                self._last_known.setdefault(host, tuple(found))

    def learned(self) -> dict[str, tuple[str, ...]]:
        with self._lock:
            learned, self._learned = self._learned, {}
        return learned

    def resolve(self, host: str) -> Resolution:
        now = self._clock()
        cached = self._cache.get(host)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        resolution = self._lookup(host)
        self._cache[host] = (now, resolution)
        return resolution

    def _lookup(self, host: str) -> Resolution:
        literal = ip_literal(host)
        if literal is not None:
            return Resolution((literal,))
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as e:
            return Resolution(self._last_known.get(host, ()), f"does not resolve: {e}")
        addresses = sorted_addresses([str(info[4][0]).partition("%")[0] for info in infos])
        if not addresses:
            return Resolution(self._last_known.get(host, ()), "does not resolve: no address")
        with self._lock:
            if self._last_known.get(host) != addresses:
                self._last_known[host] = self._learned[host] = addresses
        return Resolution(addresses)


class StaticResolver:
    """A fixed table of names, for tests and benchmarks; unknown names do not resolve.

    ``default`` (when given) answers every name missing from the table.
    """

    def __init__(self, table: Mapping[str, Sequence[str]], default: Sequence[str] | None = None) -> None:
        self._table = {host.lower(): sorted_addresses(addresses) for host, addresses in table.items()}
        self._default = sorted_addresses(default) if default is not None else None

    def remember(self, addresses: Mapping[str, Sequence[str]]) -> None:
        """A fixed table learns nothing."""

    def learned(self) -> dict[str, tuple[str, ...]]:
        return {}

    def resolve(self, host: str) -> Resolution:
        addresses = self._table.get(host.lower(), self._default)
        if addresses is None:
            return Resolution((), "does not resolve: not in the static table")
        return Resolution(addresses)
