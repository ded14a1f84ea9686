"""The node agent's state behind the management API: identity, metrics, workloads, results file.

Owns which workload runs (one at a time), the node's Metrics and `<results>/<name>.json`. The
HTTP layer (api.py) and the process entry (agent.py) only call it; tests may use it in process.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path

from nodes.clock import SystemClock
from nodes.errors import ConfigError, NodeError, WorkloadStateError
from nodes.metrics import Metrics
from nodes.protocol import FileHeader
from nodes.workloads import NodeContext, Role, Workload, WorkloadState, create_workload

log = logging.getLogger("nodes.agent")

RESULTS_SCHEMA = 1


class NodeAgent:
    """One node's state behind the API: identity, metrics, the workloads started so far.

    One workload runs at a time; a finished or stopped one may be followed by another. Every
    workload started stays in the results file, in order.
    """

    def __init__(self, name: str, role: Role, *, data_ip: str | None = None,
                 results_dir: Path | None = None, clock: SystemClock | None = None):
        try:  # the name goes into file names and transfer headers: same rules as a file name
            FileHeader(sender=name, file="x", size_bytes=0, sha256="0" * 64, transfer_id="x")
        except NodeError as exc:
            raise ConfigError(f"node name {name!r}: {exc}") from None
        self.name = name
        self.role = role
        self.data_ip = data_ip
        self.results_dir = results_dir
        self.clock = clock or SystemClock()
        self.metrics = Metrics({"node": name})
        self.metrics.set("leo_node_info", 1, role=role.value)
        self._started = self.clock.stamp()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._workloads: list[Workload] = []

    @property
    def context(self) -> NodeContext:
        return NodeContext(name=self.name, role=self.role, data_ip=self.data_ip,
                           results_dir=self.results_dir, metrics=self.metrics, clock=self.clock)

    def _current(self) -> Workload | None:
        with self._lock:
            return self._workloads[-1] if self._workloads else None

    def uptime_s(self) -> float:
        return (self.clock.monotonic_ns() - self._started.t_ns) / 1e9

    # API -------------------------------------------------------------------------------------
    def health(self) -> dict[str, object]:
        current = self._current()
        return {"name": self.name, "role": self.role.value, "data_ip": self.data_ip,
                "pid": os.getpid(), "started_utc": self._started.utc,
                "uptime_s": round(self.uptime_s(), 3),
                "workload": ({"kind": current.kind, "state": current.state.value}
                             if current else None)}

    def start_workload(self, kind: str, options: Mapping[str, object] | None) -> dict[str, object]:
        """Creates and starts a workload; WorkloadStateError while another one runs."""
        with self._lock:
            if self._workloads and self._workloads[-1].state is WorkloadState.RUNNING:
                raise WorkloadStateError(f"node {self.name}: workload "
                                         f"{self._workloads[-1].kind} is running; stop it first")
            workload = create_workload(kind, self.context, options, on_end=self._on_end)
            self._workloads.append(workload)  # before start: on_end may write results at once
            try:
                workload.start()
            except BaseException:
                self._workloads.pop()
                raise
        log.info("workload started", extra={"kind": kind})
        return {"kind": kind, "state": workload.state.value,
                "started_utc": workload.results(include_events=False)["started_utc"]}

    def stop_workload(self, timeout_s: float = 10.0) -> dict[str, object]:
        """Stops the current workload (idempotent) and returns its results without events."""
        current = self._current()
        if current is None:
            raise WorkloadStateError(f"node {self.name}: no workload was started")
        current.stop(timeout_s)
        return current.results(include_events=False)

    def results(self, include_events: bool = True) -> dict[str, object]:
        current = self._current()
        if current is None:
            raise WorkloadStateError(f"node {self.name}: no workload was started, no results")
        return current.results(include_events=include_events)

    def render_metrics(self) -> str:
        self.metrics.set("leo_node_uptime_seconds", round(self.uptime_s(), 3))
        return self.metrics.render()

    # shutdown and results file ---------------------------------------------------------------
    def close(self, timeout_s: float = 10.0) -> Path | None:
        """Stops the running workload and writes the results file (path; None without one)."""
        current = self._current()
        if current is not None:
            current.stop(timeout_s)
        return self.write_results()

    def _on_end(self, workload: Workload) -> None:
        log.info("workload ended", extra={"kind": workload.kind, "state": workload.state.value})
        self.write_results()

    def write_results(self) -> Path | None:
        """Writes `<results_dir>/<name>.json` atomically: every workload's results, in order."""
        if self.results_dir is None:
            return None
        with self._lock:
            workloads = list(self._workloads)
        doc = {"schema": RESULTS_SCHEMA, "node": self.name, "role": self.role.value,
               "agent_started_utc": self._started.utc, "written_utc": self.clock.utc_now(),
               "workloads": [w.results() for w in workloads]}
        path = self.results_dir / f"{self.name}.json"
        with self._write_lock:
            self.results_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".json.tmp{os.getpid()}")
            tmp.write_text(json.dumps(doc, indent=1) + "\n")
            os.replace(tmp, path)
        return path
