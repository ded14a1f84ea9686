"""Generic CSV traces: a header names the columns, units in the names.

Known columns: one time column (t_ns, t_us, t_ms or t_s: start of each interval, strictly
increasing; without one, rows are `step_ms` apart) and any of
`[down_|up_]rate_{bps,kbps,mbps,gbps}`, `[down_|up_]delay_{us,ms,s}`,
`[down_|up_]loss_{ratio,percent}`; a name without direction belongs to the `direction` option
(default down). Example header: `t_ms,down_rate_mbps,down_delay_ms,loss_ratio`.
An optional first line `# duration_ms=N` gives the end of the last interval (otherwise it lasts
as long as the one before it). Unknown or repeated columns, empty cells, text where a number
belongs: all errors naming the line.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from netem.errors import TraceFormatError
from netem.traces.formats._io import format_number, parse_number, read_lines, write_text
from netem.traces.formats.registry import FormatOptions, TraceFormat, register_format
from netem.traces.model import DIRECTIONS, QUANTITIES, DirectionSeries, Trace

TIME_COLUMNS = {"t_ns": 1.0, "t_us": 1e3, "t_ms": 1e6, "t_s": 1e9}
#: unit suffix -> (quantity, factor to the model's unit)
VALUE_UNITS = {
    "rate_bps": ("rate_bps", 1.0),
    "rate_kbps": ("rate_bps", 1e3),
    "rate_mbps": ("rate_bps", 1e6),
    "rate_gbps": ("rate_bps", 1e9),
    "delay_us": ("delay_us", 1.0),
    "delay_ms": ("delay_us", 1e3),
    "delay_s": ("delay_us", 1e6),
    "loss_ratio": ("loss_ratio", 1.0),
    "loss_percent": ("loss_ratio", 0.01),
}
_DURATION = re.compile(r"^#\s*duration_ms\s*[:=]\s*(\S+)\s*$")


def known_columns() -> list[str]:
    values = [f"{d}_{u}" for d in DIRECTIONS for u in VALUE_UNITS] + list(VALUE_UNITS)
    return list(TIME_COLUMNS) + values


def _parse_header(header: str, path: Path, line: int, default_direction: str):
    names = [c.strip() for c in header.split(",")]
    time_col: tuple[int, float] | None = None
    time_name = ""
    targets: dict[tuple[str, str], tuple[int, float]] = {}
    for i, name in enumerate(names):
        if name in TIME_COLUMNS:
            if time_col is not None:
                raise TraceFormatError(
                    f"two time columns ('{time_name}' and '{name}')", path=path, line=line
                )
            time_col, time_name = (i, TIME_COLUMNS[name]), name
            continue
        direction, _, unit = name.partition("_")
        if direction not in DIRECTIONS:
            direction, unit = default_direction, name
        if unit not in VALUE_UNITS:
            if any(c.isdigit() for c in header) and not any(c.isalpha() for c in header):
                raise TraceFormatError(
                    "no header line; format 'csv' needs one naming the columns (files without "
                    "one: 'starlink-csv')", path=path, line=line,
                )
            raise TraceFormatError(
                f"unknown column '{name}'; known: {', '.join(known_columns())}",
                path=path, line=line,
            )
        quantity, factor = VALUE_UNITS[unit]
        if (direction, quantity) in targets:
            raise TraceFormatError(
                f"column '{name}' repeats {direction} {quantity}", path=path, line=line
            )
        targets[(direction, quantity)] = (i, factor)
    if not targets:
        raise TraceFormatError("header names no value column", path=path, line=line)
    return names, time_col, targets


def read_csv(path: Path, options: FormatOptions) -> Trace:
    lines = read_lines(path, "a header line naming the columns, then rows")
    first = 0
    duration_ns: int | None = None
    match = _DURATION.match(lines[0].strip())
    if match:
        duration_ns = int(round(parse_number(match.group(1), path=path, line=1,
                                             what="duration_ms") * 1e6))
        first = 1
    elif lines[0].lstrip().startswith("#"):
        raise TraceFormatError(
            f"comment '{lines[0].strip()}' is not '# duration_ms=N'", path=path, line=1
        )
    if first >= len(lines):
        raise TraceFormatError("no header line after the duration comment", path=path, line=2)
    names, time_col, targets = _parse_header(lines[first], path, first + 1, options.direction)
    rows = lines[first + 1:]
    if not rows:
        raise TraceFormatError("header but no rows", path=path, line=first + 1)
    data = np.empty((len(rows), len(names)), dtype=np.float64)
    prev_t: float | None = None
    for k, raw in enumerate(rows):
        number = first + 2 + k
        fields = raw.split(",")
        if len(fields) != len(names):
            raise TraceFormatError(
                f"{len(fields)} fields, expected {len(names)} ({','.join(names)})",
                path=path, line=number,
            )
        for i, token in enumerate(fields):
            data[k, i] = parse_number(token, path=path, line=number, what=names[i])
            if names[i].endswith("loss_ratio") and data[k, i] > 1:
                raise TraceFormatError(
                    f"{names[i]} {token.strip()} is above 1, expected a ratio in [0, 1]",
                    path=path, line=number,
                )
        if time_col is not None:
            t = data[k, time_col[0]]
            if prev_t is not None and t <= prev_t:
                problem = "goes backwards" if t < prev_t else "repeats"
                raise TraceFormatError(
                    f"timestamp {fields[time_col[0]].strip()} {problem} (previous: "
                    f"{format_number(prev_t)})", path=path, line=number,
                )
            prev_t = t
    if time_col is not None:
        t_ns = np.rint(data[:, time_col[0]] * time_col[1]).astype(np.int64)
        t0 = int(t_ns[0])
        t_ns = t_ns - t0
        if duration_ns is None:
            if t_ns.size < 2:
                if options.step_ms is None:
                    raise TraceFormatError(
                        "one row and no '# duration_ms=' line or step: its length is unknown",
                        path=path,
                    )
                duration_ns = int(round(options.step_ms * 1e6))
            else:
                duration_ns = int(t_ns[-1] + (t_ns[-1] - t_ns[-2]))
        else:
            duration_ns -= t0
    else:
        if options.step_ms is None:
            raise TraceFormatError(
                f"no time column ({', '.join(TIME_COLUMNS)}) and no step given", path=path,
                line=first + 1,
            )
        step_ns = int(round(options.step_ms * 1e6))
        t_ns = np.arange(len(rows), dtype=np.int64) * step_ns
        t0 = 0
        duration_ns = duration_ns if duration_ns is not None else len(rows) * step_ns
    if duration_ns <= t_ns[-1]:
        raise TraceFormatError(
            f"duration_ms={duration_ns / 1e6:g} ends before the last row starts "
            f"({t_ns[-1] / 1e6:g} ms)", path=path, line=1,
        )
    if options.duration_s is not None and abs(duration_ns - options.duration_s * 1e9) > (
        duration_ns - t_ns[-1]
    ):
        raise TraceFormatError(
            f"trace lasts {duration_ns / 1e9:g} s, declared {options.duration_s:g} s", path=path
        )
    series: dict[str, DirectionSeries] = {}
    for direction in DIRECTIONS:
        values = {q: data[:, targets[(direction, q)][0]] * targets[(direction, q)][1]
                  for q in QUANTITIES if (direction, q) in targets}
        if values:
            series[direction] = DirectionSeries(t_ns=t_ns, duration_ns=duration_ns, **values)
    meta = {"t0_ns": t0} if t0 else {}
    return Trace(**series, meta=meta)


def write_csv(trace: Trace, path: Path, options: FormatOptions) -> None:
    duration_ns = trace.duration_ns
    grid = np.unique(np.concatenate([trace.direction(d).t_ns for d in trace.directions]))
    if options.step_ms is not None:
        grid = np.arange(0, duration_ns, int(round(options.step_ms * 1e6)), dtype=np.int64)
    if np.all(grid % 1_000_000 == 0) and duration_ns % 1_000_000 == 0:
        t_name, t_values, dur_text = "t_ms", grid // 1_000_000, str(duration_ns // 1_000_000)
    else:
        t_name, t_values, dur_text = "t_ns", grid, format_number(duration_ns / 1e6)
    header = [t_name]
    columns: list[np.ndarray] = [t_values.astype(np.float64)]
    units = {"rate_bps": "rate_bps", "delay_us": "delay_us", "loss_ratio": "loss_ratio"}
    for direction in trace.directions:
        series = trace.direction(direction)
        if series.duration_ns != duration_ns:
            raise TraceFormatError(
                f"csv rows hold every direction, but {direction} lasts "
                f"{series.duration_ns / 1e9:g} s and the trace {duration_ns / 1e9:g} s "
                "(slice it to one length)", path=path,
            )
        on_grid = series.on_grid(grid, duration_ns)
        for q in series.quantities:
            header.append(f"{direction}_{units[q]}")
            columns.append(getattr(on_grid, q))
    if len(header) == 1:
        raise TraceFormatError("trace has no quantity to write", path=path)
    table = np.column_stack(columns)
    out = [f"# duration_ms={dur_text}", ",".join(header)]
    out.extend(",".join(format_number(v) for v in row) for row in table.tolist())
    write_text(path, "\n".join(out) + "\n")


register_format(TraceFormat(
    name="csv",
    read=read_csv,
    write=write_csv,
    suffixes=(),
    description="header naming the columns with units, e.g. t_ms,down_rate_mbps,down_delay_ms",
))
