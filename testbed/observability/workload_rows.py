"""Which workload kinds bring metric families of their own, for a dashboard row each.

Owns the mapping from a kebab-case kind (the node registry's names) to where its declared
families live (`nodes.metrics.declare`, standard-library modules, so building a dashboard never
imports torch). A scenario's workload and the jobs an experimenter runs with `testbed job`
(e.g. `skymoe-serve` on a ground station) both name their rows here.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from typing import Any

from testbed.observability.errors import ObservabilityError

__all__ = ["WORKLOAD_FAMILIES", "row_kinds", "workload_rows"]

WORKLOAD_FAMILIES: dict[str, str] = {
    "dlrc": "nodes.workloads.dlrc_metrics:FAMILIES",
    "skymoe-serve": "nodes.workloads.skymoe_metrics:FAMILIES",
    "spaceverse": "nodes.workloads.spaceverse_metrics:FAMILIES",
}


def row_kinds() -> list[str]:
    """Kinds that have a dashboard row, sorted."""
    return sorted(WORKLOAD_FAMILIES)


def workload_rows(kinds: Iterable[str]) -> dict[str, Sequence[Any]]:
    """`{kind: its declared families}` for `overview(workloads=...)`, in the order given
    (repeats dropped); an unknown kind raises ObservabilityError listing the valid ones."""
    rows: dict[str, Sequence[Any]] = {}
    for kind in kinds:
        if kind in rows:
            continue
        target = WORKLOAD_FAMILIES.get(kind)
        if target is None:
            raise ObservabilityError(f"no dashboard row for workload kind {kind!r}; choose: "
                                     f"{', '.join(row_kinds())}")
        module, _, name = target.partition(":")
        rows[kind] = tuple(getattr(importlib.import_module(module), name))
    return rows
