"""Trace file formats, registered by kebab-case name: mahimahi, leoreplayer-delay,
starlink-csv, csv. gzip is transparent (by magic on read, by a .gz name on write)."""

from netem.traces.formats import generic_csv, leoreplayer, mahimahi, starlink_csv  # noqa: F401
from netem.traces.formats.registry import (
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

__all__ = [
    "FORMATS",
    "FormatOptions",
    "TraceFormat",
    "UnknownTraceFormat",
    "detect_format",
    "format_names",
    "get_format",
    "read_trace",
    "register_format",
    "write_trace",
]
