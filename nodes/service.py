"""The node agent's state behind the management API: identity, metrics, jobs, context, results.

Owns the agent's jobs (jobs.py: several may run at once), the pushed run context, the node's
data plane, its Metrics and `<results>/<name>.json`. The HTTP layer (api.py) and the process
entry (agent.py) only call it; tests may use it in process. The one-workload-at-a-time calls
(`start_workload`, `stop_workload`, `results`) are thin aliases onto jobs, kept until the
orchestrator uses the job API.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path

from nodes.clock import SystemClock
from nodes.context import ContextRef, RunContext
from nodes.dataplane import DataPlane
from nodes.errors import ConfigError, NodeError, WorkloadStateError
from nodes.jobs import Job, JobTable
from nodes.metrics import Metrics
from nodes.protocol import FileHeader
from nodes.workloads import NodeContext, Role, Workload, WorkloadState

log = logging.getLogger("nodes.agent")

RESULTS_SCHEMA = 1


class NodeAgent:
    """One node's state behind the API: identity, metrics, jobs, run context, data plane.

    Jobs run concurrently; every job submitted stays in the results file, in order.
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
        self.run = ContextRef()
        self.dataplane = DataPlane(name, data_ip, self.run) if data_ip else None
        self._started = self.clock.stamp()
        self._write_lock = threading.Lock()
        self._legacy_lock = threading.Lock()
        self.jobs = JobTable(name, lambda: self.context, on_end=self._on_end)

    @property
    def context(self) -> NodeContext:
        return NodeContext(name=self.name, role=self.role, data_ip=self.data_ip,
                           results_dir=self.results_dir, metrics=self.metrics, clock=self.clock,
                           run=self.run, dataplane=self.dataplane)

    def uptime_s(self) -> float:
        return (self.clock.monotonic_ns() - self._started.t_ns) / 1e9

    # API -------------------------------------------------------------------------------------
    def health(self) -> dict[str, object]:
        last = self.jobs.last()
        listener = self.dataplane.listener if self.dataplane else None
        return {"name": self.name, "role": self.role.value, "data_ip": self.data_ip,
                "pid": os.getpid(), "started_utc": self._started.utc,
                "uptime_s": round(self.uptime_s(), 3),
                "workload": {"kind": last.kind, "state": last.state.value} if last else None,
                "jobs_running": len(self.jobs.running()), "jobs_total": len(self.jobs.all()),
                "context": self.run.get() is not None,
                "data_listen": (f"{listener.host}:{listener.port}" if listener else None)}

    def set_context(self, doc: Mapping[str, object]) -> dict[str, object]:
        """Validates and keeps the pushed run context, (re)starts the data-plane listener on its
        port; ContextError names a bad field, DataPlaneError a taken port."""
        ctx = RunContext.from_json(doc)
        if ctx.node != self.name:
            raise ConfigError(f"context field node={ctx.node!r}: expected this agent's name "
                              f"{self.name!r}")
        if self.dataplane is not None:
            self.dataplane.listen(ctx.data_port)
        self.run.set(ctx)
        log.info("context set", extra={"peers": len(ctx.peers), "contacts": len(ctx.contacts),
                                       "data_port": ctx.data_port})
        return ctx.to_json()

    def get_context(self) -> dict[str, object]:
        return self.run.require(f"node {self.name}").to_json()

    def submit_job(self, kind: str, options: Mapping[str, object] | None,
                   job_id: str | None = None) -> dict[str, object]:
        job = self.jobs.submit(kind, options, job_id)
        log.info("job started", extra={"job": job.id, "kind": kind})
        return self._submitted(job)

    @staticmethod
    def _submitted(job: Job) -> dict[str, object]:
        return {"id": job.id, "kind": job.kind, "state": job.state.value,
                "submitted_utc": job.submitted.utc}

    # legacy one-workload calls (aliases onto jobs) -------------------------------------------
    def start_workload(self, kind: str, options: Mapping[str, object] | None) -> dict[str, object]:
        """Alias of submit_job that keeps the old rule: WorkloadStateError while a job runs."""
        with self._legacy_lock:
            running = self.jobs.running()
            if running:
                raise WorkloadStateError(f"node {self.name}: workload {running[-1].kind} "
                                         f"(job {running[-1].id}) is running; stop it first")
            job = self.jobs.submit(kind, options)
        log.info("workload started", extra={"job": job.id, "kind": kind})
        res = job.workload.results(include_events=False)
        return {"kind": kind, "state": job.state.value, "started_utc": res["started_utc"],
                "id": job.id}

    def stop_workload(self, timeout_s: float = 10.0) -> dict[str, object]:
        """Stops the last job (idempotent) and returns its results without events."""
        last = self.jobs.last()
        if last is None:
            raise WorkloadStateError(f"node {self.name}: no workload was started")
        if last.state is WorkloadState.RUNNING:
            last.cancelled = True
        last.workload.stop(timeout_s)
        return last.workload.results(include_events=False)

    def results(self, include_events: bool = True) -> dict[str, object]:
        last = self.jobs.last()
        if last is None:
            raise WorkloadStateError(f"node {self.name}: no workload was started, no results")
        return last.workload.results(include_events=include_events)

    def render_metrics(self) -> str:
        self.metrics.set("leo_node_uptime_seconds", round(self.uptime_s(), 3))
        return self.metrics.render()

    # shutdown and results file ---------------------------------------------------------------
    def close(self, timeout_s: float = 10.0) -> Path | None:
        """Stops every running job and the data plane, writes the results file (its path)."""
        try:
            self.jobs.stop_all(timeout_s)
        finally:
            if self.dataplane is not None:
                self.dataplane.close()
        return self.write_results()

    def _on_end(self, workload: Workload) -> None:
        log.info("workload ended", extra={"kind": workload.kind, "state": workload.state.value})
        self.write_results()

    def write_results(self) -> Path | None:
        """Writes `<results_dir>/<name>.json` atomically: every job's results, in order."""
        if self.results_dir is None:
            return None
        jobs = self.jobs.all()
        doc = {"schema": RESULTS_SCHEMA, "node": self.name, "role": self.role.value,
               "agent_started_utc": self._started.utc, "written_utc": self.clock.utc_now(),
               "jobs": [{"id": j.id, "kind": j.kind, "submitted_utc": j.submitted.utc}
                        for j in jobs],
               "workloads": [j.workload.results() for j in jobs]}
        path = self.results_dir / f"{self.name}.json"
        with self._write_lock:
            self.results_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".json.tmp{os.getpid()}.{threading.get_ident()}")
            tmp.write_text(json.dumps(doc, indent=1) + "\n")
            os.replace(tmp, path)
        return path
