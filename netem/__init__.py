"""Link emulation as a library: link state, traces, trace players, shapers, capability probes.

netem knows nothing about satellites, orbits or models. See netem/README.md.
"""

from netem.errors import LinkStateError, NetemError, TraceFormatError, UnsupportedError
from netem.linkstate import GilbertElliott, LinkState
from netem.shapers.base import Shaper

__all__ = [
    "GilbertElliott",
    "LinkState",
    "LinkStateError",
    "NetemError",
    "Shaper",
    "TraceFormatError",
    "UnsupportedError",
]
