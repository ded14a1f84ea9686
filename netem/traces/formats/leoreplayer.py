"""LeoReplayer-style delay traces: one one-way delay (ms) per fixed bin, one bin per line.

The bin size comes from the file's metadata comment (`# bin_ms: 100`, or step_ms,
interval_ms, bin_size_ms) when it has one, else from the caller (`step_ms`, default 10 ms); a
caller's `step_ms` that contradicts the file's declaration is an error naming both values. The
reader checks every other clue against the bin: an optional companion timestamp column
(`t_ms,delay_ms` or `t_ms delay_ms`; consecutive stamps must be exactly one bin apart) and the
declared duration (line count x bin).
A header line or any other text is an error, not skipped.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from netem.errors import TraceFormatError
from netem.traces.formats._io import (
    format_number,
    parse_number,
    read_lines,
    split_fields,
    write_text,
)
from netem.traces.formats.registry import FormatOptions, TraceFormat, register_format
from netem.traces.model import DirectionSeries, Trace

DEFAULT_BIN_MS = 10.0
_WHAT = "one delay in ms per line (optionally 't_ms,delay_ms')"
_BIN_KEYS = ("bin_ms", "step_ms", "interval_ms", "bin_size_ms")
_META = re.compile(r"^#\s*([A-Za-z_][\w-]*)\s*[:=]\s*(.*?)\s*$")


def _declared_bin_ms(path: Path, lines: list[str]) -> tuple[float, int, str] | None:
    """The bin the file declares in its metadata: (ms, line, 'key=value'), or None."""
    found: tuple[float, int, str] | None = None
    for number, raw in enumerate(lines, start=1):
        meta = _META.match(raw.strip())
        if meta is None or meta.group(1).lower() not in _BIN_KEYS:
            continue
        key, value = meta.group(1).lower(), meta.group(2)
        declared = parse_number(value, path=path, line=number, what=key)
        if declared <= 0:
            raise TraceFormatError(f"{key}={value} is not a positive bin size in ms",
                                   path=path, line=number)
        if found is not None and abs(declared - found[0]) > 1e-9:
            raise TraceFormatError(
                f"file declares {key}={value} here but {found[2]} on line {found[1]}",
                path=path, line=number)
        found = found or (declared, number, f"{key}={value}")
    return found


def _bin_ms(path: Path, lines: list[str], options: FormatOptions) -> float:
    """The file's declared bin; else the caller's step_ms; else the default. Both: must agree."""
    declared = _declared_bin_ms(path, lines)
    if declared is None:
        return float(options.step_ms if options.step_ms is not None else DEFAULT_BIN_MS)
    if options.step_ms is not None and abs(declared[0] - options.step_ms) > 1e-9:
        raise TraceFormatError(
            f"file declares {declared[2]} but the bin size given is {options.step_ms:g} ms "
            "(give no bin size to use the file's)", path=path, line=declared[1])
    return declared[0]


def read_delay(path: Path, options: FormatOptions) -> Trace:
    lines = read_lines(path, _WHAT)
    bin_ms = _bin_ms(path, lines, options)
    comments: dict[str, str] = {}
    delays_ms: list[float] = []
    stamps_ms: list[float] = []
    n_cols: int | None = None
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if text.startswith("#"):
            meta = _META.match(text)
            if meta is None:
                raise TraceFormatError(
                    f"comment '{text}' is not 'key: value' metadata", path=path, line=number
                )
            key, value = meta.group(1).lower(), meta.group(2)
            comments[key] = value
            continue
        if not text:
            raise TraceFormatError(f"empty line, expected {_WHAT}", path=path, line=number)
        fields = split_fields(text)
        if len(fields) not in (1, 2):
            raise TraceFormatError(
                f"{len(fields)} fields, expected {_WHAT}", path=path, line=number
            )
        if n_cols is None:
            n_cols = len(fields)
            if not any(c.isdigit() for c in text):
                raise TraceFormatError(
                    f"'{text}' is a header or text, expected {_WHAT}; this format has no "
                    "header (use format 'csv' for files with one)", path=path, line=number,
                )
        elif len(fields) != n_cols:
            raise TraceFormatError(
                f"{len(fields)} fields, but earlier lines have {n_cols}", path=path, line=number
            )
        delay = parse_number(fields[-1], path=path, line=number, what="delay_ms")
        if n_cols == 2:
            t = parse_number(fields[0], path=path, line=number, what="t_ms")
            if stamps_ms:
                step = t - stamps_ms[-1]
                if step < 0:
                    raise TraceFormatError(
                        f"timestamp {fields[0]} ms goes backwards (previous: "
                        f"{format_number(stamps_ms[-1])} ms)", path=path, line=number,
                    )
                if abs(step - bin_ms) > 1e-6 * max(bin_ms, 1.0):
                    raise TraceFormatError(
                        f"timestamps step {format_number(step)} ms, but the declared bin is "
                        f"{bin_ms:g} ms", path=path, line=number,
                    )
            stamps_ms.append(t)
        delays_ms.append(delay)
    if not delays_ms:
        raise TraceFormatError(f"no data lines, expected {_WHAT}", path=path)
    n = len(delays_ms)
    if options.duration_s is not None:
        file_ms = n * bin_ms
        if abs(file_ms - options.duration_s * 1000.0) > bin_ms:
            raise TraceFormatError(
                f"{n} bins of {bin_ms:g} ms last {file_ms / 1000:g} s, but {options.duration_s:g}"
                f" s was declared: is the bin really {bin_ms:g} ms "
                f"(that duration would mean {options.duration_s * 1000 / n:.4g} ms bins)?",
                path=path,
            )
    step_ns = int(round(bin_ms * 1e6))
    series = DirectionSeries.uniform(step_ns, delay_us=np.asarray(delays_ms) * 1000.0)
    meta = {"comments": comments} if comments else {}
    return Trace(**{options.direction: series}, meta=meta)


def write_delay(trace: Trace, path: Path, options: FormatOptions) -> None:
    bin_ms = float(options.step_ms if options.step_ms is not None else DEFAULT_BIN_MS)
    series = trace.direction(options.direction)
    if series.delay_us is None:
        raise TraceFormatError(
            f"the trace's {options.direction} direction has no delay_us to write", path=path
        )
    binned = series.resample(int(round(bin_ms * 1e6)))
    if binned.duration_ns % int(round(bin_ms * 1e6)):
        raise TraceFormatError(
            f"trace lasts {binned.duration_ns / 1e6:g} ms, not a whole number of "
            f"{bin_ms:g} ms bins (slice it first)", path=path,
        )
    text = "\n".join(format_number(v / 1000.0) for v in binned.delay_us.tolist())  # type: ignore[union-attr]
    write_text(path, text + "\n")


register_format(TraceFormat(
    name="leoreplayer-delay",
    read=read_delay,
    write=write_delay,
    suffixes=(".delay",),
    description="one-way delay in ms, one line per fixed bin (declared, default 10 ms)",
))
