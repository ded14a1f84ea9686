"""The run clock: applies the timeline's events at their instants on one monotonic clock.

Events of one instant are applied together (one shaper call, at most one controller push).
Each instant is recorded with its scenario time, scheduled and applied clock instants, and
lateness; `speed` > 1 runs scenario time faster than wall time.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from netem.player import Clock, play_instants, realtime, wait_until
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
        """Apply every instant up to `until_t_ns` (blocking; stop() ends it early), on
        netem's one player loop (`play_instants`) with its real-time settings."""
        out = self._record_path.open("a") if self._record_path else None

        def apply(t_ns: int, due: int, batch: list[LinkEvent]) -> None:
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

        instants = ((t_ns, list(group))
                    for t_ns, group in itertools.groupby(self._events, key=lambda e: e.t_ns))
        try:
            with realtime(self._rt_priority, GIL_SWITCH_INTERVAL_S):
                play_instants(instants, apply, self._clock, start_ns, self._stop,
                              speed=self._speed, until_t_ns=until_t_ns)
                if not self._stop.is_set():  # no more events: hold until the scenario ends
                    if wait_until(self._clock, self.wall_instant(start_ns, until_t_ns),
                                  self._stop):
                        self.scenario_now_ns = until_t_ns
        finally:
            if out is not None:
                out.close()
        return self.applied
