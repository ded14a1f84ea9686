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
