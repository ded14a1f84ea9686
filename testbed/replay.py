"""`testbed replay`: run a command behind an emulated link replaying recorded traces, like
mahimahi's mm-link, then remove everything.

Two network namespaces, terminal and ground, joined through a third by the userspace shaper
(netem.shapers.userspace_pair); the command runs in the terminal namespace (downlink = ground
to terminal). Owns the order of setup and teardown and the command's process group: teardown
runs on normal exit, on the command failing, on Ctrl-C/SIGINT, SIGTERM and SIGHUP (handlers
turn them into an orderly stop; further signals are ignored while removing).

Everything it creates is recorded first in the ledger of its run directory (default
`runs/replay-<prefix>/`): the namespaces `<prefix>-term/-gnd/-shp`, the root ends of their
veths, the forwarder, the commands' process groups and the hosts files that make the names
`ground` and `terminal` resolve inside the namespaces (`/etc/netns/<ns>/hosts`, which
`ip netns exec` bind-mounts over /etc/hosts). After a SIGKILL, `testbed down <run dir>` removes
exactly those; a new replay in the same run directory does that first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from netem.errors import NetemError
from netem.linkstate import LinkState
from netem.shapers.userspace import UserspaceShaper
from netem.shapers.userspace_pair import NamespacePair
from netem.shapers.userspace_program import TraceProgram
from netem.traces import FormatOptions, read_trace
from netem.traces.model import DirectionSeries
from testbed.errors import InputError, SystemRequirementError
from testbed.ledger import (
    Ledger,
    LedgerError,
    TeardownReport,
    process_entry_details,
    retire_ledger,
    teardown,
)
from testbed.lifecycle.run_dir import RunDir
from testbed.sysrun import Runner

UNSHAPED_RATE_BPS = 10_000_000_000
"""Rate of a direction given no capacity trace (far above what the forwarder can carry)."""
START_DELAY_NS = 250_000_000
"""The traces start this long after they are sent to the forwarder (a 120 s mahimahi trace
takes ~50 ms to hand over), at one instant for both directions; the command starts then."""
STOP_GRACE_S = 2.0
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
DEFAULT_RUNS_DIR = Path("runs")
NETNS_ETC_DIR = Path("/etc/netns")
"""`ip netns exec NS` bind-mounts each file of /etc/netns/NS over the same file in /etc."""
HOST_NAMES = {"ground": "ground_addr", "terminal": "terminal_addr"}
"""Names that resolve inside the replay's namespaces, to the addresses of the two ends."""


@dataclass(frozen=True)
class ReplaySpec:
    """What to replay. Paths are trace files in any netem.traces format (detected by name).

    down / up: capacity traces (up None: the uplink is unshaped); delay: one-way delay trace
    applied to both directions (its 'up' direction, when it has one, to the uplink); without
    it the capacity traces' own delay, if recorded, is used. loss_ratio: random loss added in
    each direction. delay_step_ms: bin of a delay file that declares none (LeoReplayer: 10).
    run_dir: where the ledger goes (default runs/replay-<prefix>).
    """

    down: Path
    up: Path | None = None
    delay: Path | None = None
    loss_ratio: float = 0.0
    queue_limit_packets: int = 1000
    queue_limit_bytes: int | None = None
    delay_step_ms: float | None = None
    prefix: str | None = None
    terminal_addr: str = "100.64.0.2/24"
    ground_addr: str = "100.64.0.1/24"
    seed: int | None = None
    run_dir: Path | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.loss_ratio <= 1.0:
            raise InputError(f"{self.loss_ratio}, expected a ratio in [0, 1]", field="--loss")
        if self.queue_limit_packets < 1:
            raise InputError(f"{self.queue_limit_packets}, expected >= 1", field="--queue")
        if self.queue_limit_bytes is not None and self.queue_limit_bytes < 1:
            raise InputError(f"{self.queue_limit_bytes}, expected >= 1", field="--queue-bytes")


@dataclass
class ReplayTopology:
    """Where things are, for the announcement and the command's environment."""

    prefix: str
    terminal_ns: str
    ground_ns: str
    shaper_ns: str
    terminal_addr: str
    ground_addr: str
    run_dir: Path | None = None  # holds the ledger: `testbed down` it after a SIGKILL

    def environment(self) -> dict[str, str]:
        return {"REPLAY_TERMINAL_NS": self.terminal_ns, "REPLAY_GROUND_NS": self.ground_ns,
                "REPLAY_TERMINAL_ADDR": self.terminal_addr,
                "REPLAY_GROUND_ADDR": self.ground_addr}


@dataclass
class ReplayResult:
    """How the replay ended: the command's status, the link's counters, what was applied.

    returncode: the command's exit status (128 + signal number when a signal stopped the
    replay or the command); interrupted_by: the signal that stopped the replay, if any.
    """

    returncode: int
    counters: dict[str, dict[str, Any]]
    worker_cpu_s: float
    duration_s: float
    events: list[dict[str, Any]] = field(default_factory=list)
    interrupted_by: int | None = None
    topology: ReplayTopology | None = None
    run_dir: Path | None = None
    teardown: TeardownReport | None = None
    leftovers: TeardownReport | None = None  # an earlier replay's, removed first


class _Stop(Exception):
    """Raised by the signal handler to unwind into teardown."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# ---- traces -> programs ---------------------------------------------------------------------

def _series(path: Path, direction: str, step_ms: float | None, what: str) -> DirectionSeries:
    if not path.is_file():
        raise InputError(f"{what} trace not found", path=str(path))
    trace = read_trace(path, options=FormatOptions(step_ms=step_ms, direction=direction))
    if direction in trace.directions:
        return trace.direction(direction)
    return trace.direction(trace.directions[0])


def build_programs(spec: ReplaySpec) -> dict[str, TraceProgram | None]:
    """The program each direction follows ('down', 'up'); None: the direction is unshaped
    and undelayed (only loss applies). Reads and validates every file before anything is
    created."""
    capacity: dict[str, DirectionSeries | None] = {"down": None, "up": None}
    for direction, path in (("down", spec.down), ("up", spec.up)):
        if path is None:
            continue
        series = _series(Path(path), direction, None, f"--{direction}")
        if series.opportunities_ms is None and series.rate_bps is None:
            raise InputError(f"--{direction} trace records no capacity (it has: "
                             f"{', '.join(series.quantities) or 'nothing'})", path=str(path))
        capacity[direction] = series
    delays: dict[str, DirectionSeries | None] = {"down": None, "up": None}
    if spec.delay is not None:
        for direction in ("down", "up"):
            series = _series(Path(spec.delay), direction, spec.delay_step_ms, "--delay")
            if series.delay_us is None:
                raise InputError("--delay trace records no delay", path=str(spec.delay))
            delays[direction] = series
    programs: dict[str, TraceProgram | None] = {}
    for direction in ("down", "up"):
        cap, delay = capacity[direction], delays[direction]
        if cap is None and delay is None:
            programs[direction] = None
            continue
        source = spec.down if direction == "down" else (spec.up or spec.delay)
        programs[direction] = TraceProgram.from_series(
            cap, delay=delay if delay is not None else cap, name=Path(str(source)).name)
    return programs


# ---- what the replay creates, in its ledger -------------------------------------------------

def with_defaults(spec: ReplaySpec) -> ReplaySpec:
    """`spec` with its prefix and run directory chosen (random prefix rp + 5 hex digits)."""
    prefix = spec.prefix or f"rp{uuid.uuid4().hex[:5]}"
    return replace(spec, prefix=prefix,
                   run_dir=spec.run_dir or DEFAULT_RUNS_DIR / f"replay-{prefix}")


def _record_pair(ledger: Ledger, pair: NamespacePair) -> None:
    """Before the pair exists: its namespaces and the root ends of its veths."""
    n = pair.names
    ledger.record_many([*(("netns", ns, {}) for ns in n.namespaces),
                        *(("link", n.iface(end), {}) for end in ("t0", "g0"))])


def hosts_text(topology: ReplayTopology) -> str:
    """The /etc/hosts the replay's namespaces see: localhost and the two ends by name."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{getattr(topology, attr)}\t{name}" for name, attr in HOST_NAMES.items()]
    return "\n".join(lines) + "\n"


def _write_hosts(ledger: Ledger, topology: ReplayTopology, etc_dir: Path) -> None:
    """Make `ground` and `terminal` resolve inside both namespaces (recorded, then written)."""
    etc_dir.mkdir(parents=True, exist_ok=True)  # a system folder iproute2 owns: never removed
    for ns in (topology.terminal_ns, topology.ground_ns):
        folder, hosts = etc_dir / ns, etc_dir / ns / "hosts"
        if folder.exists():
            raise SystemRequirementError(f"{folder} already exists: another tool configures "
                                         f"namespace {ns}; pick another --prefix")
        ledger.record("dir", str(folder), path=str(folder))
        folder.mkdir()
        ledger.record("file", str(hosts), path=str(hosts))
        hosts.write_text(hosts_text(topology))


def _record_process(ledger: Ledger, name: str, pid: int) -> None:
    """A process group just started; one that is already gone needs no undo."""
    with contextlib.suppress(LedgerError):
        ledger.record("process", name, **process_entry_details(pid, group=True))


# ---- the command's process group --------------------------------------------------------------

@contextlib.contextmanager
def _handlers(stop_signals: bool) -> Iterator[None]:
    """Turn SIGINT/SIGTERM/SIGHUP into _Stop while the body runs (main thread only)."""
    if not stop_signals or threading.current_thread() is not threading.main_thread():
        yield
        return

    owner = os.getpid()

    def handler(signum: int, _frame: object) -> None:
        if os.getpid() != owner:
            # a forked helper (pyroute2 forks to create namespaces) must not unwind our stack
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise _Stop(signum)

    previous = {s: signal.signal(s, handler) for s in HANDLED_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """Teardown must not be cut short by a second Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in HANDLED_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _tty_fd() -> int | None:
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    return fd if os.isatty(fd) else None


def _give_terminal(pgid: int) -> None:
    """Make process group `pgid` the terminal's foreground (job control, as a shell does)."""
    fd = _tty_fd()
    if fd is None:
        return
    old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)  # we may be in the background by now
    try:
        with contextlib.suppress(OSError):
            os.tcsetpgrp(fd, pgid)
    finally:
        signal.signal(signal.SIGTTOU, old)


def _stop_group(proc: subprocess.Popen[bytes], first: int = signal.SIGINT) -> None:
    """Stop a process group led by `proc`: `first`, then SIGTERM, then SIGKILL, each with a
    bounded wait; then SIGKILL whatever is left in the group (the command's own children)."""
    for sig, wait_s in ((first, STOP_GRACE_S), (signal.SIGTERM, STOP_GRACE_S),
                        (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _returncode(code: int) -> int:
    return 128 - code if code < 0 else code


# ---- the replay ---------------------------------------------------------------------------------

def run_replay(
    spec: ReplaySpec,
    command: Sequence[str],
    *,
    ground_command: Sequence[str] | None = None,
    announce: Callable[[ReplayTopology], None] | None = None,
    handle_signals: bool = True,
) -> ReplayResult:
    """Build the link, run `command` in the terminal namespace until it exits, tear down.

    ground_command: started first in the ground namespace (e.g. a server) and stopped at the
    end. announce: called once the link is up, before the command starts. Raises InputError
    for bad traces/arguments, SystemRequirementError when not root or a tool is missing.
    """
    if not command:
        raise InputError("no command to run (give one after --, or --shell)", field="command")
    programs = build_programs(spec)
    if os.geteuid() != 0:
        raise SystemRequirementError("testbed replay needs root (network namespaces, "
                                     "AF_PACKET sockets)")
    spec = with_defaults(spec)
    prefix = str(spec.prefix)
    run_dir = RunDir(Path(str(spec.run_dir)))
    leftovers = retire_ledger(run_dir.ledger, Runner())
    run_dir.create()
    report: TeardownReport | None = None
    started = time.monotonic()
    interrupted: int | None = None
    returncode = 1
    counters: dict[str, dict[str, Any]] = {}
    events: list[dict[str, Any]] = []
    cpu_s = 0.0
    topology: ReplayTopology | None = None
    pair = NamespacePair(prefix, terminal_addr=spec.terminal_addr, ground_addr=spec.ground_addr)
    shaper: UserspaceShaper | None = None
    ground: subprocess.Popen[bytes] | None = None
    child: subprocess.Popen[bytes] | None = None
    tty_owner = os.getpgrp()
    with _handlers(handle_signals), Ledger(run_dir.ledger) as ledger:
        try:
            _record_pair(ledger, pair)
            pair.create()
            n = pair.names
            topology = ReplayTopology(prefix, n.terminal_ns, n.ground_ns, n.shaper_ns,
                                      pair.terminal_addr, pair.ground_addr, run_dir.path)
            _write_hosts(ledger, topology, NETNS_ETC_DIR)
            shaper = UserspaceShaper(seed=spec.seed)
            _record_process(ledger, f"{prefix}-forwarder", shaper.pid)
            states = {d: LinkState(rate_bps=UNSHAPED_RATE_BPS, loss_ratio=spec.loss_ratio,
                                   queue_limit_packets=spec.queue_limit_packets, name=d)
                      for d in ("down", "up")}
            shaper.add_link(pair.link(up="up", down="down", name=prefix), states["up"],
                            states["down"], queue_limit_bytes=spec.queue_limit_bytes)
            t0 = time.monotonic_ns() + START_DELAY_NS
            for direction, program in programs.items():
                if program is not None:
                    shaper.follow(direction, program, start_ns=t0)
            env = {**os.environ, **topology.environment()}
            if ground_command:
                ground = subprocess.Popen(pair.argv_in("ground", ground_command), env=env,
                                          stdin=subprocess.DEVNULL, process_group=0)
                _record_process(ledger, f"{prefix}-ground-command", ground.pid)
            if announce is not None:
                announce(topology)
            time.sleep(max(0, t0 - time.monotonic_ns()) / 1e9)
            child = subprocess.Popen(pair.argv_in("terminal", command), env=env,
                                     process_group=0)
            _record_process(ledger, f"{prefix}-command", child.pid)
            _give_terminal(child.pid)
            returncode = _returncode(child.wait())
        except _Stop as stop:
            interrupted = stop.signum
            returncode = 128 + stop.signum
        except KeyboardInterrupt:
            interrupted = signal.SIGINT
            returncode = 128 + signal.SIGINT
        finally:
            with _signals_ignored():
                _give_terminal(tty_owner)
                if child is not None:
                    if child.poll() is None:
                        returncode = 128 + (interrupted or signal.SIGTERM)
                    _stop_group(child, first=interrupted or signal.SIGTERM)
                if ground is not None:
                    _stop_group(ground, first=signal.SIGTERM)
                try:
                    if shaper is not None:
                        with contextlib.suppress(NetemError):
                            counters = shaper.counters()
                            events = shaper.events()
                            cpu_s = float(shaper.worker_stats()["cpu_s"])
                        shaper.close()
                finally:
                    try:
                        pair.close()
                    finally:  # whatever the orderly stop missed, and the hosts files
                        report = teardown(ledger, Runner())
    return ReplayResult(returncode, counters, cpu_s, time.monotonic() - started, events,
                        interrupted, topology, run_dir.path, report, leftovers)
