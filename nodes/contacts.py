"""The node's contact schedule: when its ground links are up, on the wall clock of this node.

Owns the mapping from scenario time to wall time (`unix_s = scenario_start_unix_s +
scenario_s / speed`) and the questions an on-board scheduler asks: am I in contact, when is the
next window, wait until one opens. So a satellite waits for its pass instead of retrying blindly.
The windows come from the pushed RunContext (context.py). The wall clock and the wait are passed
in, so tests drive a fake clock.

Example:
    sched = ContactSchedule(run_context)
    window = sched.wait_for_contact(stop_event, peer="gs")   # None when stopped or none left
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from nodes.context import RunContext


@dataclass(frozen=True)
class ContactWindow:
    """One contact: scenario seconds from scenario start and the same instants in unix seconds."""

    peer: str
    start_s: float
    end_s: float
    start_unix_s: float
    end_unix_s: float


def _event_wait(stop: threading.Event, timeout_s: float) -> bool:
    return stop.wait(timeout_s)


class ContactSchedule:
    """Contact windows of one node, answered against a wall clock.

    Args:
        context: the pushed run context (its `contacts`, `scenario_start_unix_s`, `speed`).
        now_unix_s: the wall clock (default `time.time`).
        wait: `wait(stop_event, timeout_s) -> stopped`; default `stop_event.wait`.
        max_sleep_s: longest single wait, so a changed clock is noticed.
    """

    def __init__(self, context: RunContext, *,
                 now_unix_s: Callable[[], float] = time.time,
                 wait: Callable[[threading.Event, float], bool] = _event_wait,
                 max_sleep_s: float = 1.0):
        self.context = context
        self._now = now_unix_s
        self._wait = wait
        self.max_sleep_s = max_sleep_s
        self.windows = tuple(self._window(c.peer, c.start_s, c.end_s) for c in context.contacts)

    def _window(self, peer: str, start_s: float, end_s: float) -> ContactWindow:
        return ContactWindow(peer=peer, start_s=start_s, end_s=end_s,
                             start_unix_s=self.unix_s(start_s), end_unix_s=self.unix_s(end_s))

    def scenario_s(self, now_unix_s: float) -> float:
        """Scenario seconds since scenario start at wall instant `now_unix_s`."""
        return (now_unix_s - self.context.scenario_start_unix_s) * self.context.speed

    def unix_s(self, scenario_s: float) -> float:
        """The wall instant of scenario second `scenario_s`."""
        return self.context.scenario_start_unix_s + scenario_s / self.context.speed

    def _mine(self, peer: str | None) -> list[ContactWindow]:
        return [w for w in self.windows if peer is None or w.peer == peer]

    def current(self, now_unix_s: float, peer: str | None = None) -> ContactWindow | None:
        """The window open at `now_unix_s` (start inclusive, end exclusive), else None."""
        t_s = self.scenario_s(now_unix_s)
        return next((w for w in self._mine(peer) if w.start_s <= t_s < w.end_s), None)

    def in_contact(self, now_unix_s: float, peer: str | None = None) -> bool:
        return self.current(now_unix_s, peer) is not None

    def next_contact(self, now_unix_s: float, peer: str | None = None) -> ContactWindow | None:
        """The window open now, else the next one to open; None when none is left."""
        t_s = self.scenario_s(now_unix_s)
        return next((w for w in self._mine(peer) if w.end_s > t_s), None)

    def wait_for_contact(self, stop: threading.Event,
                         peer: str | None = None) -> ContactWindow | None:
        """Blocks until a window (with `peer`, or any) is open and returns it; None when `stop`
        is set first or no window is left."""
        while not stop.is_set():
            now = self._now()
            window = self.next_contact(now, peer)
            if window is None:
                return None
            if window.start_unix_s <= now:
                return window
            if self._wait(stop, min(self.max_sleep_s, window.start_unix_s - now)):
                return None
        return None
