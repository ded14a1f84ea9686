"""Route changes off the run clock's thread, in order, newest snapshot wins.

The clock must apply link changes within a couple of milliseconds of their instant; a controller
round trip (push, compute, flows installed on every switch) takes tens of milliseconds. So the
clock submits each new topology here and moves on. One worker thread applies the newest
pending snapshot (older ones are superseded: the newest already holds their changes), then runs
the work each submission deferred until its routes are in effect: the shaper taking the
departing links down (make-before-break at handovers).
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from controller.api import push_snapshot, wait_applied
from controller.errors import StaleGenerationError
from controller.model import Snapshot
from testbed.errors import TestbedError

Deferred = Callable[[], None]


class RouteProgrammer(Protocol):
    """Puts a snapshot's routes in effect; returns when the data plane follows them."""

    def apply(self, snapshot: Snapshot) -> object: ...


@dataclass
class ControllerRoutes:
    """Routes computed and installed by the os-ken controller (the default)."""

    endpoint: str
    timeout_s: float = 30.0
    token: str | None = None
    """The run's token: the controller's API refuses calls without it."""

    def apply(self, snapshot: Snapshot) -> None:
        try:
            push_snapshot(self.endpoint, snapshot, token=self.token)
        except StaleGenerationError:
            return  # a newer generation is in place already (pushed after a restart)
        wait_applied(self.endpoint, snapshot.generation, timeout_s=self.timeout_s,
                     token=self.token)


@dataclass
class RouteChange:
    """One submitted topology and what happened to it (monotonic ns)."""

    generation: int
    label: str | None
    scheduled_ns: int | None
    submitted_ns: int
    installed_ns: int | None = None
    superseded_by: int | None = None
    deferred_done_ns: int | None = None
    error: str | None = None

    @property
    def install_ms(self) -> float | None:
        """From the scheduled instant (or submission) to the routes being in effect."""
        if self.installed_ns is None:
            return None
        return (self.installed_ns - (self.scheduled_ns or self.submitted_ns)) / 1e6


@dataclass
class _Pending:
    change: RouteChange
    snapshot: Snapshot | Callable[[], Snapshot]
    deferred: Deferred | None

    def build(self) -> Snapshot:
        return self.snapshot if isinstance(self.snapshot, Snapshot) else self.snapshot()


@dataclass
class RoutePusher:
    """Applies submitted snapshots on one thread; `lock` pauses it (controller restart)."""

    programmer: RouteProgrammer
    record_path: Path | None = None
    now_ns: Callable[[], int] = time.monotonic_ns
    changes: list[RouteChange] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._pending: list[_Pending] = []
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="route-pusher", daemon=True)
        self._thread.start()

    def submit(self, snapshot: Snapshot | Callable[[], Snapshot], *,
               generation: int | None = None, label: str | None = None,
               scheduled_ns: int | None = None, deferred: Deferred | None = None
               ) -> RouteChange:
        """Queue `snapshot`; `deferred` runs once its routes (or a newer one's) are in effect.

        `snapshot` may be a function that builds it (then give `generation` and `label`): it
        runs on the pusher's thread, and only for the newest pending change.
        """
        if isinstance(snapshot, Snapshot):
            generation, label = snapshot.generation, snapshot.label
        elif generation is None:
            raise TestbedError("a snapshot factory needs its generation")
        change = RouteChange(generation, label, scheduled_ns, self.now_ns())
        with self._cond:
            if self._closed:
                raise TestbedError("route pusher is closed: no more route changes")
            self._pending.append(_Pending(change, snapshot, deferred))
            self.changes.append(change)
            self._cond.notify()
        return change

    def drain(self, timeout_s: float = 60.0) -> bool:
        """Wait until every submitted change is applied; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
        return True

    def close(self, timeout_s: float = 60.0) -> None:
        """Apply what is pending (bounded by `timeout_s`), then stop the thread."""
        self.drain(timeout_s)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5.0)

    def _loop(self) -> None:
        out = self.record_path.open("a") if self.record_path else None
        try:
            while True:
                with self._cond:
                    while not self._pending and not self._closed:
                        self._cond.wait()
                    if not self._pending:
                        return
                    batch, self._pending = self._pending, []
                    self._busy = True
                try:
                    self._apply(batch)
                finally:
                    with self._cond:
                        self._busy = False
                        self._cond.notify_all()
                if out is not None:
                    for p in batch:
                        out.write(json.dumps(asdict(p.change)) + "\n")
                    out.flush()
        finally:
            if out is not None:
                out.close()

    def _apply(self, batch: list[_Pending]) -> None:
        newest = batch[-1]
        with self.lock:
            try:
                self.programmer.apply(newest.build())
            except Exception as exc:  # noqa: BLE001 - recorded, reported by the run's summary
                message = f"generation {newest.change.generation}: {exc}"
                self.errors.append(message)
                for p in batch:
                    p.change.error = message
            installed = self.now_ns()
            for p in batch:
                p.change.installed_ns = installed
                if p is not newest:
                    p.change.superseded_by = newest.change.generation
            for p in batch:
                if p.deferred is None:
                    continue
                try:
                    p.deferred()
                except Exception as exc:  # noqa: BLE001 - as above
                    message = f"generation {p.change.generation} deferred change: {exc}"
                    self.errors.append(message)
                    p.change.error = message
                p.change.deferred_done_ns = self.now_ns()

    def summary(self) -> dict[str, object]:
        """Counts and install times (ms from the scheduled instant) for the run summary."""
        install = [c.install_ms for c in self.changes if c.install_ms is not None]
        deferred = [(c.deferred_done_ns - (c.scheduled_ns or c.submitted_ns)) / 1e6
                    for c in self.changes if c.deferred_done_ns is not None]
        return {"submitted": len(self.changes),
                "superseded": sum(c.superseded_by is not None for c in self.changes),
                "install_ms": percentiles(install),
                "make_before_break_downs": len(deferred),
                "down_after_ms": percentiles(deferred),
                "errors": list(self.errors)}


def percentiles(values: list[float]) -> dict[str, float] | None:
    """p50 / p99 / max of `values` (sorted or not); None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return {"p50": statistics.median(ordered),
            "p99": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
            "max": ordered[-1]}
