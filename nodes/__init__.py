"""What runs on a node: the node agent and its workloads. Deployable alone to a board or VM.

nodes knows nothing about the orchestrator, skyfield or pyroute2. See nodes/README.md.
Names are imported on first use, so the agent process (`python -m nodes.agent`) does not pay
for the client's HTTP stack, and one agent per node stays small.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "nodes.auth": ("read_token_file",),
    "nodes.client": ("cancel_job", "fetch_job_file", "health", "job", "job_files",
                     "job_results", "jobs", "metrics", "push_context", "results",
                     "start_workload", "stop_workload", "submit_job", "wait_healthy", "wait_job"),
    "nodes.contacts": ("ContactSchedule", "ContactWindow"),
    "nodes.context": ("Contact", "RunContext"),
    "nodes.dataplane": ("DataPlane", "Message", "SendReceipt"),
    "nodes.errors": ("AgentApiError", "AgentAuthError", "AgentError", "AgentUnreachableError",
                     "AuthError", "ConfigError", "ContextError", "DataPlaneError", "FrameError",
                     "JobError", "JobFileError", "JobStateError", "JobTimeoutError",
                     "NodeError", "ProtocolError", "RecvTimeoutError", "TransferError",
                     "UnknownJobError", "UnknownPeerError", "UnknownWorkloadError",
                     "WorkloadError", "WorkloadOptionsError", "WorkloadStateError"),
    "nodes.events": ("FileEvent", "FileStatus"),
    "nodes.service": ("NodeAgent",),
    "nodes.transfer": ("GroundReceiver", "SatelliteSender", "SenderConfig"),
    "nodes.workloads": ("RESULT_KEYS", "NodeContext", "Role", "Workload", "WorkloadState",
                        "create_workload", "register_workload", "workload_kinds"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'nodes' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
