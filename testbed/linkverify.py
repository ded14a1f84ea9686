"""`testbed link verify`: measure how closely a shaped link follows its traces.

The link is built by testbed.replay (same namespaces, shaper, signal handling and cleanup);
its command is testbed.linkverify_probe (iperf3 UDP saturating, then TCP, both downlink, then
a fine-grained ping). The references come from netem.fidelity, computed from the programs
alone: per 1 s interval, programmed capacity vs achieved throughput, programmed RTT (one-way
delays + waiting for an opportunity) vs measured, programmed vs measured loss.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from netem import fidelity
from netem.shapers.userspace_program import TraceProgram
from testbed.errors import InputError, SystemRequirementError, TestbedError
from testbed.lifecycle.run_dir import RunDir
from testbed.linkverify_probe import UDP_PAYLOAD_BYTES
from testbed.replay import ReplayResult, ReplaySpec, build_programs, run_replay, with_defaults

IPERF_PORT = 5299
PING_INTERVAL_S = 0.01
UDP_OVERHEAD_BYTES = 28  # IP + UDP headers: an opportunity carries one 1500-byte IP packet
TCP_MSS_BYTES = 1448  # payload of a 1500-byte IP packet with TCP timestamps
ALIGN_MAX_NS = 600_000_000
ALIGN_STEP_NS = 10_000_000
_PING_LINE = re.compile(r"^\[(\d+\.\d+)\].*icmp_seq=(\d+).*time=([\d.]+) ms")


@dataclass(frozen=True)
class VerifySpec:
    """The link (as for replay) and the measurement: UDP for duration_s, TCP for half of it
    (at least 2 s), then ping every 10 ms for half of it (at least 1 s). rate_bps: UDP offered
    rate (default 1.5 x the downlink's highest 1 s capacity)."""

    link: ReplaySpec
    duration_s: int = 20
    rate_bps: int | None = None

    def __post_init__(self) -> None:
        if self.duration_s < 2:
            raise InputError(f"{self.duration_s}, expected >= 2 s", field="--duration-s")
        if self.rate_bps is not None and self.rate_bps <= 0:
            raise InputError(f"{self.rate_bps}, expected > 0", field="--rate-mbps")

    @property
    def tcp_s(self) -> int:
        return max(2, self.duration_s // 2)

    @property
    def ping_count(self) -> int:
        return int(max(1.0, self.duration_s / 2) / PING_INTERVAL_S)


@dataclass
class VerifyReport:
    """Per-interval rows (dicts of floats) and the summary errors."""

    udp: list[dict[str, float]] = field(default_factory=list)
    tcp: list[dict[str, float]] = field(default_factory=list)
    rtt: list[dict[str, float]] = field(default_factory=list)
    summary: dict[str, float] = field(default_factory=dict)
    replay: ReplayResult | None = None

    def as_json(self) -> dict[str, Any]:
        return {"udp": self.udp, "tcp": self.tcp, "rtt": self.rtt, "summary": self.summary,
                "counters": self.replay.counters if self.replay else {}}


def _peak_rate_bps(program: TraceProgram | None, until_ns: int) -> float:
    edges = np.arange(0, until_ns + 1, 10**9, dtype=np.int64)
    cap = fidelity.capacity_per_interval_bps(program, edges)
    if np.all(np.isnan(cap)):
        raise InputError("--down trace has no capacity; give --rate-mbps", field="--down")
    return float(np.nanmax(cap))


def _iperf_intervals(path: Path, what: str) -> list[dict[str, float]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TestbedError(f"iperf3 {what}: no JSON output ({exc})") from exc
    if "error" in data:
        raise TestbedError(f"iperf3 {what}: {data['error']}")
    return [{"start_s": float(i["sum"]["start"]), "end_s": float(i["sum"]["end"]),
             "bytes": float(i["sum"]["bytes"]), "lost": float(i["sum"].get("lost_packets", 0)),
             "packets": float(i["sum"].get("packets", 0))} for i in data["intervals"]]


def _throughput_rows(intervals: list[dict[str, float]], launched_off_ns: int,
                     program: TraceProgram | None, ip_per_payload: float,
                     align: bool) -> tuple[list[dict[str, float]], int]:
    """Achieved IP-level rate per interval beside the programmed capacity of the same window;
    the iperf3 test starts some round trips after its launch: `align` finds that lag (0 to
    0.6 s, 10 ms steps) as the one that best matches; otherwise the UDP lag is reused."""
    full = [i for i in intervals if i["end_s"] - i["start_s"] > 0.9]
    if not full:
        return [], 0
    edges = np.array([i["start_s"] for i in full] + [full[-1]["end_s"]]) * 1e9
    edges = edges.astype(np.int64)
    achieved = np.array([i["bytes"] * 8 * ip_per_payload / (i["end_s"] - i["start_s"])
                         for i in full])
    lags = range(0, ALIGN_MAX_NS + 1, ALIGN_STEP_NS) if align else [0]
    best_lag, best_err, best_cap = 0, np.inf, None
    for lag in lags:
        cap = fidelity.capacity_per_interval_bps(program, edges, launched_off_ns + lag)
        err = float(np.nanmedian(np.abs(achieved - cap) / cap)) if np.all(cap > 0) else np.inf
        if best_cap is None or err < best_err:
            best_lag, best_err, best_cap = lag, err, cap
    rows = [{"t_s": (launched_off_ns + best_lag + e) / 1e9, "programmed_mbps": c / 1e6,
             "achieved_mbps": a / 1e6, "lost": i["lost"], "packets": i["packets"]}
            for e, c, a, i in zip(edges[:-1], best_cap, achieved, full, strict=True)]
    return rows, best_lag


def _ping(path: Path, wall_minus_mono_ns: int, t0_ns: int,
          count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(send offsets from t0 ns, RTT ms, seq) of the replies."""
    send, rtt, seq = [], [], []
    for line in path.read_text().splitlines():
        m = _PING_LINE.match(line)
        if m is None:
            continue
        rtt_ms = float(m.group(3))
        recv_mono = int(float(m.group(1)) * 1e9) - wall_minus_mono_ns
        send.append(recv_mono - int(rtt_ms * 1e6) - t0_ns)
        rtt.append(rtt_ms)
        seq.append(int(m.group(2)))
    if not send:
        raise TestbedError(f"ping: no reply to {count} probes through the link")
    return np.array(send, dtype=np.int64), np.array(rtt), np.array(seq)


def run_verify(spec: VerifySpec, *, announce: Any = None) -> VerifyReport:
    """Build the link, measure, tear down (also on Ctrl-C: testbed.replay's handling).

    The link's ledger and the probes' outputs (results/probes/) go to the replay's run
    directory (`spec.link.run_dir`, default runs/replay-<prefix>)."""
    for binary in ("iperf3", "ping"):
        if shutil.which(binary) is None:
            raise SystemRequirementError(f"testbed link verify needs '{binary}' on PATH")
    programs = build_programs(spec.link)
    total_ns = (spec.duration_s + spec.tcp_s + spec.duration_s) * 10**9 + 60 * 10**9
    rate_bps = spec.rate_bps or int(1.5 * _peak_rate_bps(programs["down"], total_ns))
    link = with_defaults(spec.link)
    spec = replace(spec, link=link)
    # the probes' outputs stay beside the replay's ledger (a record of the measurement)
    out = RunDir(Path(str(link.run_dir))).results / "probes"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    ground_addr = spec.link.ground_addr.split("/")[0]
    command = [sys.executable, "-m", "testbed.linkverify_probe", str(out), ground_addr,
               str(IPERF_PORT), str(spec.duration_s), str(spec.tcp_s), str(rate_bps),
               str(spec.ping_count), str(PING_INTERVAL_S)]
    result = run_replay(spec.link, command, announce=announce,
                        ground_command=["iperf3", "-s", "-p", str(IPERF_PORT),
                                        "--logfile", str(out / "server.log")])
    if result.interrupted_by is not None:
        raise KeyboardInterrupt
    if result.returncode != 0:
        raise TestbedError(f"link verify: the probes exited with status {result.returncode}")
    report = analyse(out, programs, replace(spec, rate_bps=rate_bps), result)
    return report


def _loss_ratio(program: TraceProgram | None, offsets_ns: np.ndarray, extra: float) -> np.ndarray:
    p = fidelity.step_values(None if program is None else program.loss_ratio, offsets_ns)
    return 1 - (1 - p) * (1 - extra)


def analyse(out: Path, programs: dict[str, TraceProgram | None], spec: VerifySpec,
            result: ReplayResult) -> VerifyReport:
    """Turn the probe outputs in `out` into per-interval rows and summary errors."""
    meta = json.loads((out / "meta.json").read_text())
    follow = [e for e in result.events if e.get("kind") == "follow"]
    if not follow:
        raise TestbedError("link verify: the shaper recorded no trace start")
    t0_ns = int(follow[0]["t0_ns"])
    down, up = programs["down"], programs["up"]
    report = VerifyReport(replay=result)
    report.udp, lag = _throughput_rows(
        _iperf_intervals(out / "udp.json", "UDP"), meta["udp_launched_ns"] - t0_ns, down,
        (UDP_PAYLOAD_BYTES + UDP_OVERHEAD_BYTES) / UDP_PAYLOAD_BYTES, align=True)
    report.tcp, _ = _throughput_rows(
        _iperf_intervals(out / "tcp.json", "TCP"), meta["tcp_launched_ns"] + lag - t0_ns, down,
        1500 / TCP_MSS_BYTES, align=True)
    send, rtt_ms, seq = _ping(out / "ping.txt", meta["wall_minus_mono_ns"], t0_ns,
                              spec.ping_count)
    prog_ms = fidelity.programmed_rtt_ns(send, up, down) / 1e6
    first = int(send.min())
    per_s = 1.0 / PING_INTERVAL_S
    for k in range(int(np.ceil(spec.ping_count / per_s))):
        in_bin = (seq >= k * per_s + 1) & (seq < (k + 1) * per_s + 1)
        sent = min(per_s, spec.ping_count - k * per_s)
        t_mid = first + int((k + 0.5) * 1e9)
        prog_loss = 1 - (1 - _loss_ratio(up, np.array([t_mid]), spec.link.loss_ratio)[0]) * (
            1 - _loss_ratio(down, np.array([t_mid]), spec.link.loss_ratio)[0])
        report.rtt.append({
            "t_s": (first + k * 1e9) / 1e9,
            "programmed_ms": float(np.median(prog_ms[in_bin])) if in_bin.any() else np.nan,
            "measured_ms": float(np.median(rtt_ms[in_bin])) if in_bin.any() else np.nan,
            "loss": 1 - int(in_bin.sum()) / sent, "programmed_loss": float(prog_loss)})
    udp_err = [abs(r["achieved_mbps"] - r["programmed_mbps"]) / r["programmed_mbps"]
               for r in report.udp]
    rtt_err = np.abs(rtt_ms - prog_ms)
    prog_loss_all = np.mean([r["programmed_loss"] for r in report.rtt])
    report.summary = {
        "throughput_median_abs_error_pct": float(np.median(udp_err) * 100) if udp_err
        else float("nan"),
        "tcp_utilisation": float(sum(r["achieved_mbps"] for r in report.tcp)
                                 / max(1e-9, sum(r["programmed_mbps"] for r in report.tcp))),
        "rtt_median_error_ms": float(np.median(rtt_err)),
        "rtt_p99_error_ms": float(np.percentile(rtt_err, 99)),
        "ping_loss": 1 - len(seq) / spec.ping_count,
        "programmed_loss": float(prog_loss_all),
        "iperf_start_lag_ms": lag / 1e6,
        "udp_offered_mbps": (spec.rate_bps or 0) / 1e6,
    }
    return report
