"""The node agents of one run, as the orchestrator sees them: start, health, calls, stop.

Owns starting an agent on a node through the node's backend (the same `python -m nodes.agent`
everywhere: inside a namespace and cgroup here, in a VM or on a board in the lab), the run's
agent token (random, written 0600 into the run directory, never into the manifest), pushing each
agent its node context (peers' data addresses, its contact schedule, the run's clock), calling
many agents in parallel, and stopping them. Agents start with `up` (eager) or when a job first
needs their node (on demand): at 1,000 namespace nodes a Python process per node would cost
15-30 MB each, more than the whole per-node budget of `up`.

Every call to many agents reads every future and re-raises the first failure with the node's
name (STYLE §9). Does not know what a workload does (testbed.workloads.base).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from nodes import client
from nodes.errors import NodeError
from testbed.backends.base import NodeProcess
from testbed.errors import TestbedError

AGENT_PORT = 9100
DATA_PORT = 7100
AGENT_HEALTHY_S = 60.0
TOKEN_FILE = "agent.token"
EAGER_MAX_NODES = 100
"""`nodes.agents: auto` starts agents with `up` up to this many nodes, on demand above."""


class AgentError(TestbedError):
    """An agent could not be started or answered with an error (names the node)."""


def write_token(run_dir: Path) -> Path:
    """A fresh random token in `<run_dir>/agent.token`, mode 0600 from its creation (the
    network builder writes it before any backend exists: remote backends upload it)."""
    path = run_dir / TOKEN_FILE
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(32) + "\n")
    return path


def read_token(run_dir: Path) -> str:
    """The token of a running run (for `testbed job` from another terminal)."""
    path = run_dir / TOKEN_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise AgentError(f"{path}: no agent token; is the run up (`testbed up`)?") from None


def map_nodes(fn: Callable[[str], Any], names: Iterable[str], *, workers: int = 32
              ) -> dict[str, Any]:
    """`fn(name)` for every node in parallel; the first failure is re-raised naming its node."""
    names = list(names)
    if not names:
        return {}
    with ThreadPoolExecutor(max_workers=min(workers, len(names))) as ex:
        futures = {name: ex.submit(fn, name) for name in names}
    out: dict[str, Any] = {}
    for name, fut in futures.items():
        try:
            out[name] = fut.result()
        except (TestbedError, NodeError, OSError) as exc:
            raise AgentError(f"node {name}: {exc}") from exc
    return out


class AgentPool:
    """The agents of one running network (`net`: a testbed.lifecycle.network.Network)."""

    def __init__(self, net: Any, *, run_dir: Path, results_dir: Path, logs_dir: Path,
                 context: Callable[[str], Mapping[str, Any]] | None = None) -> None:
        """`context(node)` gives the node context pushed to each agent once it is healthy."""
        self.net = net
        self.run_dir = run_dir
        self.results_dir = results_dir
        self.logs_dir = logs_dir
        self.context = context
        self.token_path = run_dir / TOKEN_FILE
        self.token = read_token(run_dir)
        self.procs: dict[str, NodeProcess] = {}
        self._lock = threading.Lock()

    # --- addresses -----------------------------------------------------------------------------

    def addr(self, node: str) -> str:
        return f"{self.net.backend_of(node).mgmt_address(node)}:{AGENT_PORT}"

    def running(self) -> list[str]:
        with self._lock:
            return sorted(self.procs)

    # --- starting --------------------------------------------------------------------------------

    def _argv(self, node: str) -> list[str]:
        return self.net.backend_of(node).agent_argv(
            node, mgmt_port=AGENT_PORT, results=self.results_dir,
            data_ip=self.net.plan.node(node).data_ip)

    def spawn(self, node: str) -> None:
        """Start the node's agent (again after a kill), without waiting for it."""
        proc = self.net.backend_of(node).spawn(
            node, self._argv(node), log_path=self.logs_dir / f"agent-{node}.log")
        with self._lock:
            self.procs[node] = proc

    def ensure(self, nodes: Iterable[str], timeout_s: float = AGENT_HEALTHY_S) -> None:
        """Agents of `nodes` running and healthy, with their context (on-demand start)."""
        todo = [n for n in nodes if n not in self.procs]
        for node in todo:
            self.spawn(node)
        map_nodes(lambda n: self._healthy(n, timeout_s), todo)

    def _healthy(self, node: str, timeout_s: float) -> None:
        proc = self.procs[node]
        try:
            client.wait_healthy(self.addr(node), timeout_s=timeout_s)
        except client.AgentUnreachableError as exc:
            status = proc.poll()
            log = self.logs_dir / f"agent-{node}.log"
            tail = log.read_text(errors="replace")[-600:] if log.exists() else ""
            raise AgentError(
                f"agent did not become healthy in {timeout_s:.0f} s ({exc}); "
                + (f"it exited with status {status}; " if status is not None else "")
                + f"log {log}: {tail.strip() or '(empty)'}") from exc
        if self.context is not None:
            client.push_context(self.addr(node), dict(self.context(node)), token=self.token)

    def set_context(self, context: Callable[[str], Mapping[str, Any]]) -> None:
        """Push each running agent its node context now, and every agent started later too
        (called once the run's clock has its start instant)."""
        self.context = context
        map_nodes(lambda n: client.push_context(self.addr(n), dict(context(n)),
                                                token=self.token), self.running())

    def forget(self, node: str, reap_timeout_s: float = 5.0) -> None:
        """The node's agent is gone (killed with its node): reap a local child (no zombie is
        left), and let the next `ensure` start it again."""
        with self._lock:
            proc = self.procs.pop(node, None)
        if proc is not None and proc.popen is not None:
            try:
                proc.popen.wait(timeout=reap_timeout_s)
            except subprocess.TimeoutExpired:
                raise AgentError(f"node {node}: agent pid {proc.pid} still runs "
                                 f"{reap_timeout_s} s after its node was killed") from None

    # --- calls -----------------------------------------------------------------------------------

    def call(self, nodes: Iterable[str], fn: Callable[[str, str, str], Any]) -> dict[str, Any]:
        """`fn(node, addr, token)` on every node's agent in parallel (agents started first)."""
        nodes = list(nodes)
        self.ensure(nodes)
        return map_nodes(lambda n: fn(n, self.addr(n), self.token), nodes)

    def submit(self, node: str, kind: str, options: Mapping[str, Any] | None = None,
               job_id: str | None = None) -> dict[str, Any]:
        """Submit a job to one node's agent (started on demand)."""
        self.ensure([node])
        return client.submit_job(self.addr(node), kind, dict(options or {}), job_id=job_id,
                                 token=self.token)

    # --- stopping --------------------------------------------------------------------------------

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM every agent (each writes its results file), wait, bring remote nodes'
        files home, then forget them; what does not stop is left to the ledger's teardown."""
        with self._lock:
            procs = dict(self.procs)
            self.procs.clear()
        for proc in procs.values():
            if proc.popen is not None and proc.popen.poll() is None:
                proc.popen.terminate()
        for proc in procs.values():
            if proc.popen is not None:
                try:
                    proc.popen.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:  # the ledger kills what did not stop
                    continue
        map_nodes(lambda n: self.net.backend_of(n).collect(n), procs)
