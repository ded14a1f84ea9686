"""`testbed trace`: inspect, convert and synthesise link traces (thin layer over netem.traces).

Parses arguments and prints; every computation is netem.traces'. Errors from the library
(TraceFormatError naming file and line, unknown format names) reach the user as one line.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from netem.traces import (
    FormatOptions,
    SynthParams,
    Trace,
    format_names,
    generate_starlink,
    read_trace,
    summarize,
    write_trace,
)
from netem.traces.plot import plot_trace
from netem.traces.synth import DEFAULT_START_UTC
from testbed.errors import InputError

_DEFAULT_START = DEFAULT_START_UTC.isoformat().replace("+00:00", "Z")
_FORMATS_HELP = (
    "Trace format: " + ", ".join(format_names())
    + ". Default: from the file name (.mahimahi/.up/.down, *delay*.txt, .csv; .gz is ignored)."
)
_STEP_HELP = (
    "Interval of formats without timestamps, in ms: a delay file's bin (default 10), a "
    "starlink-csv row (default 100); for mahimahi, the grid capacity is counted on (default 10)."
)


def _options(step_ms: float | None, direction: str, duration_s: float | None) -> FormatOptions:
    return FormatOptions(step_ms=step_ms, direction=direction, duration_s=duration_s)


def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def _print_summary(path: Path, trace: Trace, summary: dict[str, Any]) -> None:
    meta = trace.meta
    typer.echo(f"file: {path}  (format {meta.get('format', '?')}, "
               f"sha256 {str(meta.get('sha256', ''))[:16]}…)")
    typer.echo(f"duration: {summary['duration_s']:.3f} s")
    for direction, s in summary["directions"].items():
        line = f"{direction}: {s['intervals']} intervals of {s['step_ms']:g} ms"
        if "opportunities" in s:
            line += f"; {s['opportunities']} delivery opportunities (1500 B each)"
        typer.echo(line)
        cap = s.get("capacity_mbps")
        typer.echo("  capacity per 100 ms (Mbit/s): " + (
            "not recorded" if cap is None else
            f"mean {cap['mean']:.2f}  p5 {cap['p5']:.2f}  p50 {cap['p50']:.2f}  "
            f"p95 {cap['p95']:.2f}  min {cap['min_100ms']:.2f}  max {cap['max_100ms']:.2f}"))
        d = s.get("delay_ms")
        typer.echo("  one-way delay (ms): " + (
            "not recorded" if d is None else
            f"mean {d['mean']:.2f}  min {d['min']:.2f}  p5 {d['p5']:.2f}  p50 {d['p50']:.2f}  "
            f"p95 {d['p95']:.2f}  p99 {d['p99']:.2f}  max {d['max']:.2f}"))
        loss = s.get("loss_ratio")
        typer.echo("  loss ratio: " + ("not recorded" if loss is None else
                                       f"mean {loss['mean']:.6f}  max {loss['max']:.6f}"))
        slots = s["slots"]
        if "error" in slots:
            typer.echo(f"  15 s slots: not assessed ({slots['error']})")
            continue
        verdict = "present" if slots["present"] else "not evident"
        typer.echo(
            f"  15 s slots: first boundary at {slots['phase_s']:.2f} s, then every "
            f"{slots['period_s']:g} s; fold contrast {slots['contrast']:.1f} ({verdict}; "
            f"slot-free noise gives 1.5-2.2)"
        )
        detected = [b for b in slots["boundaries"] if b["detected"]]
        typer.echo(f"  detected change points: {len(detected)} of {len(slots['boundaries'])} "
                   "boundaries")
        typer.echo("      t_s  capacity before -> after (Mbit/s)  outage_ms  delay_spike_ms  "
                   "detected")
        for b in slots["boundaries"]:
            typer.echo(
                f"  {b['t_s']:7.2f}  {_fmt(b['rate_before_mbps']):>14} -> "
                f"{_fmt(b['rate_after_mbps']):<16} {_fmt(b['outage_ms'], '.0f'):>9}  "
                f"{_fmt(b['delay_spike_ms'], '.1f'):>14}  {'yes' if b['detected'] else 'no'}"
            )


def inspect(
    file: Annotated[Path, typer.Argument(help="Trace file (gzip is read transparently).")],
    fmt: Annotated[str | None, typer.Option("--format", "-f", help=_FORMATS_HELP)] = None,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Write a PNG of capacity and delay with the 15 s slot grid marked.")
    ] = None,
    step_ms: Annotated[float | None, typer.Option("--step-ms", help=_STEP_HELP)] = None,
    direction: Annotated[str, typer.Option(
        "--direction", help="Direction a single-direction file describes: down or up.")
    ] = "down",
    duration_s: Annotated[float | None, typer.Option(
        "--duration-s", help="Declared duration; a file that does not match is an error.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Summarise a trace: capacity, delay, loss and its 15 s slot boundaries.

    Prints the duration, capacity per 100 ms (mean, p5, p50, p95), delay statistics, loss,
    and the 15 s Starlink slot grid found in the data with what happened at each boundary.

    Example:

    testbed trace inspect leocc-downlink-bw.mahimahi.gz --plot bw.png
    """
    trace = read_trace(file, fmt, _options(step_ms, direction, duration_s))
    summary = summarize(trace)
    if plot is not None:
        grid = {d: [b["t_s"] for b in s["slots"].get("boundaries", [])]
                for d, s in summary["directions"].items()}
        plot_trace(trace, plot, grid, title=f"{file.name} ({trace.meta.get('format')})")
        summary["plot"] = str(plot)
    if as_json:
        typer.echo(json.dumps(summary, indent=1))
        return
    _print_summary(file, trace, summary)
    if plot is not None:
        typer.echo(f"plot: {plot}")


def convert(
    src: Annotated[Path, typer.Argument(metavar="IN", help="Trace file to read.")],
    dst: Annotated[Path, typer.Argument(metavar="OUT", help="File to write (.gz compresses).")],
    from_fmt: Annotated[str | None, typer.Option("--from", help=_FORMATS_HELP)] = None,
    to_fmt: Annotated[str | None, typer.Option(
        "--to", help="Output format (same names); default from OUT's name, .csv meaning the "
        "generic csv.")] = None,
    step_ms: Annotated[float | None, typer.Option("--step-ms", help="Input: " + _STEP_HELP)
                       ] = None,
    to_step_ms: Annotated[float | None, typer.Option(
        "--to-step-ms", help="Output interval in ms (delay bin, csv/starlink-csv row step).")
    ] = None,
    direction: Annotated[str, typer.Option(
        "--direction", help="Direction single-direction formats read into and write from: "
        "down or up.")] = "down",
    merge: Annotated[Path | None, typer.Option(
        "--merge", help="A second trace whose quantities are added (e.g. a delay file next to "
        "a capacity file).")] = None,
    merge_step_ms: Annotated[float | None, typer.Option(
        "--merge-step-ms", help="--step-ms for the --merge file.")] = None,
) -> None:
    """Convert a trace between formats (mahimahi, leoreplayer-delay, starlink-csv, csv).

    Example, the LeoCC downlink's capacity and delay into one generic CSV:

    testbed trace convert leocc-downlink-bw.mahimahi.gz leocc.csv --merge
    leocc-downlink-delay-10ms.txt
    """
    trace = read_trace(src, from_fmt, _options(step_ms, direction, None))
    if merge is not None:
        trace = trace.merge(read_trace(merge, None, _options(merge_step_ms, direction, None)))
    used = write_trace(trace, dst, to_fmt, _options(to_step_ms, direction, None))
    typer.echo(f"wrote {dst} ({used}, {trace.duration_s:.3f} s, "
               f"directions: {', '.join(trace.directions)})")


def _parse_start(text: str) -> datetime:
    try:
        start = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InputError(f"'{text}' is not an ISO 8601 time, expected e.g. "
                         "2024-07-16T00:00:03Z", field="--start") from None
    if start.tzinfo is None:
        raise InputError(f"'{text}' has no time zone, expected UTC (end it with Z)",
                         field="--start")
    return start.astimezone(UTC)


def synth(
    dst: Annotated[Path, typer.Argument(metavar="OUT", help="File to write (.gz compresses).")],
    duration_s: Annotated[float, typer.Option("--duration-s", help="Length, seconds.")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same trace).")],
    start: Annotated[str, typer.Option(
        "--start", help="UTC start time; slots start at seconds 12, 27, 42, 57 of each minute.")
    ] = _DEFAULT_START,
    fmt: Annotated[str | None, typer.Option(
        "--format", "-f", help="Output format; default from OUT's name (.csv: generic csv with "
        "every quantity).")] = None,
    profile: Annotated[str, typer.Option(
        "--profile", help="Fitted link: leocc (downlink capacity and delay) or lagos (both "
        "directions).")] = "leocc",
    params: Annotated[Path | None, typer.Option(
        "--params", help="Fitted parameters JSON (default traces/starlink-synth-params.json).")
    ] = None,
    direction: Annotated[str, typer.Option(
        "--direction", help="Direction written by single-direction formats (mahimahi, "
        "leoreplayer-delay).")] = "down",
) -> None:
    """Generate a synthetic Starlink trace fitted to the shipped real traces.

    Example, ten minutes of downlink as a mahimahi file from a known UTC instant:

    testbed trace synth down.mahimahi --duration-s 600 --seed 7 --start 2024-07-16T00:00:03Z
    """
    fitted = SynthParams.load(params)
    trace = generate_starlink(duration_s, seed=seed, start_utc=_parse_start(start),
                              profile=profile, params=fitted)
    used = write_trace(trace, dst, fmt, _options(None, direction, None))
    typer.echo(f"wrote {dst} ({used}, profile {profile}, seed {seed}, {duration_s:g} s from "
               f"{trace.meta['start_utc']})")


def register(app: typer.Typer) -> None:
    """Add `testbed trace` with its subcommands."""
    trace_app = typer.Typer(
        name="trace",
        help="Inspect, convert and synthesise link traces (mahimahi, LeoReplayer delay, "
             "Starlink CSV, generic CSV).",
        no_args_is_help=True,
    )
    trace_app.command("inspect")(inspect)
    trace_app.command("convert")(convert)
    trace_app.command("synth")(synth)
    app.add_typer(trace_app, name="trace")
