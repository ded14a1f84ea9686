"""Per-interval Starlink CSV (the Lagos layout of the Starlink-Emulator project).

No header; four columns per row: uplink_throughput_mbps, downlink_throughput_mbps,
uplink_delay_ms, downlink_delay_ms. Rows are a fixed step apart that the file does not state:
the caller gives it (`step_ms`, default 100 ms). No loss column.

The upstream project's own file has a fifth column, the row's time in ms (0, 100, 200, ...);
when present it must advance by exactly the declared step (a wrong declared step is an error
naming the line) and the first value is kept as meta["t0_ms"]. The writer writes four columns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from netem.errors import TraceFormatError
from netem.traces.formats._io import format_number, parse_number, read_lines, write_text
from netem.traces.formats.registry import FormatOptions, TraceFormat, register_format
from netem.traces.model import DirectionSeries, Trace

DEFAULT_STEP_MS = 100.0
COLUMNS = ("uplink_throughput_mbps", "downlink_throughput_mbps", "uplink_delay_ms",
           "downlink_delay_ms")
_WHAT = f"rows of {','.join(COLUMNS)} (no header)"


def read_starlink_csv(path: Path, options: FormatOptions) -> Trace:
    step_ms = float(options.step_ms if options.step_ms is not None else DEFAULT_STEP_MS)
    lines = read_lines(path, _WHAT)
    n_cols = len(lines[0].split(","))
    if n_cols not in (4, 5):
        raise TraceFormatError(
            f"{n_cols} columns, expected 4: {', '.join(COLUMNS)} (optionally then t_ms)",
            path=path, line=1,
        )
    names = COLUMNS + ("t_ms",)
    rows = np.empty((len(lines), n_cols), dtype=np.float64)
    for number, raw in enumerate(lines, start=1):
        fields = raw.split(",")
        if len(fields) != n_cols:
            raise TraceFormatError(
                f"{len(fields)} columns, expected {n_cols} like line 1: "
                f"{', '.join(names[:n_cols])}", path=path, line=number,
            )
        if number == 1 and not any(c.isdigit() for c in raw):
            raise TraceFormatError(
                f"'{raw.strip()}' looks like a header; starlink-csv has none (use format 'csv' "
                "for files with a header)", path=path, line=number,
            )
        for col, token in enumerate(fields):
            rows[number - 1, col] = parse_number(token, path=path, line=number, what=names[col])
        if n_cols == 5 and number > 1:
            step = rows[number - 1, 4] - rows[number - 2, 4]
            if step < 0:
                raise TraceFormatError(
                    f"t_ms {fields[4].strip()} goes backwards (previous: "
                    f"{format_number(rows[number - 2, 4])})", path=path, line=number,
                )
            if abs(step - step_ms) > 1e-6 * max(step_ms, 1.0):
                raise TraceFormatError(
                    f"t_ms steps {format_number(step)} ms, but the declared step is "
                    f"{step_ms:g} ms", path=path, line=number,
                )
    n = rows.shape[0]
    if options.duration_s is not None and abs(n * step_ms - options.duration_s * 1000) > step_ms:
        raise TraceFormatError(
            f"{n} rows of {step_ms:g} ms last {n * step_ms / 1000:g} s, but "
            f"{options.duration_s:g} s was declared", path=path,
        )
    step_ns = int(round(step_ms * 1e6))
    up = DirectionSeries.uniform(step_ns, rate_bps=rows[:, 0] * 1e6, delay_us=rows[:, 2] * 1e3)
    down = DirectionSeries.uniform(step_ns, rate_bps=rows[:, 1] * 1e6, delay_us=rows[:, 3] * 1e3)
    meta = {"t0_ms": float(rows[0, 4])} if n_cols == 5 else {}
    return Trace(down=down, up=up, meta=meta)


def write_starlink_csv(trace: Trace, path: Path, options: FormatOptions) -> None:
    step_ms = float(options.step_ms if options.step_ms is not None else DEFAULT_STEP_MS)
    step_ns = int(round(step_ms * 1e6))
    cols = []
    for direction in ("up", "down"):
        if direction not in trace.directions:
            raise TraceFormatError(
                f"starlink-csv needs both directions; the trace has only {trace.directions}",
                path=path,
            )
        series = trace.direction(direction).resample(step_ns)
        if series.rate_bps is None or series.delay_us is None:
            raise TraceFormatError(
                f"starlink-csv needs rate and delay per direction; {direction} has only "
                f"{', '.join(series.quantities)}", path=path,
            )
        if series.duration_ns % step_ns:
            raise TraceFormatError(
                f"trace lasts {series.duration_ns / 1e6:g} ms, not a whole number of "
                f"{step_ms:g} ms rows (slice it first)", path=path,
            )
        cols.append((series.rate_bps / 1e6, series.delay_us / 1e3))
    if cols[0][0].size != cols[1][0].size:
        raise TraceFormatError(
            f"starlink-csv rows hold both directions, but up has {cols[0][0].size} rows of "
            f"{step_ms:g} ms and down {cols[1][0].size} (slice both to one length)", path=path,
        )
    n = cols[0][0].size
    (up_rate, up_delay), (down_rate, down_delay) = cols
    text = "".join(
        f"{format_number(up_rate[i])},{format_number(down_rate[i])},"
        f"{format_number(up_delay[i])},{format_number(down_delay[i])}\n"
        for i in range(n)
    )
    write_text(path, text)


register_format(TraceFormat(
    name="starlink-csv",
    read=read_starlink_csv,
    write=write_starlink_csv,
    suffixes=(),
    description=f"no header, {', '.join(COLUMNS)}; fixed step (default 100 ms)",
))
