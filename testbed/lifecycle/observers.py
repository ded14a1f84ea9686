"""Run observers: what `hold()` tells about a run as it happens (up, each instant, each fault,
the end). The live status file, the progress bar and the metrics exporter are observers; a new
view of a run is a new observer, not a new closure inside `hold()`.

Observers run on the clock's thread for `on_instant`, so they must be cheap there (microseconds;
anything slower belongs on a thread of its own, woken by the observer).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from testbed.errors import TestbedError
from testbed.lifecycle.clock import AppliedInstant


class RunObserver:
    """Base with no-op hooks; subclasses override what they need."""

    def on_up(self, net: Any) -> None:
        """The network is up and the clock is about to start."""

    def on_instant(self, rec: AppliedInstant) -> None:
        """One instant of the timeline was applied (on the clock's thread)."""

    def on_fault(self, record: dict[str, Any]) -> None:
        """A fault or a recovery step was recorded (testbed.lifecycle.faults)."""

    def on_end(self, held: Any) -> None:
        """The run is over (results collected, before teardown)."""


class Observers(RunObserver):
    """Several observers as one; a failing observer is reported, never stops the run."""

    def __init__(self, observers: Sequence[RunObserver], report: Callable[[str], None]) -> None:
        self.observers = list(observers)
        self.report = report
        self.failures: dict[str, int] = {}

    def _each(self, hook: str, *args: Any) -> None:
        for obs in self.observers:
            try:
                getattr(obs, hook)(*args)
            except (TestbedError, OSError, ValueError, RuntimeError) as exc:
                name = f"{type(obs).__name__}.{hook}"
                self.failures[name] = self.failures.get(name, 0) + 1
                if self.failures[name] == 1:
                    self.report(f"observer {name} failed: {type(exc).__name__}: {exc}")

    def on_up(self, net: Any) -> None:
        self._each("on_up", net)

    def on_instant(self, rec: AppliedInstant) -> None:
        self._each("on_instant", rec)

    def on_fault(self, record: dict[str, Any]) -> None:
        self._each("on_fault", record)

    def on_end(self, held: Any) -> None:
        self._each("on_end", held)


class ProgressObserver(RunObserver):
    """Scenario time on the CLI's progress bar."""

    def __init__(self, progress: Callable[[str, int, int], None], duration_s: float) -> None:
        self.progress = progress
        self.duration_s = int(duration_s)

    def on_instant(self, rec: AppliedInstant) -> None:
        self.progress("scenario time", int(rec.scenario_t_ns / 1e9), self.duration_s)

    def on_end(self, held: Any) -> None:
        if not held.interrupted:
            self.progress("scenario time", self.duration_s, self.duration_s)


class StatusFileObserver(RunObserver):
    """status.json about once a second from the first applied instant on (what `testbed
    status`, the live view and tests waiting for a live network read)."""

    def __init__(self, write: Callable[[AppliedInstant], None], period_s: float = 1.0) -> None:
        self.write = write
        self.period_s = period_s
        self._last = 0.0

    def on_instant(self, rec: AppliedInstant) -> None:
        now = time.monotonic()
        if now - self._last > self.period_s:
            self._last = now
            self.write(rec)
