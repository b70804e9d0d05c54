"""Health checks: what each check of an upstream is (parsed once), and how one probe runs.

SPEC.md §3: base checks ``tcp`` (connect within the timeout, ``string`` empty), ``http`` and
``https`` (``string`` is ``METHOD PATH [STATUS…]``, default ``GET / 200-399``; https does not
verify certificates unless the string ends with `` verify``). An upstream's ``checks`` name
custom Check objects or the base checks themselves (interval 5s, timeout 2s, rise 2, fall 3).

``CheckSpec`` is the parsed form, ``Target`` where a probe goes and ``Outcome`` what it found
(passed or not, a short detail, seconds taken); ``reconciler/health/probe.py`` runs probes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from reconciler.manifest.model import (
    DEFAULT_HTTP_CHECK,
    HTTP_METHODS,
    Backend,
    BaseCheck,
    Check,
    DesiredState,
    Upstream,
    duration_seconds,
)

_REQUEST = re.compile(
    rf"^({'|'.join(HTTP_METHODS)}) (/[!-~]{{0,1000}})((?: [1-5][0-9]{{2}}(?:-[1-5][0-9]{{2}})?){{0,16}})( verify)?$"
)


class CheckStringError(ValueError):
    """A check string that does not follow SPEC.md §3's grammar."""


@dataclass(frozen=True)
class CheckSpec:
    """One check, parsed: what to send, what counts as a pass, and how often."""

    name: str
    base: BaseCheck
    interval: float = 5.0
    timeout: float = 2.0
    rise: int = 2
    fall: int = 3
    method: str = "GET"
    path: str = "/"
    statuses: tuple[tuple[int, int], ...] = ((200, 399),)
    verify: bool = False
    host: str = ""  # the Host header; empty: the target's address and port
    expect: bytes = b""  # the body must contain it (within its first 64 KiB); empty: not looked at

    def accepts(self, status: int) -> bool:
        return any(low <= status <= high for low, high in self.statuses)


def parse_request(base: str, string: str) -> tuple[str, str, tuple[tuple[int, int], ...], bool]:
    """(method, path, status ranges, verify) of an http(s) check string; CheckStringError if bad."""
    text = string or DEFAULT_HTTP_CHECK
    match = _REQUEST.fullmatch(text)
    if match is None:
        raise CheckStringError(f"{base} check string {string!r} is not 'METHOD PATH [STATUS...]'")
    method, path, codes, verify = match.groups()
    if verify and base != BaseCheck.HTTPS:
        raise CheckStringError(f"{base} check string {string!r}: only https checks take 'verify'")
    statuses = []
    for code in codes.split():
        low, _, high = code.partition("-")
        first, last = int(low), int(high or low)
        if first > last:
            raise CheckStringError(f"{base} check string {string!r}: empty status range {code}")
        statuses.append((first, last))
    return method, path, tuple(statuses) or ((200, 399),), bool(verify)


def spec_of(check: Check) -> CheckSpec:
    """The parsed form of a custom check (CheckStringError when its string is not valid)."""
    base = check.base_check
    times = duration_seconds(check.interval), duration_seconds(check.timeout)
    if base == BaseCheck.TCP:
        if check.string:
            raise CheckStringError(f"check {check.name}: a tcp check takes no string")
        return CheckSpec(check.name, base, *times, check.rise, check.fall)
    method, path, statuses, verify = parse_request(base, check.string)
    return CheckSpec(
        check.name,
        base,
        *times,
        check.rise,
        check.fall,
        method,
        path,
        statuses,
        verify,
        check.host or "",
        (check.expect or "").encode(),
    )


BASE_SPECS = {base.value: CheckSpec(base.value, base) for base in BaseCheck}


def checks_of(upstream: Upstream, state: DesiredState) -> list[CheckSpec]:
    """The checks of an upstream, parsed; a name that is neither custom nor base is skipped."""
    specs = []
    for name in upstream.checks:
        custom = state.checks.get(name)
        if custom is not None:
            specs.append(spec_of(custom))
        elif name in BASE_SPECS:
            specs.append(BASE_SPECS[name])
    return specs


@dataclass(frozen=True)
class Outcome:
    passed: bool
    detail: str
    seconds: float


@dataclass(frozen=True)
class Target:
    """Where a probe goes: the backend's host (an address or a name) and port."""

    host: str
    port: int

    @classmethod
    def of(cls, backend: Backend) -> Target:
        host, port = backend.address
        return cls(host, port)

    def url(self, spec: CheckSpec) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if spec.base == BaseCheck.HTTPS else 'http'}://{host}:{self.port}{spec.path}"
