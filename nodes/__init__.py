"""What runs on a node: the node agent and its workloads. Deployable alone to a board or VM.

nodes knows nothing about the orchestrator, skyfield or pyroute2. See nodes/README.md.
Names are imported on first use, so the agent process (`python -m nodes.agent`) does not pay
for the client's HTTP stack, and one agent per node stays small.
"""

from __future__ import annotations

from nodes.lazy import lazy_exports

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
__all__, __getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
