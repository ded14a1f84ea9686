"""Link traces: the model, file formats, a synthetic Starlink generator, slot detection.

    >>> from netem.traces import read_trace, generate_starlink
    >>> tr = generate_starlink(duration_s=30, seed=1)
    >>> [round(b, 1) for b in find_slots(tr.down).boundaries_s]
    [12.0, 27.0]

See netem/traces/README.md. Owns traces as data; shapers and players consume them.
"""

from netem.traces.compare import Distances, ks_distances, phase_offset_s
from netem.traces.formats import (
    FORMATS,
    FormatOptions,
    TraceFormat,
    UnknownTraceFormat,
    detect_format,
    format_names,
    get_format,
    read_trace,
    register_format,
    write_trace,
)
from netem.traces.formats._io import sha256_file
from netem.traces.manifest import ManifestEntry, load_manifest
from netem.traces.model import OPPORTUNITY_BITS, DirectionSeries, Trace
from netem.traces.slots import (
    SLOT_PERIOD_S,
    STARLINK_SLOT_SECONDS,
    BoundaryEvidence,
    SlotFit,
    find_slots,
    first_boundary_s,
)
from netem.traces.summary import summarize
from netem.traces.synth import SynthParams, generate_starlink, slot_boundaries_s

__all__ = [
    "FORMATS",
    "OPPORTUNITY_BITS",
    "SLOT_PERIOD_S",
    "STARLINK_SLOT_SECONDS",
    "BoundaryEvidence",
    "DirectionSeries",
    "Distances",
    "FormatOptions",
    "ManifestEntry",
    "SlotFit",
    "SynthParams",
    "Trace",
    "TraceFormat",
    "UnknownTraceFormat",
    "detect_format",
    "find_slots",
    "first_boundary_s",
    "format_names",
    "generate_starlink",
    "get_format",
    "ks_distances",
    "load_manifest",
    "phase_offset_s",
    "read_trace",
    "register_format",
    "sha256_file",
    "slot_boundaries_s",
    "summarize",
    "write_trace",
]
