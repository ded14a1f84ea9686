"""The workload registry: kinds register under kebab-case names shared by YAML, API and CLI.

The registry dict is the only module-level state (filled at import by `@register_workload`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from nodes.errors import NodeError, UnknownWorkloadError
from nodes.workloads.base import NodeContext, Workload

WORKLOADS: dict[str, type[Workload]] = {}
_KEBAB = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")


def register_workload(kind: str) -> Callable[[type[Workload]], type[Workload]]:
    """Class decorator: `@register_workload("downlink-files")`."""
    if not _KEBAB.fullmatch(kind):
        raise NodeError(f"workload kind {kind!r}: expected kebab-case (e.g. 'downlink-files')")

    def deco(cls: type[Workload]) -> type[Workload]:
        if kind in WORKLOADS and WORKLOADS[kind] is not cls:
            raise NodeError(f"workload kind {kind!r} registered twice: "
                            f"{WORKLOADS[kind].__qualname__} and {cls.__qualname__}")
        cls.kind = kind
        WORKLOADS[kind] = cls
        return cls

    return deco


def workload_kinds() -> list[str]:
    return sorted(WORKLOADS)


def create_workload(kind: str, ctx: NodeContext, options: Mapping[str, object] | None,
                    on_end: Callable[[Workload], None] | None = None) -> Workload:
    """A configured, not yet started workload; UnknownWorkloadError lists the valid kinds."""
    cls = WORKLOADS.get(kind)
    if cls is None:
        raise UnknownWorkloadError(kind, list(WORKLOADS))
    return cls(ctx, options, on_end)
