"""`testbed replay`: run a command behind a link replaying traces (thin layer over
testbed.replay). Prints where things are before the command starts and the link's counters
after it ends (both on stderr, so the command's stdout stays its own); exits with the
command's status.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import typer

from testbed.cli.console import CliConsole
from testbed.errors import InputError
from testbed.replay import ReplayResult, ReplaySpec, ReplayTopology, run_replay

_console = CliConsole(stderr=True)


def _announce(topology: ReplayTopology) -> None:
    _console.print(
        f"replay: link up; terminal {topology.terminal_ns} ({topology.terminal_addr}), "
        f"ground {topology.ground_ns} ({topology.ground_addr}); the names 'ground' and "
        f"'terminal' resolve inside, $REPLAY_GROUND_ADDR is set; ledger in {topology.run_dir} "
        f"(after a SIGKILL: testbed down {topology.run_dir})", highlight=False, soft_wrap=True)


def print_counters(result: ReplayResult) -> None:
    """One line per direction with the link's counters (stderr)."""
    for direction in ("down", "up"):
        c = result.counters.get(direction)
        if c is None:
            continue
        q = c["queue_delay"]
        late_us = max(c["send_lateness"]["p99_us"], c["opportunity_lateness"]["p99_us"])
        _console.print(
            f"{direction:>4}: forwarded {c['forwarded_packets']} packets "
            f"({c['forwarded_bytes'] / 1e6:.2f} MB); dropped {c['dropped_queue']} by the "
            f"queue, {c['dropped_loss']} by loss; queue delay p50 {q['p50_us'] / 1e3:.1f} / "
            f"p99 {q['p99_us'] / 1e3:.1f} / max {q['max_us'] / 1e3:.1f} ms; release lateness "
            f"p99 {late_us / 1e3:.2f} ms", highlight=False, soft_wrap=True)
    follow = [e for e in result.events if e.get("kind") == "follow"]
    started = ", ".join(f"{e['direction']} {(e['applied_ns'] - e['t0_ns']) / 1e6:+.1f} ms"
                        for e in follow)
    _console.print(
        f"replay: {result.duration_s:.1f} s, forwarder CPU {result.worker_cpu_s:.2f} s"
        + (f"; traces handed over (applied - start): {started}" if started else "")
        + (f"; stopped by signal {result.interrupted_by}" if result.interrupted_by else ""),
        highlight=False, soft_wrap=True)
    if result.leftovers is not None and (result.leftovers.removed or result.leftovers.failed):
        _console.print(f"replay: removed what an earlier replay in {result.run_dir} left: "
                       f"{result.leftovers.summary()}", highlight=False, soft_wrap=True)
    if result.teardown is not None and not result.teardown.ok:
        _console.print(f"[red]replay: teardown left resources behind:[/red] "
                       f"{result.teardown.summary()}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    @app.command("replay", context_settings={"allow_interspersed_args": False})
    def replay(
        command: list[str] = typer.Argument(None, help="Command to run in the terminal "
                                            "namespace (after --)."),
        down: Path = typer.Option(..., "--down", help="Downlink capacity trace (mahimahi, "
                                  "starlink-csv, generic CSV...)."),
        up: Path | None = typer.Option(None, "--up", help="Uplink capacity trace (default: "
                                       "unshaped)."),
        delay: Path | None = typer.Option(None, "--delay", help="One-way delay trace, "
                                          "applied in both directions."),
        loss: float = typer.Option(0.0, "--loss", help="Random loss ratio in each direction."),
        queue: int = typer.Option(1000, "--queue", help="Drop-tail queue, packets."),
        queue_bytes: int | None = typer.Option(None, "--queue-bytes",
                                               help="Drop-tail queue, bytes (also)."),
        delay_step_ms: float | None = typer.Option(None, "--delay-step-ms",
                                                   help="Bin of a delay file without '# bin_ms' "
                                                   "(default 10; must agree with one it has)."),
        shell: bool = typer.Option(False, "--shell", help="Run an interactive shell instead."),
        ground: str | None = typer.Option(None, "--ground", help="Command started in the "
                                          "ground namespace first (e.g. 'iperf3 -s')."),
        prefix: str | None = typer.Option(None, "--prefix", help="Name prefix of the "
                                          "namespaces (default: rp + random)."),
        seed: int | None = typer.Option(None, "--seed", help="Seed of loss draws."),
        run_dir: Path | None = typer.Option(None, "--run-dir", help="Where the ledger of what "
                                            "the replay creates goes (default: "
                                            "runs/replay-PREFIX); `testbed down` it after a "
                                            "crash."),
    ) -> None:
        """Run COMMAND behind an emulated link replaying traces (like mahimahi's mm-link)."""
        argv = list(command or [])
        if shell:
            if argv:
                raise InputError("give either --shell or a command, not both", field="command")
            argv = [os.environ.get("SHELL", "/bin/sh")]
        spec = ReplaySpec(down=down, up=up, delay=delay, loss_ratio=loss,
                          queue_limit_packets=queue, queue_limit_bytes=queue_bytes,
                          delay_step_ms=delay_step_ms, prefix=prefix, seed=seed,
                          run_dir=run_dir)
        result = run_replay(spec, argv, ground_command=shlex.split(ground) if ground else None,
                            announce=_announce)
        print_counters(result)
        raise typer.Exit(result.returncode)
