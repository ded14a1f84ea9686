"""Workloads a node agent runs, registered by kebab-case kind and imported lazily (registry.py).

Importing this package imports no workload module: a kind's module loads when a job of it is
created.
"""

from nodes.workloads.base import RESULT_KEYS, NodeContext, Role, Workload, WorkloadState
from nodes.workloads.registry import (
    WORKLOADS,
    create_workload,
    register_lazy,
    register_workload,
    workload_class,
    workload_kinds,
)

__all__ = ["RESULT_KEYS", "WORKLOADS", "NodeContext", "Role", "Workload", "WorkloadState",
           "create_workload", "register_lazy", "register_workload", "workload_class",
           "workload_kinds"]
