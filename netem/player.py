"""LinkPlayer: makes link directions follow a schedule of states, on a clock passed in.

Owns the timing of changes and their record (scheduled vs applied instant, changed fields);
applying a state is the Shaper's job, and where a schedule comes from (a trace, the testbed's
timeline) is the caller's. Waiting is bounded: the player sleeps until `spin_ns` (200 µs)
before an instant, in slices of at most `max_sleep_ns` so stop() is honoured quickly, then
spins briefly on the clock; no core is burnt between changes.

    >>> from netem.linkstate import LinkState
    >>> a = [(0, LinkState(10_000_000)), (1_000, LinkState(5_000_000))]
    >>> schedule = merge_timelines({"a": a})
    >>> [(t, {k: s.rate_bps for k, s in states.items()}) for t, states in schedule]
    [(0, {'a': 10000000}), (1000, {'a': 5000000})]
"""

from __future__ import annotations

import heapq
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any, Protocol, TypeVar

from netem.errors import LinkStateError, NetemError
from netem.linkstate import LinkState
from netem.shapers.base import Shaper

Schedule = Iterable[tuple[int, Mapping[str, LinkState]]]
T = TypeVar("T")
_STALLED_READS = 100  # identical consecutive readings: the clock does not run by itself


class Clock(Protocol):
    """A monotonic clock in nanoseconds that can sleep (tests pass a fake one)."""

    def now_ns(self) -> int: ...

    def sleep_ns(self, duration_ns: int) -> None: ...


class MonotonicClock:
    """time.monotonic_ns, the testbed's one clock."""

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def sleep_ns(self, duration_ns: int) -> None:
        if duration_ns > 0:
            time.sleep(duration_ns / 1e9)


class TraceLike(Protocol):
    """What the player needs of netem.traces.Trace."""

    def states(
        self, direction: str = "down", base: LinkState | None = None
    ) -> Iterable[tuple[int, LinkState]]: ...


@dataclass(frozen=True)
class AppliedChange:
    """One direction's change as applied: when it was due, when it took effect, what changed.

    scenario_t_ns: the schedule's time; scheduled_ns / started_ns / applied_ns: clock instants
    when it was due, when apply began and when the shaper returned (the change is in force).
    """

    direction: str
    scenario_t_ns: int
    scheduled_ns: int
    started_ns: int
    applied_ns: int
    changed: Mapping[str, Any] = field(default_factory=dict)

    @property
    def lateness_ns(self) -> int:
        return self.applied_ns - self.scheduled_ns

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record for the run directory."""
        changed = {
            k: asdict(v) if is_dataclass(v) and not isinstance(v, type) else v
            for k, v in self.changed.items()
        }
        return {
            "direction": self.direction,
            "scenario_t_ns": self.scenario_t_ns,
            "scheduled_ns": self.scheduled_ns,
            "started_ns": self.started_ns,
            "applied_ns": self.applied_ns,
            "lateness_ns": self.lateness_ns,
            "changed": changed,
        }


def merge_timelines(
    timelines: Mapping[str, Iterable[tuple[int, LinkState]]],
) -> Iterator[tuple[int, dict[str, LinkState]]]:
    """Merge per-direction `(t_ns, state)` series into one schedule, lazily; states of several
    directions at the same instant come out together (one batch for the shaper)."""

    def tagged(i: int, key: str, series: Iterable[tuple[int, LinkState]]) -> Iterator[Any]:
        # (t, stream, position) orders fully, so states themselves are never compared
        for n, (t_ns, state) in enumerate(series):
            yield t_ns, i, n, key, state

    streams = [tagged(i, key, series) for i, (key, series) in enumerate(timelines.items())]
    pending: dict[str, LinkState] = {}
    pending_t: int | None = None
    for t_ns, _, _, key, state in heapq.merge(*streams):
        if pending_t is not None and t_ns != pending_t:
            yield pending_t, pending
            pending = {}
        pending_t = t_ns
        pending[key] = state
    if pending_t is not None:
        yield pending_t, pending


def schedule_from_trace(
    trace: TraceLike,
    directions: Mapping[str, str],
    bases: Mapping[str, LinkState] | None = None,
) -> Iterator[tuple[int, dict[str, LinkState]]]:
    """Schedule for shaper directions following a trace: directions maps shaper key -> trace
    direction ('down' / 'up'); bases (per shaper key) supply what the trace lacks."""
    bases = bases or {}
    return merge_timelines(
        {key: trace.states(tdir, bases.get(key)) for key, tdir in directions.items()}
    )


def wait_until(clock: Clock, due_ns: int, stop: threading.Event, *, spin_ns: int = 200_000,
               max_sleep_ns: int = 20_000_000, max_spins: int = 1_000_000) -> bool:
    """Sleep in bounded slices, then spin on the clock, until `due_ns`; False if `stop` was
    set meanwhile. Shared by every player of scheduled changes (links here, the testbed's run
    clock), so none burns a core between changes."""
    while not stop.is_set():
        remaining = due_ns - clock.now_ns()
        if remaining <= spin_ns:
            break
        clock.sleep_ns(min(remaining - spin_ns, max_sleep_ns))
    else:
        return False
    last, stalled = -1, 0
    for _ in range(max_spins):
        now = clock.now_ns()
        if now >= due_ns:
            return True
        stalled = stalled + 1 if now == last else 0
        if stalled >= _STALLED_READS:
            break  # a clock that only moves when slept (a fake clock)
        last = now
    clock.sleep_ns(due_ns - clock.now_ns())
    return not stop.is_set()


def play_instants(
    schedule: Iterable[tuple[int, T]],
    apply: Callable[[int, int, T], None],
    clock: Clock,
    start_ns: int,
    stop: threading.Event,
    *,
    speed: float = 1.0,
    until_t_ns: int | None = None,
    spin_ns: int = 200_000,
    max_sleep_ns: int = 20_000_000,
    max_spins: int = 1_000_000,
) -> int | None:
    """The one loop every player of scheduled changes runs: for each `(t_ns, item)` (scenario
    nanoseconds, non-decreasing), wait until its wall instant `start_ns + t_ns / speed` and call
    `apply(t_ns, due_ns, item)`. Returns the scenario time of the last applied item (None if
    none), stopping early when `stop` is set or `t_ns` passes `until_t_ns`.

    Raises LinkStateError when times go backwards or are negative."""
    if not (math.isfinite(speed) and speed > 0):
        raise NetemError(f"player speed={speed}, expected a finite number > 0")
    previous_t, last = 0, None
    for index, (t_ns, item) in enumerate(schedule):
        if t_ns < previous_t:
            raise LinkStateError(
                f"schedule entry {index}: t_ns={t_ns} is before the previous {previous_t}, "
                "expected non-decreasing times from 0"
            )
        previous_t = t_ns
        if until_t_ns is not None and t_ns > until_t_ns:
            break
        due = start_ns + round(t_ns / speed)
        if not wait_until(clock, due, stop, spin_ns=spin_ns, max_sleep_ns=max_sleep_ns,
                          max_spins=max_spins):
            break
        apply(t_ns, due, item)
        last = t_ns
    return last


@contextmanager
def realtime(rt_priority: int = 0, switch_interval_s: float | None = None) -> Iterator[bool]:
    """While a player runs on the calling thread: SCHED_FIFO at `rt_priority` (this thread
    only; skipped without the permission, yields whether it took effect) and a shorter GIL
    switch interval (other threads of the process give the GIL back sooner). Both restored."""
    previous_interval = sys.getswitchinterval()
    if switch_interval_s is not None:
        sys.setswitchinterval(min(previous_interval, switch_interval_s))
    previous_policy = None
    if rt_priority > 0:
        previous = (os.sched_getscheduler(0), os.sched_getparam(0))
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(rt_priority))
            previous_policy = previous
        except PermissionError:
            previous_policy = None
    try:
        yield previous_policy is not None
    finally:
        sys.setswitchinterval(previous_interval)
        if previous_policy is not None:
            os.sched_setscheduler(0, *previous_policy)


class LinkPlayer:
    """Applies a schedule's states through a Shaper at their instants and records each change.

    speed: scenario seconds per wall second (2.0 plays twice as fast); schedule times are
    scenario nanoseconds from the start instant passed to run().
    """

    def __init__(
        self,
        shaper: Shaper,
        schedule: Schedule,
        clock: Clock,
        *,
        speed: float = 1.0,
        spin_ns: int = 200_000,
        max_sleep_ns: int = 20_000_000,
        max_spins: int = 1_000_000,
    ) -> None:
        if not (math.isfinite(speed) and speed > 0):
            raise NetemError(f"link player speed={speed}, expected a finite number > 0")
        if spin_ns < 0 or max_sleep_ns <= 0 or max_spins < 1:
            raise NetemError(
                f"link player spin_ns={spin_ns}, max_sleep_ns={max_sleep_ns}, "
                f"max_spins={max_spins}: expected spin_ns >= 0 and the others > 0"
            )
        self._shaper = shaper
        self._schedule = schedule
        self._clock = clock
        self._speed = speed
        self._spin_ns = spin_ns
        self._max_sleep_ns = max_sleep_ns
        self._max_spins = max_spins
        self._stop = threading.Event()
        self._records: list[AppliedChange] = []
        self._started = False

    @property
    def records(self) -> list[AppliedChange]:
        """Changes applied so far, in order (a copy)."""
        return list(self._records)

    def stop(self) -> None:
        """Ask run() to return before the next change (safe from another thread)."""
        self._stop.set()

    def wall_instant(self, start_ns: int, scenario_t_ns: int) -> int:
        """Clock instant at which scenario time `scenario_t_ns` falls."""
        return start_ns + round(scenario_t_ns / self._speed)

    def run(
        self, start_ns: int | None = None, until_t_ns: int | None = None
    ) -> list[AppliedChange]:
        """Play the schedule (blocking) from clock instant `start_ns` (default: now) until it
        ends, scenario time passes `until_t_ns`, or stop(). Returns the records.

        Raises LinkStateError if the schedule's times go backwards or are negative; a shaper
        error stops playing and propagates (records so far stay in .records).
        """
        if self._started:
            raise NetemError("a LinkPlayer runs once; make a new one")
        self._started = True
        start = self._clock.now_ns() if start_ns is None else start_ns
        play_instants(self._schedule, self._apply, self._clock, start, self._stop,
                      speed=self._speed, until_t_ns=until_t_ns, spin_ns=self._spin_ns,
                      max_sleep_ns=self._max_sleep_ns, max_spins=self._max_spins)
        return self.records

    def _apply(self, t_ns: int, due_ns: int, states: Mapping[str, LinkState]) -> None:
        diffs = {key: self._shaper.current(key).diff(state) for key, state in states.items()}
        changed = {key: state for key, state in states.items() if diffs[key]}
        if not changed:
            return
        started = self._clock.now_ns()
        self._shaper.apply_many(changed)
        applied = self._clock.now_ns()
        for key in changed:
            self._records.append(AppliedChange(key, t_ns, due_ns, started, applied, diffs[key]))
