"""`testbed link verify`: measured fidelity of a shaped link (thin layer over
testbed.linkverify): prints per-interval tables and summary errors, optionally a plot and JSON.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer

from testbed.cli.console import CliConsole
from testbed.linkverify import VerifyReport, VerifySpec, run_verify
from testbed.replay import ReplaySpec

_console = CliConsole()


def _f(x: float, fmt: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def print_report(report: VerifyReport) -> None:
    """Per-interval tables (throughput, RTT/loss) then the summary, on stdout."""
    for name, rows in (("UDP (saturating)", report.udp), ("TCP", report.tcp)):
        _console.print(f"{name}: t(s)  programmed  achieved (Mbit/s)  error", highlight=False)
        for r in rows:
            err = (r["achieved_mbps"] - r["programmed_mbps"]) / r["programmed_mbps"] * 100
            _console.print(f"  {r['t_s']:7.2f}  {r['programmed_mbps']:9.2f}  "
                           f"{r['achieved_mbps']:9.2f}  {err:+6.1f} %", highlight=False)
    _console.print("ping: t(s)  RTT programmed  measured (ms)  loss  programmed loss",
                   highlight=False)
    for r in report.rtt:
        _console.print(f"  {r['t_s']:7.2f}  {_f(r['programmed_ms'], '9.2f')}  "
                       f"{_f(r['measured_ms'], '9.2f')}  {r['loss']:.3f}  "
                       f"{r['programmed_loss']:.3f}", highlight=False)
    s = report.summary
    _console.print(
        f"summary: throughput median |error| {s['throughput_median_abs_error_pct']:.2f} % "
        f"(UDP offered {s['udp_offered_mbps']:.1f} Mbit/s); TCP utilisation "
        f"{s['tcp_utilisation'] * 100:.0f} %; RTT |error| median {s['rtt_median_error_ms']:.3f}"
        f" / p99 {s['rtt_p99_error_ms']:.3f} ms; ping loss {s['ping_loss']:.3f} vs programmed "
        f"{s['programmed_loss']:.3f}; iperf3 start lag {s['iperf_start_lag_ms']:.0f} ms",
        highlight=False, soft_wrap=True)


def plot_report(report: VerifyReport, path: Path) -> None:
    """Programmed vs achieved throughput and RTT over the traces' time axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=False)
    for name, rows, style in (("UDP", report.udp, "o-"), ("TCP", report.tcp, "s-")):
        if rows:
            t = [r["t_s"] for r in rows]
            ax1.step(t, [r["programmed_mbps"] for r in rows], where="post", color="grey")
            ax1.plot(t, [r["achieved_mbps"] for r in rows], style, label=f"{name} achieved")
    ax1.set_ylabel("Mbit/s (grey: programmed)")
    ax1.legend()
    t = [r["t_s"] for r in report.rtt]
    ax2.plot(t, [r["programmed_ms"] for r in report.rtt], "k--", label="programmed")
    ax2.plot(t, [r["measured_ms"] for r in report.rtt], "o-", label="measured (median/s)")
    ax2.set_ylabel("RTT (ms)")
    ax2.set_xlabel("time since the traces started (s)")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def register(app: typer.Typer) -> None:
    link = typer.Typer(help="Shaped links on their own.", no_args_is_help=True)
    app.add_typer(link, name="link")

    @link.command("verify")
    def verify(
        down: Path = typer.Option(..., "--down", help="Downlink capacity trace."),
        up: Path | None = typer.Option(None, "--up", help="Uplink capacity trace "
                                       "(default: unshaped)."),
        delay: Path | None = typer.Option(None, "--delay", help="One-way delay trace, both "
                                          "directions."),
        loss: float = typer.Option(0.0, "--loss", help="Random loss ratio in each direction."),
        duration_s: int = typer.Option(20, "--duration-s", help="UDP phase length; TCP and "
                                       "ping run half as long each."),
        rate_mbps: float | None = typer.Option(None, "--rate-mbps", help="UDP offered rate "
                                               "(default 1.5 x the trace's 1 s peak)."),
        delay_step_ms: float | None = typer.Option(None, "--delay-step-ms",
                                                   help="Bin of a delay file without '# bin_ms' "
                                                   "(default 10; must agree with one it has)."),
        plot: Path | None = typer.Option(None, "--plot", help="Write a PNG plot here."),
        json_out: Path | None = typer.Option(None, "--json", help="Write rows and summary "
                                             "as JSON here."),
        prefix: str | None = typer.Option(None, "--prefix", help="Namespace name prefix."),
        run_dir: Path | None = typer.Option(None, "--run-dir", help="Where the ledger and the "
                                            "probes' outputs go (default: runs/replay-PREFIX); "
                                            "`testbed down` it after a crash."),
    ) -> None:
        """Measure a shaped link against its traces: iperf3 UDP (saturating) and TCP, then
        ping every 10 ms; prints programmed vs achieved per second and summary errors.

        Example (root): testbed link verify --down
        $TESTBED_DATA/traces/starlink/leocc-downlink-bw.mahimahi.gz --delay
        $TESTBED_DATA/traces/starlink/leocc-downlink-delay-10ms.txt --duration-s 20
        --plot verify.png
        """
        spec = VerifySpec(
            ReplaySpec(down=down, up=up, delay=delay, loss_ratio=loss,
                       delay_step_ms=delay_step_ms, prefix=prefix, run_dir=run_dir),
            duration_s=duration_s,
            rate_bps=None if rate_mbps is None else int(rate_mbps * 1e6))
        report = run_verify(spec)
        print_report(report)
        if plot is not None:
            plot_report(report, plot)
        if json_out is not None:
            json_out.write_text(json.dumps(report.as_json(), indent=1, default=float))
