"""nodes' error hierarchy. nodes is deployable alone (no testbed import), so it has its own base.

Every error names the object, the bad value and what was expected.
"""

from __future__ import annotations


class NodeError(Exception):
    """Base of every error nodes raises on purpose."""


class ConfigError(NodeError, ValueError):
    """A configuration value is out of range (names the field, the value and the expectation)."""


class ProtocolError(NodeError):
    """A frame on the transfer protocol is malformed (bad magic, bad header field, short read)."""


class TransferError(NodeError):
    """A file could not be sent or received (connection refused, timed out, reset)."""


class WorkloadError(NodeError):
    """Base of workload lifecycle and configuration errors."""


class UnknownWorkloadError(WorkloadError, KeyError):
    """A workload kind that is not registered; the message lists the valid kinds."""

    def __init__(self, kind: str, valid: list[str]):
        self.kind = kind
        self.valid = sorted(valid)
        self.message = f"unknown workload {kind!r}; choose: {', '.join(self.valid)}"
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class WorkloadOptionsError(WorkloadError, ConfigError):
    """A workload option is missing, unknown or out of range (names option, value, expectation)."""


class WorkloadStateError(WorkloadError):
    """A lifecycle call does not fit the current state (start while running, no workload yet)."""


class AuthError(NodeError):
    """A token file is unusable (too open a mode, empty, unreadable) or a token is missing."""


class JobError(WorkloadError):
    """Base of errors about one job of the job API."""


class UnknownJobError(JobError, KeyError):
    """No job with this id on this agent; the message lists the known ids (answered 404)."""

    def __init__(self, node: str, job_id: str, known: list[str]):
        self.job_id = job_id
        self.known = sorted(known)
        shown = ", ".join(self.known[:20]) + (" ..." if len(self.known) > 20 else "")
        self.message = f"node {node}: no job {job_id!r}; known: {shown or '(none)'}"
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class JobStateError(JobError, WorkloadStateError):
    """A job call does not fit the job's state or id (duplicate id, cancel a finished job)."""


class JobFileError(JobError):
    """A job file name is outside the job's output folder (`missing` False, answered 400), or
    no such file (`missing` True, answered 404); names the job and the file."""

    def __init__(self, message: str, *, missing: bool = False):
        self.missing = missing
        super().__init__(message)


class ContextError(ConfigError):
    """The node context pushed by the orchestrator is malformed (names the field and value)."""


class DataPlaneError(NodeError):
    """A data-plane message could not be sent, received or acknowledged."""


class UnknownPeerError(DataPlaneError, KeyError):
    """A peer name the node context does not know; the message lists the valid names."""

    def __init__(self, node: str, peer: str, valid: list[str]):
        self.peer = peer
        self.valid = sorted(valid)
        self.message = (f"node {node}: unknown peer {peer!r}; choose: "
                        f"{', '.join(self.valid) or '(no peers in the context)'}")
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class FrameError(DataPlaneError, ProtocolError):
    """A data-plane frame is truncated, corrupted or of an unknown version (names the field)."""


class RecvTimeoutError(DataPlaneError, TimeoutError):
    """No message on a topic within the timeout."""


class AgentError(NodeError):
    """Base of errors seen by a client of a node agent's management API."""


class AgentUnreachableError(AgentError):
    """The agent at `addr` did not answer (connection refused, timeout, not healthy in time)."""

    def __init__(self, addr: str, reason: str):
        self.addr = addr
        self.reason = reason
        super().__init__(f"node agent {addr}: unreachable: {reason}")


class AgentApiError(AgentError):
    """The agent answered with an error status; `error` is the server-side error class name."""

    def __init__(self, addr: str, method: str, path: str, status: int, error: str, message: str):
        self.addr = addr
        self.method = method
        self.path = path
        self.status = status
        self.error = error
        self.message = message
        super().__init__(f"node agent {addr}: {method} {path} -> {status} {error}: {message}")


class AgentAuthError(AgentApiError):
    """The agent answered 401: the request carried no token or the wrong one."""


class JobTimeoutError(AgentError, TimeoutError):
    """A job was still running when `wait_job` gave up (names the job, its state, progress)."""
