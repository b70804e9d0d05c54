"""The health loop: every (upstream, backend, check) probed on its interval, with rise/fall.

Scheduling: a timing wheel of ``TICK`` (10 ms) slots turned by one timer of the serving
loop, no task or timer per check: each (upstream, backend, check) sits in the slot of its
next run, and its outcome puts it in the slot of the run after (counted from when this one
was due, so that a late loop does not stretch the interval). Each check starts at a
random offset within its interval and then runs every ``interval`` with ±``jitter`` (5 % by default), so that thousands of checks spread
evenly instead of firing in step. While a check's results disagree with its status (a backend
changing state), it is re-run every ``interval × fast`` (HAProxy's fastinter), so a fall or
rise is confirmed sooner. All probes share one ``Prober`` (bounded concurrency).

Rise/fall (SPEC.md §3) per check, ``step`` below: a check is ``up`` before its first result;
``fall`` failures in a row make it ``down``, ``rise`` passes in a row make it ``up``. A
backend is up when every check of its upstream says up. State lives in ``CheckState`` and is
persisted as the store's ``HealthRecord`` (``consecutive``: results in a row that agree with
the status, capped at rise/fall; negative: results in a row that contradict it), written in
batches by ``flush`` only when something changed (never in a steady state), and loaded again
by a new master (``load``), so neither a restart nor a master change resets it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from reconciler.health.checks import Outcome
from reconciler.health.probe import Prober
from reconciler.health.state import Health, Key, Probe, backend_health, probes_of
from reconciler.manifest.model import DesiredState
from reconciler.metrics import Metrics
from reconciler.store import HealthRecord

log = logging.getLogger("obreconcile.health")

TICK = 0.01  # seconds: the resolution of check scheduling

Status = Literal["up", "down"]


@dataclass
class CheckState:
    status: Status = "up"
    run: int = 0  # > 0: results in a row agreeing with status (capped); < 0: contradicting it
    detail: str = ""
    when: float = field(default_factory=time.time)
    seconds: float = 0.0  # how long the last check took
    checked: float = 0.0  # when the last result came (0: none yet)
    since: float = 0.0  # when the status last flipped (0: up since the first check)


def step(state: CheckState, passed: bool, rise: int, fall: int) -> bool:
    """Count one result into ``state``; True when the status flipped."""
    agrees = passed == (state.status == "up")
    if agrees:
        state.run = min(max(state.run, 0) + 1, rise if state.status == "up" else fall)
        return False
    contrary = (-state.run if state.run < 0 else 0) + 1
    if contrary >= (fall if state.status == "up" else rise):
        state.status = "down" if state.status == "up" else "up"
        state.run = contrary
        return True
    state.run = -contrary
    return False


class Monitor:
    """Runs the checks of the desired state and keeps their rise/fall state.

    ``on_change(upstream)`` is called (on the loop) whenever a check of ``upstream`` flips.
    """

    def __init__(
        self,
        prober: Prober,
        on_change: Callable[[str], None],
        metrics: Metrics | None = None,
        jitter: float = 0.05,
        fast: float = 0.25,
    ) -> None:
        self.prober = prober
        self.on_change = on_change
        self.metrics = metrics
        self.jitter = jitter
        self.fast = fast
        self.states: dict[Key, CheckState] = {}
        self.probes: dict[Key, Probe] = {}
        self._scheduled: dict[Key, Probe] = {}  # the checks that run
        self._due: dict[Key, float] = {}  # when each runs next (absent while its probe is under way)
        self._wheel: dict[int, list[tuple[Probe, float]]] = {}  # tick -> (check, when) due by then
        self._turned = 0  # the last tick whose checks were started
        self._turner: asyncio.TimerHandle | None = None
        self._dirty: set[Key] = set()
        self.checks_run = 0

    # state ------------------------------------------------------------------------------
    def load(self, records: Mapping[Key, HealthRecord]) -> None:
        """Take over the rise/fall state recorded in the store (a restart, a new master)."""
        for key, r in records.items():
            self.states[key] = CheckState(r.status, r.consecutive, r.detail, r.when, r.seconds, r.checked, r.since)

    def health(self) -> Health:
        """upstream -> backend hostname -> up (every check up); only upstreams with checks."""
        return backend_health(self.probes, self.states)

    def records(self, keys: set[Key] | None = None) -> list[HealthRecord]:
        wanted = self.states.keys() if keys is None else keys
        return [
            HealthRecord(*key, s.status, s.run, s.detail, s.when, s.seconds, s.checked, s.since)
            for key in sorted(wanted)
            if (s := self.states.get(key)) is not None
        ]

    def take_dirty(self) -> list[HealthRecord]:
        """The records changed since the last call (for ``store.record_health``)."""
        dirty, self._dirty = self._dirty, set()
        return self.records(dirty)

    def still_dirty(self, records: Iterable[HealthRecord]) -> None:
        """Records ``take_dirty`` gave that could not be stored: the next call gives them again."""
        self._dirty.update(r.key for r in records)

    def result(self, probe: Probe, outcome: Outcome) -> bool:
        """Count one outcome; True when the check's status flipped."""
        self.checks_run += 1
        if self.metrics is not None:
            self.metrics.observe_check(probe.spec.base, outcome.passed, outcome.seconds)
        state = self.states.get(probe.key)
        if state is None:
            state = self.states[probe.key] = CheckState()
        before = state.run
        flipped = step(state, outcome.passed, probe.spec.rise, probe.spec.fall)
        if outcome.detail != state.detail:
            state.detail = outcome.detail
        state.seconds = outcome.seconds
        state.checked = now = time.time()
        if flipped:
            state.since = now
        if flipped or before != state.run:
            state.when = now
            self._dirty.add(probe.key)
        if flipped:
            upstream, backend, check = probe.key
            log.warning(
                "health: upstream %s backend %s check %s: %s (%s)",
                upstream,
                backend,
                check,
                state.status,
                outcome.detail or "passed",
            )
            if self.metrics is not None:
                self.metrics.transitions.labels(upstream, backend, check, state.status).inc()
            self.on_change(upstream)
        return flipped

    # scheduling ---------------------------------------------------------------------------
    def configure(self, state: DesiredState) -> None:
        """Run exactly the checks of ``state``: start new ones, stop removed or changed ones."""
        wanted = probes_of(state)
        for key in list(self._scheduled):
            if key not in wanted or wanted[key] != self._scheduled[key]:
                self._unschedule(key)
        for key in set(self.states) - set(wanted):
            del self.states[key]
        changed = {k[0] for k in set(self.probes) ^ set(wanted)}
        self.probes = wanted
        now = asyncio.get_running_loop().time()
        for key, probe in wanted.items():
            if key not in self._scheduled:
                self._scheduled[key] = probe
                self._schedule(probe, now + random.uniform(0, probe.spec.interval))
        for upstream in changed:
            self.on_change(upstream)

    def _unschedule(self, key: Key) -> None:
        del self._scheduled[key]
        self._due.pop(key, None)  # its wheel entry is skipped; a probe under way is dropped

    def _schedule(self, probe: Probe, when: float) -> None:
        """Run ``probe`` at the first tick of the wheel at or after loop time ``when``."""
        loop = asyncio.get_running_loop()
        if self._turner is None:  # the wheel is empty: it starts again from now
            self._turned = int(loop.time() / TICK)
        tick = max(math.ceil(when / TICK), self._turned + 1)
        self._due[probe.key] = when
        bucket = self._wheel.get(tick)
        if bucket is None:
            self._wheel[tick] = [(probe, when)]
        else:
            bucket.append((probe, when))
        if self._turner is None:
            self._turner = loop.call_at(tick * TICK, self._turn)

    def _turn(self) -> None:
        """Start the probes of every tick that has come (one loop timer for all checks)."""
        loop = asyncio.get_running_loop()
        now = int(loop.time() / TICK)
        for tick in range(self._turned + 1, now + 1):
            for probe, when in self._wheel.pop(tick, ()):
                key = probe.key
                if self._due.get(key) == when and self._scheduled.get(key) is probe:
                    del self._due[key]
                    self.prober.start(probe.spec, probe.target, functools.partial(self._outcome, probe, when))
        self._turned = now
        self._turner = loop.call_at((now + 1) * TICK, self._turn) if self._wheel else None

    def _outcome(self, probe: Probe, due: float, outcome: Outcome) -> None:
        """Count the outcome and put the check in the slot of its next run.

        The next run is counted from when this one was due, not from when it started, so that
        a loop running late (a busy machine) never slows the checks down.
        """
        if self._scheduled.get(probe.key) is not probe:
            return  # stopped or changed while it ran
        self.result(probe, outcome)
        state = self.states.get(probe.key)
        delay = probe.spec.interval
        if state is not None and state.run < 0:
            delay *= self.fast
        self._schedule(probe, due + delay * random.uniform(1 - self.jitter, 1 + self.jitter))

    async def run_once(self, state: DesiredState) -> int:
        """Run every check of ``state`` once (``converge``); the number of checks that flipped."""
        self.probes = probes_of(state)
        probes = list(self.probes.values())
        outcomes = await asyncio.gather(*(self.prober.probe(p.spec, p.target) for p in probes))
        return sum(self.result(p, o) for p, o in zip(probes, outcomes, strict=True))

    async def stop(self) -> None:
        """Stop scheduling checks; an outcome still under way is dropped when it comes back."""
        self._scheduled.clear()
        self._due.clear()
        self._wheel.clear()
        if self._turner is not None:
            self._turner.cancel()
            self._turner = None
