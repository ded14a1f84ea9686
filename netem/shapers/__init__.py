"""Shapers: apply LinkState changes to link directions (kernel tc, or a userspace forwarder).

Registry of shapers by name (kebab-case, shared with YAML and the CLI): `shaper_class(name)`.
The userspace shaper is imported lazily, so importing the kernel shaper does not pull in the
forwarder's modules. See README.md in this folder.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from netem.errors import UnsupportedError
from netem.shapers.base import Shaper
from netem.shapers.kernel import RATE_QDISCS, KernelShaper

if TYPE_CHECKING:
    from netem.shapers.userspace import UserspaceShaper

# name -> (module, class); "htb"/"tbf" are the kernel shaper with that rate qdisc
SHAPERS: dict[str, tuple[str, str]] = {
    "kernel": ("netem.shapers.kernel", "KernelShaper"),
    "userspace": ("netem.shapers.userspace", "UserspaceShaper"),  # userspace helper's module
}

__all__ = ["RATE_QDISCS", "SHAPERS", "KernelShaper", "Shaper", "UserspaceShaper", "shaper_class"]


def shaper_class(name: str) -> type[Shaper]:
    """The shaper class registered under `name`; the error lists the valid names."""
    try:
        module, cls = SHAPERS[name]
    except KeyError:
        raise UnsupportedError(
            f"unknown shaper {name!r}; choose: {', '.join(sorted(SHAPERS))}"
        ) from None
    return getattr(importlib.import_module(module), cls)


def __getattr__(name: str) -> Any:
    if name == "UserspaceShaper":
        return shaper_class("userspace")
    raise AttributeError(f"module 'netem.shapers' has no attribute {name!r}")
