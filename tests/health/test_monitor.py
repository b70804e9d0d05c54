"""Rise/fall (SPEC.md §3) as a pure state machine, and the monitor's health and records."""

from __future__ import annotations

import asyncio
import itertools
import statistics
from collections.abc import Callable

import pytest

from reconciler.health.checks import CheckSpec, Outcome, Target
from reconciler.health.monitor import CheckState, Monitor, step
from reconciler.health.probe import Prober
from reconciler.health.state import Probe, probes_of
from reconciler.manifest.model import Backend, BaseCheck, Check, DesiredState, Listen, Upstream
from reconciler.store import HealthRecord


def run(results: str, rise: int = 2, fall: int = 3) -> list[str]:
    """The status after each result ('+' pass, '-' fail)."""
    state = CheckState()
    out: list[str] = []
    for r in results:
        step(state, r == "+", rise, fall)
        out.append(state.status)
    return out


@pytest.mark.parametrize(
    ("results", "rise", "fall", "expected"),
    [
        ("", 2, 3, []),
        ("++", 2, 3, ["up", "up"]),
        ("--", 2, 3, ["up", "up"]),
        ("---", 2, 3, ["up", "up", "down"]),
        ("-+--", 2, 3, ["up"] * 4),  # a pass in between starts the count again
        ("---+", 2, 3, ["up", "up", "down", "down"]),
        ("---++", 2, 3, ["up", "up", "down", "down", "up"]),
        ("---+-++", 2, 3, ["up", "up", "down", "down", "down", "down", "up"]),
        ("-", 1, 1, ["down"]),
        ("-+-+", 1, 1, ["down", "up", "down", "up"]),
        ("-+-+-+-+", 2, 2, ["up"] * 8),  # flapping faster than rise/fall never changes state
    ],
)
def test_rise_and_fall(results: str, rise: int, fall: int, expected: list[str]) -> None:
    assert run(results, rise, fall) == expected


def test_a_flapping_check_changes_state_at_most_once_per_window() -> None:
    state = CheckState()
    flips = [step(state, passed, 2, 2) for passed in [True, False] * 50 + [False, False, True, True] * 10]
    assert sum(flips[:100]) == 0
    assert sum(flips) <= len(flips[100:]) // 2


def _monitor(changes: list[str]) -> Monitor:
    return Monitor(Prober(1), changes.append)


def test_health_is_every_check_and_transitions_are_recorded() -> None:
    changes: list[str] = []
    monitor = _monitor(changes)
    web = Upstream("web", "ops", Listen(), checks=("c1", "c2"), nodes=(Backend("a:80"), Backend("b:80")))
    state = DesiredState(
        checks={n: Check(n, "ops", BaseCheck.TCP, rise=1, fall=1) for n in ("c1", "c2")}, upstreams={"web": web}
    )
    monitor.probes = probes_of(state)
    assert sorted(monitor.probes) == [("web", h, c) for h in ("a:80", "b:80") for c in ("c1", "c2")]
    assert monitor.health() == {"web": {"a:80": True, "b:80": True}}
    probe: Probe = monitor.probes[("web", "a:80", "c2")]
    assert monitor.result(probe, Outcome(False, "connection refused", 0.001))
    assert changes == ["web"]
    assert monitor.health() == {"web": {"a:80": False, "b:80": True}}
    records = monitor.take_dirty()
    assert [(r.key, r.status, r.consecutive, r.detail) for r in records] == [
        (("web", "a:80", "c2"), "down", 1, "connection refused")
    ]
    assert monitor.take_dirty() == []
    # a steady state writes nothing
    monitor.result(probe, Outcome(False, "connection refused", 0.001))
    assert monitor.take_dirty() == []


def test_state_loaded_from_the_store_is_kept() -> None:
    monitor = _monitor([])
    spec = CheckSpec("c", BaseCheck.TCP, rise=2, fall=2)
    probe = Probe(("web", "a:80", "c"), spec, Target("a", 80))
    monitor.probes = {probe.key: probe}
    monitor.load({probe.key: HealthRecord("web", "a:80", "c", "down", 2)})
    assert monitor.health() == {"web": {"a:80": False}}
    monitor.result(probe, Outcome(True, "", 0.0))
    assert monitor.health() == {"web": {"a:80": False}}  # one pass of rise 2
    monitor.result(probe, Outcome(True, "", 0.0))
    assert monitor.health() == {"web": {"a:80": True}}


class _AnsweringProber:
    """Answers every probe on the next loop turn: passes unless its backend is in ``failing``."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, str, str], float]] = []
        self.failing: set[str] = set()

    def start(self, spec: CheckSpec, target: Target, done: Callable[[Outcome], None]) -> None:
        loop = asyncio.get_running_loop()
        backend = f"{target.host}:{target.port}"
        self.calls.append(((spec.name, backend, ""), loop.time()))
        failing = backend in self.failing
        loop.call_soon(done, Outcome(not failing, "refused" if failing else "", 0.0))


def test_checks_run_on_their_interval_fast_while_changing_and_stop_when_removed() -> None:
    def desired(upstreams: list[str]) -> DesiredState:
        check = Check("c", "ops", BaseCheck.TCP, interval="400ms", rise=2, fall=3)
        return DesiredState(
            checks={"c": check},
            upstreams={
                u: Upstream(
                    u, "ops", Listen(), checks=("c",), nodes=(Backend(f"10.0.{i}.1:80"), Backend(f"10.0.{i}.2:80"))
                )
                for i, u in enumerate(upstreams)
            },
        )

    async def scenario() -> tuple[list[str], dict[str, list[float]], dict[str, list[float]], int]:
        prober = _AnsweringProber()
        changes: list[str] = []
        monitor = Monitor(prober, changes.append)  # type: ignore[arg-type]
        monitor.configure(desired(["a", "b"]))
        await asyncio.sleep(2.05)
        steady = _by_backend(prober.calls)
        removal = len(prober.calls)
        monitor.configure(desired(["a"]))  # b's two checks stop
        prober.failing.add("10.0.0.1:80")
        await asyncio.sleep(1.3)
        changing = _by_backend(prober.calls[removal:])
        await monitor.stop()
        stopped_at = len(prober.calls)
        await asyncio.sleep(0.3)
        return changes, steady, changing, len(prober.calls) - stopped_at

    changes, steady, changing, after_stop = asyncio.run(scenario())
    assert sorted(changes[:2]) == ["a", "b"] and changes[2:] == ["b", "a"]  # new; b removed; a's backend down
    assert sorted(steady) == ["10.0.0.1:80", "10.0.0.2:80", "10.0.1.1:80", "10.0.1.2:80"]
    for times in steady.values():  # first run at a random point of the first 400 ms, then every 400 ms ± 5 %
        assert 4 <= len(times) <= 7, times
        # (a run that started late is followed by a shorter gap: the schedule keeps its pace)
        assert 0.36 <= statistics.median(b - a for a, b in itertools.pairwise(times)) <= 0.44, times
    assert sorted(changing) == ["10.0.0.1:80", "10.0.0.2:80"]  # b's checks stopped
    assert 2 <= len(changing["10.0.0.2:80"]) <= 5
    # failing: re-checked after 100 ms (interval x 0.25) while the results contradict its status
    # (up), so fall=3 is reached 200 ms after the first failure; then down agrees: every 400 ms
    gaps = [b - a for a, b in itertools.pairwise(changing["10.0.0.1:80"])]
    assert [g < 0.25 for g in gaps[:3]] == [True, True, False], gaps
    assert after_stop == 0


def _by_backend(calls: list[tuple[tuple[str, str, str], float]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for (_, backend, _), when in calls:
        out.setdefault(backend, []).append(when)
    return out
