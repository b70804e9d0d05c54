"""Backend selection (SPEC.md section 3), table-driven: force_status × health × tiers × min_servers."""

from __future__ import annotations

import pytest

from reconciler.health.select import Role, select
from reconciler.manifest.model import Backend, Listen, Upstream


def upstream(*nodes: Backend, min_servers: int = 1) -> Upstream:
    return Upstream("svc", "ops", Listen(), min_servers, (), tuple(nodes))


def b(hostname: str, failover: int = 0, force: str = "normal") -> Backend:
    return Backend(hostname, force_status=force, failover=failover)


E, K, D = "enabled", "backup", "down"

# (backends, min_servers, unhealthy hostnames, expected roles by hostname, panic)
CASES = {
    "all up, one tier": ([b("a"), b("b")], 1, set(), {"a": E, "b": E}, False),
    "forced down is down even when healthy": ([b("a"), b("b", force="down")], 1, set(), {"a": E, "b": D}, False),
    "unhealthy normal is down": ([b("a"), b("b")], 1, {"b"}, {"a": E, "b": D}, False),
    "forced up is enabled even when unhealthy": ([b("a", force="up"), b("b")], 1, {"a"}, {"a": E, "b": E}, False),
    "tier 1 is backup while tier 0 has min_servers": (
        [b("a"), b("b"), b("c", 1)],
        2,
        set(),
        {"a": E, "b": E, "c": K},
        False,
    ),
    "tier 1 joins when tier 0 falls short": (
        [b("a"), b("b"), b("c", 1), b("d", 1)],
        2,
        {"b"},
        {"a": E, "b": D, "c": E, "d": E},
        False,
    ),
    "the walk stops at the first tier reaching min_servers": (
        [b("a"), b("c", 1), b("d", 2)],
        2,
        set(),
        {"a": E, "c": E, "d": K},
        False,
    ),
    "every tier short: every eligible backend enabled": (
        [b("a"), b("c", 1)],
        3,
        set(),
        {"a": E, "c": E},
        False,
    ),
    "unhealthy backend of a later tier is down, not backup": (
        [b("a"), b("c", 1), b("d", 1)],
        1,
        {"d"},
        {"a": E, "c": K, "d": D},
        False,
    ),
    "tier 0 all down: tier 1 enabled, tier 2 backup": (
        [b("a"), b("c", 1), b("e", 2)],
        1,
        {"a"},
        {"a": D, "c": E, "e": K},
        False,
    ),
    "panic: nothing eligible, every backend not forced down enabled": (
        [b("a"), b("b", 1), b("c", force="down")],
        1,
        {"a", "b"},
        {"a": E, "b": E, "c": D},
        True,
    ),
    "forced up is eligible: no panic": (
        [b("a"), b("b", 1, force="up")],
        2,
        {"a"},
        {"a": D, "b": E},
        False,
    ),
    "u/d/n model values are already normalised (n = normal)": (
        [b("a", force="normal"), b("b", force="down"), b("c", 1, force="up")],
        1,
        set(),
        {"a": E, "b": D, "c": K},
        False,
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_selection_table(case: tuple[list[Backend], int, set[str], dict[str, str], bool]) -> None:
    backends, min_servers, unhealthy, expected, panic = case
    selection = select(upstream(*backends, min_servers=min_servers), {h: False for h in unhealthy})
    assert {h: r.value for h, r in selection.roles().items()} == expected
    assert selection.panic is panic


def test_missing_health_means_up() -> None:
    assert select(upstream(b("a"))).roles() == {"a": Role.ENABLED}
    assert select(upstream(b("a")), {"other": False}).roles() == {"a": Role.ENABLED}


def test_order_is_failover_then_hostname() -> None:
    selection = select(upstream(b("z"), b("a", 1), b("m"), b("b", 1)))
    assert [s.backend.hostname for s in selection.backends] == ["m", "z", "a", "b"]
    assert selection.role("a") is Role.BACKUP


def test_no_backends_is_no_panic() -> None:
    selection = select(upstream())
    assert selection.backends == () and not selection.panic


def test_every_backend_forced_down_is_panic_with_nothing_enabled() -> None:
    selection = select(upstream(b("a", force="down")))
    assert selection.panic and selection.roles() == {"a": Role.DOWN}


def test_tier_membership_not_health_decides_stop() -> None:
    # tier 0 has two backends, one unhealthy; min_servers 1 is reached inside tier 0
    selection = select(upstream(b("a"), b("b"), b("c", 1)), {"a": False})
    assert selection.roles() == {"a": Role.DOWN, "b": Role.ENABLED, "c": Role.BACKUP}
