"""The one lifecycle every workload shares: start -> running -> finished | stopped | failed.

Owns the workload thread, its state, its start/end stamps and the shape of results (the same
top-level keys for every kind). A kind only parses its options and implements `_run`,
`_summary` and `_events`.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from nodes.clock import Stamp, SystemClock
from nodes.context import ContextRef, RunContext
from nodes.errors import DataPlaneError, WorkloadStateError
from nodes.metrics import Metrics

if TYPE_CHECKING:
    from nodes.contacts import ContactSchedule
    from nodes.dataplane import DataPlane

RESULT_KEYS = ("kind", "node", "role", "state", "started_utc", "ended_utc", "elapsed_s",
               "options", "error", "summary", "events")


class Role(StrEnum):
    SATELLITE = "satellite"
    GROUND = "ground"


class WorkloadState(StrEnum):
    IDLE = "idle"
    RUNNING = "running"
    FINISHED = "finished"   # did all it had to do
    STOPPED = "stopped"     # stop() or its deadline ended it first
    FAILED = "failed"       # raised; `error` says what


@dataclass(frozen=True)
class NodeContext:
    """What a workload may know about its node. `data_ip`: the address on the emulated data
    network (senders bind to it, receivers listen on it); `results_dir`: the agent's results
    folder; `output_dir`: this job's own folder (served by `GET /jobs/<id>/files`); `run`: the
    context the orchestrator pushed; `dataplane`: send/recv to named peers."""

    name: str
    role: Role
    data_ip: str | None
    results_dir: Path | None
    metrics: Metrics
    clock: SystemClock
    output_dir: Path | None = None
    run: ContextRef = field(default_factory=ContextRef)
    dataplane: DataPlane | None = None

    def run_context(self) -> RunContext:
        """The pushed run context; ContextError when none was pushed yet."""
        return self.run.require(f"node {self.name}")

    def contacts(self) -> ContactSchedule:
        """This node's contact schedule, from the pushed run context."""
        from nodes.contacts import ContactSchedule

        return ContactSchedule(self.run_context())

    def require_dataplane(self) -> DataPlane:
        if self.dataplane is None:
            raise DataPlaneError(f"node {self.name}: no data plane (the agent has no data IP)")
        return self.dataplane


class Workload(ABC):
    """Base of every workload. `options` are validated in `__init__` (WorkloadOptionsError).

    `on_end(workload)` is called from the workload thread once it ended (any final state).
    """

    kind: ClassVar[str] = ""

    def __init__(self, ctx: NodeContext, options: Mapping[str, object] | None,
                 on_end: Callable[[Workload], None] | None = None):
        self.ctx = ctx
        self.options = dict(options or {})
        self._on_end = on_end
        self._state = WorkloadState.IDLE
        self._error = ""
        self._started: Stamp | None = None
        self._ended: Stamp | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._state is not WorkloadState.IDLE:
                raise WorkloadStateError(f"workload {self.kind} on {self.ctx.name}: start in "
                                         f"state {self._state.value}, expected idle")
            self._prepare()  # may raise (port in use): stays idle, caller sees the error
            self._started = self.ctx.clock.stamp()
            self._state = WorkloadState.RUNNING
            self.ctx.metrics.add("leo_node_workload_running", 1, kind=self.kind)
            self._thread = threading.Thread(target=self._main, name=f"workload-{self.kind}",
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> WorkloadState:
        """Asks the workload to end and waits up to `timeout_s`; idempotent."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():
                raise WorkloadStateError(f"workload {self.kind} on {self.ctx.name}: still "
                                         f"running {timeout_s} s after stop")
        return self.state

    def wait(self, timeout_s: float) -> bool:
        """True once the workload has ended (any final state)."""
        thread = self._thread
        if thread is None:
            return False
        thread.join(timeout_s)
        return not thread.is_alive()

    @property
    def state(self) -> WorkloadState:
        with self._lock:
            return self._state

    def _main(self) -> None:
        final = WorkloadState.FINISHED
        error = ""
        try:
            if not self._run(self._stop):
                final = WorkloadState.STOPPED
        except Exception as exc:  # noqa: BLE001 -- recorded as state=failed, shown by results
            final, error = WorkloadState.FAILED, f"{type(exc).__name__}: {exc}"
        finally:
            self._cleanup()
        with self._lock:
            self._ended = self.ctx.clock.stamp()
            self._state, self._error = final, error
        self.ctx.metrics.add("leo_node_workload_running", -1, kind=self.kind)
        if self._on_end is not None:
            self._on_end(self)

    # results ---------------------------------------------------------------------------------
    def results(self, include_events: bool = True) -> dict[str, object]:
        """The same top-level keys (RESULT_KEYS) for every kind; readable while running."""
        with self._lock:
            state, error, started, ended = self._state, self._error, self._started, self._ended
        end_ns = ended.t_ns if ended else self.ctx.clock.monotonic_ns()
        elapsed_s = (end_ns - started.t_ns) / 1e9 if started else 0.0
        out: dict[str, object] = {
            "kind": self.kind, "node": self.ctx.name, "role": self.ctx.role.value,
            "state": state.value, "started_utc": started.utc if started else None,
            "ended_utc": ended.utc if ended else None, "elapsed_s": elapsed_s,
            "options": self.options, "error": error,
            "summary": self._summary(elapsed_s),
            "events": self._events() if include_events else [],
        }
        return out

    def progress(self) -> dict[str, object] | None:
        """`{done, total, unit}` for kinds that can count their work; None otherwise."""
        return None

    # what a kind implements -----------------------------------------------------------------
    @abstractmethod
    def _prepare(self) -> None:
        """Acquire what must exist before `start` returns (e.g. bind a port)."""

    @abstractmethod
    def _run(self, stop: threading.Event) -> bool:
        """The work; returns True when done, False when stop/deadline ended it first."""

    @abstractmethod
    def _cleanup(self) -> None:
        """Release what `_prepare` acquired; runs in every case."""

    @abstractmethod
    def _summary(self, elapsed_s: float) -> dict[str, object]:
        """Aggregates for the run summary (readable while running)."""

    @abstractmethod
    def _events(self) -> list[dict[str, object]]:
        """Per-item records with monotonic and UTC times."""
