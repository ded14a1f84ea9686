"""The orchestrator side of a workload: one typed base every workload kind implements.

Owns the lifecycle the run drives (`start(net, pool)` once the network is up, `stop()` at the
end returning the results that go into the summary) and the fault hooks the fault injector calls
(`snapshot`, `agent_killed`, `restart`, `fault_losses`), with defaults that do the right thing
for a workload that keeps no per-node state. The node side of the same kind lives in
`nodes/workloads/` under the same kebab name. Does not start agents itself (AgentPool does).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from testbed.workloads.pool import AgentPool


class OrchestratorWorkload(ABC):
    """Base of every orchestrator-side workload (registered in testbed.workloads.registry)."""

    kind: ClassVar[str]

    def __init__(self, prep: Any) -> None:
        """`prep`: the run's testbed.lifecycle.session.Prepared (scenario, timeline, run dir).
        Options are validated here, before anything is created."""
        self.prep = prep
        self.net: Any = None
        self.pool: AgentPool | None = None

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.prep.scenario.workload.options)

    def start(self, net: Any, pool: AgentPool) -> None:
        """Called once the network is up and before the clock starts."""
        self.net, self.pool = net, pool
        self._start()

    @abstractmethod
    def _start(self) -> None:
        """Submit the workload's jobs to the agents (self.pool)."""

    @abstractmethod
    def stop(self) -> dict[str, Any]:
        """Stop the jobs and return the results (the summary's `workload` entry)."""

    # --- fault hooks (testbed.lifecycle.faults) --------------------------------------------------

    def snapshot(self, node: str) -> dict[str, Any] | None:
        """The node's results just before it is killed (None: nothing to keep)."""
        return None

    def agent_killed(self, node: str) -> None:
        """The node's processes were killed with it: its agent must be started again."""
        if self.pool is not None:
            self.pool.forget(node)

    def restart(self, node: str) -> dict[str, Any]:
        """The node is back: start its agent and resume its part; returns what was done."""
        if self.pool is not None:
            self.pool.ensure([node])
        return {"agent": "restarted"}

    def fault_losses(self, node: str | None, t0_ns: int, t1_ns: int) -> dict[str, Any]:
        """What the workload lost to a fault over [t0_ns, t1_ns] (monotonic); call after stop."""
        return {}
