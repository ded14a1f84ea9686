"""The workload registry: kebab-case kinds shared by YAML, API and CLI, resolved lazily.

Each kind maps to a `"module:Class"` string that is imported only when a job of that kind is
created, so a torch workload loads torch only in the agent that runs it, and `workload_kinds()`
imports nothing. `@register_workload(kind)` also accepts classes defined in-process (plug-ins,
tests). The registry dict is the only module-level state.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping

from nodes.errors import NodeError, UnknownWorkloadError
from nodes.workloads.base import NodeContext, Workload

WORKLOADS: dict[str, str | type[Workload]] = {
    "dlrc": "nodes.workloads.dlrc_job:Dlrc",
    "downlink-files": "nodes.workloads.downlink_files:DownlinkFiles",
    "message-exchange": "nodes.workloads.message_exchange:MessageExchange",
    "skymoe-serve": "nodes.workloads.skymoe_serve:SkyMoEServe",
    "spaceverse": "nodes.workloads.spaceverse:SpaceVerse",
}
_KEBAB = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")


def _check_kind(kind: str) -> None:
    if not _KEBAB.fullmatch(kind):
        raise NodeError(f"workload kind {kind!r}: expected kebab-case (e.g. 'downlink-files')")


def _target(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def register_lazy(kind: str, target: str) -> None:
    """Registers `kind` as `"package.module:Class"`, imported when a job of it starts."""
    _check_kind(kind)
    module, sep, name = target.partition(":")
    if not sep or not module or not name:
        raise NodeError(f"workload kind {kind!r}: target {target!r}, expected 'module:Class'")
    known = WORKLOADS.get(kind)
    if known is not None and (known if isinstance(known, str) else _target(known)) != target:
        raise NodeError(f"workload kind {kind!r} registered twice: {known} and {target}")
    WORKLOADS[kind] = target


def register_workload(kind: str) -> Callable[[type[Workload]], type[Workload]]:
    """Class decorator: `@register_workload("downlink-files")` sets `cls.kind`; a kind already
    registered lazily must point at this very class."""
    _check_kind(kind)

    def deco(cls: type[Workload]) -> type[Workload]:
        known = WORKLOADS.get(kind)
        if known is not None and known is not cls and known != _target(cls):
            name = known if isinstance(known, str) else _target(known)
            raise NodeError(f"workload kind {kind!r} registered twice: {name} and "
                            f"{_target(cls)}")
        cls.kind = kind
        if not isinstance(known, str):
            WORKLOADS[kind] = cls
        return cls

    return deco


def workload_kinds() -> list[str]:
    """Registered kinds, sorted; imports no workload module."""
    return sorted(WORKLOADS)


def workload_class(kind: str) -> type[Workload]:
    """The class of `kind`, importing its module on first use; UnknownWorkloadError lists the
    valid kinds, NodeError names a target that does not import or is not a Workload."""
    entry = WORKLOADS.get(kind)
    if entry is None:
        raise UnknownWorkloadError(kind, list(WORKLOADS))
    if not isinstance(entry, str):
        return entry
    module_name, _, name = entry.partition(":")
    module = importlib.import_module(module_name)  # ImportError stays loud, with its cause
    cls = getattr(module, name, None)
    if not (isinstance(cls, type) and issubclass(cls, Workload)) or cls.kind != kind:
        raise NodeError(f"workload kind {kind!r}: target {entry!r} is not a Workload "
                        f"registered as {kind!r}")
    return cls


def create_workload(kind: str, ctx: NodeContext, options: Mapping[str, object] | None,
                    on_end: Callable[[Workload], None] | None = None) -> Workload:
    """A configured, not yet started workload; UnknownWorkloadError lists the valid kinds."""
    return workload_class(kind)(ctx, options, on_end)
