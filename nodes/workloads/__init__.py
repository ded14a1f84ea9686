"""Workloads a node agent runs, registered by kebab-case kind (see registry.py)."""

from nodes.workloads import downlink_files as _downlink_files  # noqa: F401 -- registers it
from nodes.workloads.base import RESULT_KEYS, NodeContext, Role, Workload, WorkloadState
from nodes.workloads.registry import (
    WORKLOADS,
    create_workload,
    register_workload,
    workload_kinds,
)

__all__ = ["RESULT_KEYS", "WORKLOADS", "NodeContext", "Role", "Workload", "WorkloadState",
           "create_workload", "register_workload", "workload_kinds"]
