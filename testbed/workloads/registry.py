"""The one registry of workload kinds on the orchestrator side, keyed by the node side's names.

Kind -> "module:Class", imported on first use. Every kind here must exist in
`nodes.workloads.registry` under the same kebab name (a test checks it); `none` runs no workload.
"""

from __future__ import annotations

import importlib
from typing import Any

from testbed.errors import InputError

WORKLOADS: dict[str, str] = {
    "dlrc": "testbed.workloads.dlrc:Dlrc",
    "downlink-files": "testbed.workloads.downlink_files:DownlinkFiles",
    "spaceverse": "testbed.workloads.spaceverse:SpaceVerse",
}
NO_WORKLOAD = "none"


def workload_kinds() -> list[str]:
    """The kinds a scenario may name (with `none`)."""
    return sorted([NO_WORKLOAD, *WORKLOADS])


def workload_class(kind: str) -> type[Any]:
    """The orchestrator class of `kind`; unknown kinds raise InputError listing valid ones."""
    try:
        target = WORKLOADS[kind]
    except KeyError:
        raise InputError(f"unknown workload kind '{kind}'; choose: "
                         + ", ".join(workload_kinds()), field="workload.kind") from None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def workload_for(prep: Any) -> Any:
    """The orchestrator side of the scenario's workload, or None for `none`."""
    kind = prep.scenario.workload.kind
    if kind == NO_WORKLOAD:
        return None
    return workload_class(kind)(prep)
