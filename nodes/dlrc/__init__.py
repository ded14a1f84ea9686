"""DLRC: distributed latent representation clustering for multi-satellite image compression.

See nodes/dlrc/README.md. Importing the package is cheap; torch and compressai load with the
modules that need them (`nodes.dlrc.latent`, `nodes.dlrc.pipeline`).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "nodes.dlrc.errors": ("CorruptPayloadError", "DlrcConfigError", "DlrcError",
                          "MapFormatError", "MissingReferenceError", "PayloadError",
                          "TruncatedPayloadError", "UnsupportedCodecError"),
    "nodes.dlrc.lsh": ("CrossPolytopeLSH", "fmix64", "random_rotations"),
    "nodes.dlrc.selector": ("REPRESENTATIVES", "Selection", "select"),
    "nodes.dlrc.arbiter": ("PRIORITY_RULES", "Arbitration", "SatellitePlan", "SatelliteState",
                           "arbitrate", "global_map", "priority_order"),
    "nodes.dlrc.wire": ("SatellitePayload",),
    "nodes.dlrc.latent": ("Analysis", "LatentCoder"),
    "nodes.dlrc.pipeline": ("DlrcConfig", "GroundDecoder", "LocalResult", "Reconstruction",
                            "SatelliteEncoder", "run"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'nodes.dlrc' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
