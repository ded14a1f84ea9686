"""The run clock: applies the timeline's events at their instants on one monotonic clock.

Events of one instant are applied together (one shaper call, at most one controller push).
Each instant is recorded with its scenario time, scheduled and applied clock instants, and
lateness; `speed` > 1 runs scenario time faster than wall time.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from netem.player import Clock, wait_until
from testbed.errors import TestbedError
from testbed.timeline.model import LinkEvent

Apply = Callable[[Sequence[LinkEvent], int], dict[str, int]]

GIL_SWITCH_INTERVAL_S = 0.0005
"""While the clock runs: how long another thread of this process (route pusher, control
socket, workload) may hold the GIL before the clock's thread gets it back. Python's default,
5 ms, alone would break a 2 ms lateness target."""


@dataclass(frozen=True)
class AppliedInstant:
    scenario_t_ns: int
    scheduled_ns: int
    applied_ns: int
    events: int
    kinds: str

    @property
    def lateness_ns(self) -> int:
        return self.applied_ns - self.scheduled_ns


class RunClock:
    """Plays `events` (sorted by t_ns) through `apply`; writes each instant to `record_path`."""

    def __init__(self, events: Iterable[LinkEvent], apply: Apply, clock: Clock, *,
                 speed: float = 1.0, record_path: Path | None = None,
                 rt_priority: int = 0) -> None:
        if not speed > 0:
            raise TestbedError(f"run clock speed={speed}, expected > 0")
        self._events = events
        self._apply = apply
        self._clock = clock
        self._speed = speed
        self._record_path = record_path
        self._rt_priority = rt_priority
        self._stop = threading.Event()
        self.applied: list[AppliedInstant] = []
        self.scenario_now_ns = 0

    def stop(self) -> None:
        self._stop.set()

    def wall_instant(self, start_ns: int, t_ns: int) -> int:
        return start_ns + round(t_ns / self._speed)

    def run(self, start_ns: int, until_t_ns: int,
            on_instant: Callable[[AppliedInstant], None] | None = None) -> list[AppliedInstant]:
        """Apply every instant up to `until_t_ns` (blocking; stop() ends it early)."""
        out = self._record_path.open("a") if self._record_path else None
        previous_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(previous_interval, GIL_SWITCH_INTERVAL_S))
        previous_policy = _raise_thread_priority(self._rt_priority)
        try:
            for t_ns, group in itertools.groupby(self._events, key=lambda e: e.t_ns):
                if t_ns > until_t_ns:
                    break
                batch = list(group)
                due = self.wall_instant(start_ns, t_ns)
                if not wait_until(self._clock, due, self._stop):
                    break
                self._apply(batch, due)
                applied = self._clock.now_ns()
                self.scenario_now_ns = t_ns
                kinds = ",".join(sorted({e.kind for e in batch}))
                rec = AppliedInstant(t_ns, due, applied, len(batch), kinds)
                self.applied.append(rec)
                if out is not None:
                    out.write(json.dumps({**asdict(rec), "lateness_ns": rec.lateness_ns}) + "\n")
                if on_instant is not None:
                    on_instant(rec)
            else:
                # no more events: hold until the scenario ends
                wait_until(self._clock, self.wall_instant(start_ns, until_t_ns), self._stop)
                self.scenario_now_ns = until_t_ns
        finally:
            sys.setswitchinterval(previous_interval)
            if previous_policy is not None:
                os.sched_setscheduler(0, *previous_policy)
            if out is not None:
                out.close()
        return self.applied


def _raise_thread_priority(rt_priority: int) -> tuple[int, os.sched_param] | None:
    """SCHED_FIFO for the calling thread only (Linux applies it per thread), so that the
    controller and OVS recomputing routes on the same cores do not delay the next instant.
    Returns the policy to restore, or None when not asked or not permitted (no root)."""
    if rt_priority <= 0:
        return None
    previous = (os.sched_getscheduler(0), os.sched_getparam(0))
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(rt_priority))
    except PermissionError:
        return None
    return previous
