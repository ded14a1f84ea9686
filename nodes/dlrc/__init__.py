"""DLRC: distributed latent representation clustering for multi-satellite image compression.

See nodes/dlrc/README.md. Importing the package is cheap; torch and compressai load with the
modules that need them (`nodes.dlrc.latent`, `nodes.dlrc.pipeline`).
"""

from __future__ import annotations

from nodes.lazy import lazy_exports

_EXPORTS = {
    "nodes.dlrc.errors": ("CorruptPayloadError", "DlrcConfigError", "DlrcError",
                          "MapFormatError", "MissingReferenceError", "PayloadError",
                          "TruncatedPayloadError", "UnsupportedCodecError"),
    "nodes.dlrc.lsh": ("CrossPolytopeLSH", "fmix64", "random_rotations"),
    "nodes.dlrc.selector": ("REPRESENTATIVES", "Selection", "select"),
    "nodes.dlrc.arbiter": ("PRIORITY_RULES", "Arbitration", "SatellitePlan", "SatelliteState",
                           "arbitrate", "global_map", "priority_order"),
    "nodes.dlrc.wire": ("SatellitePayload",),
    "nodes.dlrc.latent": ("Analysis", "LatentCoder", "latent_coder"),
    "nodes.dlrc.latent_grouped": ("GroupedLatentCoder",),
    "nodes.dlrc.pipeline": ("DlrcConfig", "GroundDecoder", "LocalResult", "Reconstruction",
                            "SatelliteEncoder", "run"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
