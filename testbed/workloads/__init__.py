"""Workloads as the orchestrator drives them: the node agents of a run (`AgentPool`), the typed
base every workload implements (`OrchestratorWorkload`) and the one registry of kinds, keyed by
the same kebab names as `nodes/workloads`. See README.md in this folder.
"""

from testbed.workloads.base import OrchestratorWorkload
from testbed.workloads.pool import AgentError, AgentPool, map_nodes, read_token
from testbed.workloads.registry import workload_class, workload_for, workload_kinds

__all__ = [
    "AgentError",
    "AgentPool",
    "OrchestratorWorkload",
    "map_nodes",
    "read_token",
    "workload_class",
    "workload_for",
    "workload_kinds",
]
