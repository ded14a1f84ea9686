"""Jobs: workloads the agent runs, several at once, each with an id, a state and an output folder.

Owns job ids (unique per agent), the job's submitted stamp, its output folder
`<results>/jobs/<id>/` and the safe listing and reading of the files a job wrote there. The
lifecycle itself is the workload's (workloads/base.py); the HTTP mapping is api.py's.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from nodes.clock import Stamp
from nodes.errors import ConfigError, JobFileError, JobStateError, UnknownJobError
from nodes.workloads import NodeContext, Workload, WorkloadState, create_workload

_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass
class Job:
    """One submitted workload: `id`, `kind`, `submitted` stamp, the workload, its folder."""

    id: str
    kind: str
    submitted: Stamp
    workload: Workload
    output_dir: Path | None
    cancelled: bool = False

    @property
    def state(self) -> WorkloadState:
        return self.workload.state

    def info(self) -> dict[str, object]:
        """id, kind, state, submitted/started/ended UTC, elapsed_s, progress, error."""
        res = self.workload.results(include_events=False)
        return {"id": self.id, "kind": self.kind, "state": res["state"],
                "submitted_utc": self.submitted.utc, "started_utc": res["started_utc"],
                "ended_utc": res["ended_utc"], "elapsed_s": res["elapsed_s"],
                "progress": self.workload.progress(), "cancelled": self.cancelled,
                "error": res["error"]}

    def files(self) -> list[dict[str, object]]:
        """Regular files under the job's folder: `name` (relative, `/`-separated), size_bytes."""
        if self.output_dir is None or not self.output_dir.is_dir():
            return []
        out = []
        for path in sorted(self.output_dir.rglob("*")):
            if path.is_file() and not path.is_symlink():
                out.append({"name": path.relative_to(self.output_dir).as_posix(),
                            "size_bytes": path.stat().st_size})
        return out

    def file_path(self, name: str) -> Path:
        """The path of file `name` inside the job's folder; JobFileError for anything that
        leaves the folder (`..`, absolute, symlinks out) or does not exist."""
        if self.output_dir is None:
            raise JobFileError(f"job {self.id}: no output folder (agent without --results)")
        if not name or name.startswith("/") or "\\" in name or "\0" in name \
                or any(part in ("", ".", "..") for part in name.split("/")):
            raise JobFileError(f"job {self.id}: file name {name!r}, expected a relative path "
                               "inside the job's folder")
        root = self.output_dir.resolve()
        path = (root / name).resolve()
        if not path.is_relative_to(root):
            raise JobFileError(f"job {self.id}: file name {name!r} leaves the job's folder")
        if not path.is_file():
            raise JobFileError(f"job {self.id}: no file {name!r}; files: "
                               f"{', '.join(str(f['name']) for f in self.files()) or '(none)'}",
                               missing=True)
        return path


class JobTable:
    """The agent's jobs in submission order; thread-safe.

    Args:
        node: the node's name (for messages).
        base_ctx: the node's context; each job gets a copy with its own `output_dir`.
        on_end: called with the job's workload when any job ends.
    """

    def __init__(self, node: str, base_ctx: Callable[[], NodeContext],
                 on_end: Callable[[Workload], None] | None = None):
        self.node = node
        self._base_ctx = base_ctx
        self._on_end = on_end
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._counter = 0

    def submit(self, kind: str, options: Mapping[str, object] | None,
               job_id: str | None = None) -> Job:
        """Creates and starts a job; UnknownWorkloadError / WorkloadOptionsError from the kind,
        JobStateError for a bad or taken id."""
        with self._lock:
            if job_id is None:
                self._counter += 1
                job_id = f"{kind}-{self._counter}"
                while job_id in self._jobs:
                    self._counter += 1
                    job_id = f"{kind}-{self._counter}"
            elif not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
                raise ConfigError(f"node {self.node}: job id {job_id!r}, expected 1-64 of "
                                    "A-Z a-z 0-9 . _ - (not starting with . _ -)")
            if job_id in self._jobs:
                raise JobStateError(f"node {self.node}: job id {job_id!r} is taken; ids are "
                                    "unique per agent")
            base = self._base_ctx()
            # per node: in the embedded default every node's agent shares one results folder
            out = (base.results_dir / "jobs" / self.node / job_id
                   if base.results_dir is not None else None)
            ctx = replace(base, output_dir=out)
            workload = create_workload(kind, ctx, options, on_end=self._on_end)
            job = Job(id=job_id, kind=kind, submitted=base.clock.stamp(), workload=workload,
                      output_dir=out)
            if out is not None:
                out.mkdir(parents=True, exist_ok=True)
            self._jobs[job_id] = job  # before start: on_end may write results at once
            try:
                workload.start()
            except BaseException:
                del self._jobs[job_id]
                raise
        return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
            known = list(self._jobs)
        if job is None:
            raise UnknownJobError(self.node, job_id, known)
        return job

    def all(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def last(self) -> Job | None:
        with self._lock:
            return next(reversed(self._jobs.values()), None)

    def running(self) -> list[Job]:
        return [j for j in self.all() if j.state is WorkloadState.RUNNING]

    def cancel(self, job_id: str, timeout_s: float = 10.0) -> Job:
        """Stops a running job and waits up to `timeout_s`; JobStateError when it had ended."""
        job = self.get(job_id)
        if job.state is not WorkloadState.RUNNING:
            raise JobStateError(f"node {self.node}: job {job_id} is {job.state.value}, "
                                "expected running to cancel")
        job.cancelled = True
        job.workload.stop(timeout_s)
        return job

    def stop_all(self, timeout_s: float) -> None:
        """Stops every running job (agent shutdown); raises the first failure after trying all."""
        first: Exception | None = None
        for job in self.running():
            try:
                job.workload.stop(timeout_s)
            except Exception as exc:  # noqa: BLE001 -- re-raised below once all were asked
                first = first or exc
        if first is not None:
            raise first
