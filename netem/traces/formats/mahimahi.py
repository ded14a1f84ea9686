"""mahimahi delivery-opportunity traces (mm-link): one line per 1500-byte opportunity.

Each line is a whole number of milliseconds since the start, non-decreasing; k equal lines
mean k packets may leave in that millisecond (k x 12 Mbit/s). The last line is also the loop
period. The reader keeps the exact opportunities and counts them per `step_ms` (default 10 ms)
for the capacity series; the writer writes recorded opportunities, or derives them from the
rate series (fractions of a packet carry over, so the long-run rate is exact).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from netem.errors import TraceFormatError
from netem.traces.formats._io import read_lines, write_text
from netem.traces.formats.registry import FormatOptions, TraceFormat, register_format
from netem.traces.model import DirectionSeries, Trace

DEFAULT_STEP_MS = 10
_WHAT = "one delivery-opportunity timestamp (whole ms) per line"


def _diagnose(lines: list[str], path: Path) -> None:
    """Find and raise the first bad line (slow path, only after the fast parse failed)."""
    prev = None
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text:
            raise TraceFormatError(f"empty line, expected {_WHAT}", path=path, line=number)
        try:
            value = int(text)
        except ValueError:
            try:
                as_float = float(text)
            except ValueError:
                raise TraceFormatError(
                    f"timestamp '{text}' is not a number", path=path, line=number
                ) from None
            raise TraceFormatError(
                f"timestamp '{text}' is not a whole number of ms (mahimahi uses integer ms"
                f"{'' if as_float >= 0 else '; it is also negative'})",
                path=path, line=number,
            ) from None
        if value < 0:
            raise TraceFormatError(f"timestamp {value} ms is negative", path=path, line=number)
        if prev is not None and value < prev:
            raise TraceFormatError(
                f"timestamp {value} ms goes backwards (previous line: {prev} ms)",
                path=path, line=number,
            )
        prev = value


def read_mahimahi(path: Path, options: FormatOptions) -> Trace:
    lines = read_lines(path, _WHAT)
    try:
        opp = np.array([int(x) for x in lines], dtype=np.int64)
    except ValueError:
        _diagnose(lines, path)
        raise  # _diagnose always raises; this keeps type checkers honest
    if any(not x.strip() for x in lines) or (opp < 0).any() or (np.diff(opp) < 0).any():
        _diagnose(lines, path)
    if opp[-1] <= 0:
        raise TraceFormatError(
            "last timestamp is 0 ms: the trace has no duration (the last line is the loop "
            "period)", path=path, line=len(lines),
        )
    step_ms = options.step_ms if options.step_ms is not None else DEFAULT_STEP_MS
    if float(step_ms) != int(step_ms):
        raise TraceFormatError(f"step_ms={step_ms}: mahimahi grids are whole ms", path=path)
    if options.duration_s is not None and abs(opp[-1] - options.duration_s * 1000) > step_ms:
        raise TraceFormatError(
            f"trace lasts {opp[-1]} ms, declared {options.duration_s * 1000:g} ms", path=path
        )
    series = DirectionSeries.from_opportunities(opp, step_ms=int(step_ms))
    return Trace(**{options.direction: series}, meta={})


def write_mahimahi(trace: Trace, path: Path, options: FormatOptions) -> None:
    series = trace.direction(options.direction)
    opp = series.delivery_opportunities_ms()
    if opp.size == 0:
        raise TraceFormatError(
            f"the {options.direction} capacity carries less than one 1500-byte packet: "
            "nothing to write", path=path,
        )
    write_text(path, "\n".join(map(str, opp.tolist())) + "\n")


register_format(TraceFormat(
    name="mahimahi",
    read=read_mahimahi,
    write=write_mahimahi,
    suffixes=(".mahimahi", ".up", ".down"),
    description="mm-link delivery opportunities: one line per 1500-byte packet, ms since start",
))
