"""`downlink-files`: satellites send a folder of files to the ground station over the data net.

One kind, two roles, one option set (the orchestrator may send the same options everywhere):
on a satellite it runs a SatelliteSender, on the ground a GroundReceiver on the node's data IP.

| option | role | default | meaning |
|---|---|---|---|
| `source` | satellite | required | folder whose files are sent |
| `pattern` | satellite | `*.png` | glob of files in `source` (natural order: 2.png before 10.png) |
| `ground_ip` | satellite | required | the ground station's data IP |
| `ground_port` | both | 7000 | the receiver's TCP port (the ground listens on it) |
| `duration_s` | satellite | none | deadline from start; files not acked by then are `stopped` |
| `loops` | satellite | 1 | passes over the file list; 0 = repeat until stop/deadline |
| `window` | satellite | 8 | files in flight before an ack (1 = send, wait for ack, next) |
| `connect_timeout_s`, `io_timeout_s` | satellite | 1.0, 5.0 | connect limit; no-progress limit |
| `backoff_min_s`, `backoff_max_s` | satellite | 0.2, 2.0 | retry backoff, doubling |
| `store` | ground | false | write verified files to `<results>/received/<sender>/` |
| `max_file_bytes` | ground | 1 GiB | larger files are rejected |
| `idle_timeout_s` | ground | 30.0 | a silent connection is closed |

The ground runs until stopped (`/workload/stop`, SIGTERM); `duration_s` is a satellite option.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from nodes.addr import format_hostport
from nodes.clock import Stamp
from nodes.errors import ConfigError, WorkloadOptionsError
from nodes.receiver import GroundReceiver
from nodes.sender import SatelliteSender, SenderConfig
from nodes.workloads.base import NodeContext, Role, Workload
from nodes.workloads.options import Options
from nodes.workloads.registry import register_workload

DEFAULT_PORT = 7000
_SENDER_ONLY = ("source", "pattern", "ground_ip", "duration_s", "loops", "window",
                "connect_timeout_s", "io_timeout_s", "backoff_min_s", "backoff_max_s")
_GROUND_ONLY = ("store", "max_file_bytes", "idle_timeout_s")


def natural_key(path: Path) -> list[object]:
    """Sort key putting `2.png` before `10.png`."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def list_files(source: Path, pattern: str) -> list[Path]:
    """Regular files in `source` matching `pattern`, in natural order; loud when none."""
    if not source.is_dir():
        raise WorkloadOptionsError(f"workload downlink-files: option source={str(source)!r}, "
                                   "expected an existing folder")
    files = sorted((p for p in source.glob(pattern) if p.is_file()), key=natural_key)
    if not files:
        raise WorkloadOptionsError(f"workload downlink-files: source {str(source)!r} has no "
                                   f"file matching pattern {pattern!r}")
    return files


class _SatelliteSide:
    """The sender half: `duration_s` deadline counted from the workload's start."""

    def __init__(self, sender: SatelliteSender, duration_s: float | None):
        self.sender = sender
        self.duration_s = duration_s

    def prepare(self) -> None:
        """Nothing to acquire: the first connect happens in `run`."""

    def run(self, stop: threading.Event, started: Stamp) -> bool:
        deadline_ns = None
        if self.duration_s is not None:
            deadline_ns = started.t_ns + int(self.duration_s * 1e9)
        return self.sender.run(stop, deadline_ns)

    def cleanup(self) -> None:
        """Nothing held between runs: every socket is closed by `run`."""

    def summary(self, elapsed_s: float) -> dict[str, object]:
        stats = self.sender.stats()
        delivered_bits = int(stats["bytes_delivered"]) * 8  # type: ignore[call-overload]
        connected_s = float(stats["connected_s"])  # type: ignore[arg-type]
        stats["goodput_bps"] = delivered_bits / elapsed_s if elapsed_s > 0 else 0.0
        stats["goodput_connected_bps"] = delivered_bits / connected_s if connected_s > 0 else 0.0
        return stats

    def events(self) -> list[dict[str, object]]:
        return [ev.to_dict() for ev in self.sender.events()]


class _GroundSide:
    """The receiver half: listens from `prepare` (so a busy port fails the start request)."""

    def __init__(self, receiver: GroundReceiver):
        self.receiver = receiver

    def prepare(self) -> None:
        self.receiver.start()

    def run(self, stop: threading.Event, started: Stamp) -> bool:
        stop.wait()
        return False

    def cleanup(self) -> None:
        self.receiver.stop()

    def summary(self, elapsed_s: float) -> dict[str, object]:
        tallies = self.receiver.tallies()
        listen = format_hostport(*self.receiver.address) if self.receiver.started else ""
        return {"listen": listen,
                "files_received": sum(t.files_received for t in tallies.values()),
                "bytes_received": sum(t.bytes_received for t in tallies.values()),
                "senders": {name: vars(t) for name, t in sorted(tallies.items())}}

    def events(self) -> list[dict[str, object]]:
        return [ev.to_dict() for ev in self.receiver.events()]


@register_workload("downlink-files")
class DownlinkFiles(Workload):
    """Satellite: send every file until acked. Ground: receive, verify, count (or store)."""

    def __init__(self, ctx: NodeContext, options: Mapping[str, object] | None,
                 on_end: Callable[[Workload], None] | None = None):
        super().__init__(ctx, options, on_end)
        opts = Options(self.kind, options)
        port = opts.integer("ground_port", DEFAULT_PORT, low=1, high=65535)
        try:
            if ctx.role is Role.SATELLITE:
                self._side: _SatelliteSide | _GroundSide = self._make_sender(opts, port)
            else:
                self._side = _GroundSide(self._make_receiver(opts, port))
        except WorkloadOptionsError:
            raise
        except ConfigError as exc:
            raise WorkloadOptionsError(f"workload {self.kind}: {exc}") from exc
        opts.finish()

    def _make_sender(self, opts: Options, port: int) -> _SatelliteSide:
        opts.ignore(*_GROUND_ONLY)
        source = Path(opts.text("source"))
        pattern = opts.text("pattern", "*.png")
        files = list_files(source, pattern)
        duration_s = opts.number("duration_s", None)
        cfg = SenderConfig(
            name=self.ctx.name, ground_ip=opts.text("ground_ip"), ground_port=port,
            source_ip=self.ctx.data_ip,
            connect_timeout_s=opts.number("connect_timeout_s", 1.0),
            io_timeout_s=opts.number("io_timeout_s", 5.0),
            backoff_min_s=opts.number("backoff_min_s", 0.2),
            backoff_max_s=opts.number("backoff_max_s", 2.0),
            window=opts.integer("window", 8, low=1, high=1024))
        loops = opts.integer("loops", 1, low=0)
        sender = SatelliteSender(cfg, files, loops=loops, metrics=self.ctx.metrics,
                                 clock=self.ctx.clock)
        return _SatelliteSide(sender, duration_s)

    def _make_receiver(self, opts: Options, port: int) -> GroundReceiver:
        opts.ignore(*_SENDER_ONLY)
        if not self.ctx.data_ip:
            raise WorkloadOptionsError(f"workload {self.kind} on ground node {self.ctx.name}: "
                                       "the agent has no --data-ip to listen on")
        store_dir = None
        if opts.flag("store", False):
            if self.ctx.results_dir is None:
                raise WorkloadOptionsError(f"workload {self.kind}: option store=true needs "
                                           "the agent's --results folder")
            store_dir = self.ctx.results_dir / "received"
        return GroundReceiver(self.ctx.data_ip, port, store_dir=store_dir,
                              max_file_bytes=opts.integer("max_file_bytes", 1 << 30, low=0),
                              idle_timeout_s=opts.number("idle_timeout_s", 30.0),
                              metrics=self.ctx.metrics, clock=self.ctx.clock)

    def _prepare(self) -> None:
        self._side.prepare()

    def _run(self, stop: threading.Event) -> bool:
        started = self._started or self.ctx.clock.stamp()
        return self._side.run(stop, started)

    def _cleanup(self) -> None:
        self._side.cleanup()

    def _summary(self, elapsed_s: float) -> dict[str, object]:
        return self._side.summary(elapsed_s)

    def _events(self) -> list[dict[str, object]]:
        return self._side.events()
