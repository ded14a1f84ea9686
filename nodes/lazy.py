"""Lazy package APIs: a package lists what it exports and from which module, and each name is
imported on first use. So `import nodes` (or `nodes.models`, `nodes.dlrc`, ...) loads neither
torch nor the agent's server until something asks for them.

    __all__, __getattr__, __dir__ = lazy_exports(__name__, globals(), {
        "nodes.dlrc.lsh": ("CrossPolytopeLSH",),
    })
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_exports(package: str, namespace: dict[str, Any],
                 exports: Mapping[str, Iterable[str]]
                 ) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """`__all__`, a module `__getattr__` that imports a name's module on first use (and caches
    the value in the package), and a matching `__dir__`."""
    where = {name: module for module, names in exports.items() for name in names}
    names = sorted(where)

    def __getattr__(name: str) -> Any:  # noqa: N807 -- the module hook's name
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:  # noqa: N807 -- the module hook's name
        return sorted(set(namespace) | set(names))

    return names, __getattr__, __dir__
