"""`testbed replay`: the command runs behind the shaped link, and nothing it made outlives it
(namespaces, interfaces, the forwarder, the command's processes), also when the command fails
and when the replay is interrupted by SIGINT or SIGTERM."""

from __future__ import annotations

import json
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from testbed.cli.main import main
from testbed.replay import ReplaySpec, build_programs, run_replay
from tests.conftest import require_binary, require_root

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def traces(tmp_path: Path) -> dict[str, Path]:
    """A constant 12 Mbit/s mahimahi trace (one opportunity per ms, 2 s) and a delay file
    of 20 ms for 1 s then 5 ms for 1 s (10 ms bins)."""
    bw = tmp_path / "const.mahimahi"
    bw.write_text("".join(f"{ms}\n" for ms in range(1, 2001)))
    delay = tmp_path / "steps-delay.txt"
    delay.write_text("20\n" * 100 + "5\n" * 100)
    return {"bw": bw, "delay": delay}


def _workers() -> set[int]:
    found = set()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "netem.shapers.userspace_worker" in cmdline:
            found.add(proc.info["pid"])
    return found


def _with_cmdline(marker: str) -> list[int]:
    return [p.info["pid"] for p in psutil.process_iter(["pid", "cmdline"])
            if marker in " ".join(p.info["cmdline"] or [])]


def _assert_nothing_left(prefix: str, workers_before: set[int], marker: str | None = None):
    assert not [p for p in Path("/var/run/netns").glob(f"{prefix}-*")]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True,
                           check=True).stdout
    assert prefix not in links
    deadline = time.monotonic() + 3
    while _workers() - workers_before and time.monotonic() < deadline:
        time.sleep(0.05)  # a worker being reaped
    assert not _workers() - workers_before
    if marker is not None:
        assert not _with_cmdline(marker)


def test_bad_inputs_are_refused_before_anything_is_made(tmp_path: Path, traces):
    missing = tmp_path / "nope.mahimahi"
    assert main(["replay", "--down", str(missing), "--", "true"]) == 2
    with pytest.raises(Exception, match="no delay"):
        build_programs(ReplaySpec(down=traces["bw"], delay=traces["bw"]))
    with pytest.raises(Exception, match="expected a ratio"):
        ReplaySpec(down=traces["bw"], loss_ratio=1.5)


def test_programs_follow_the_traces(traces):
    programs = build_programs(ReplaySpec(down=traces["bw"], delay=traces["delay"]))
    down, up = programs["down"], programs["up"]
    assert down is not None and down.capacity_bps == pytest.approx(12e6)
    assert up is not None and up.opportunities_ns is None  # no --up: unshaped uplink ...
    assert up.delay_us is not None and up.delay_us.at(0) == 20_000  # ... but delayed
    assert down.delay_us is not None and down.delay_us.at(1_500_000_000) == 5_000


def test_replay_runs_command_behind_the_link(tmp_path: Path, traces, unique_prefix: str):
    require_root()
    require_binary("ping", "ethtool", "ip")
    before = _workers()
    out = tmp_path / "ping.txt"
    spec = ReplaySpec(down=traces["bw"], delay=traces["delay"], prefix=unique_prefix,
                      run_dir=tmp_path / "run")
    # 20 ms one way for the first second, then 5 ms: RTT 40 ms, then 10 ms
    script = f"ping -n -c 36 -i 0.05 $REPLAY_GROUND_ADDR > {out}"
    result = run_replay(spec, ["sh", "-c", script])
    assert result.returncode == 0
    rtts = [float(x) for x in re.findall(r"time=([0-9.]+) ms", out.read_text())]
    assert len(rtts) == 36
    # The downlink waits for its next delivery opportunity (one per ms): up to 1 ms on top of
    # the delay, a constant phase for the whole run since 50 ms is a multiple of 1 ms.
    opportunity_gap_ms, slack_ms = 1.0, 0.5
    for rtt, programmed in ((statistics.median(rtts[2:14]), 40.0),
                            (statistics.median(rtts[-10:]), 10.0)):
        assert programmed - 0.1 <= rtt <= programmed + opportunity_gap_ms + slack_ms, rtts
    assert result.counters["up"]["forwarded_packets"] >= 36
    assert result.counters["down"]["opportunities_used"] >= 36
    assert {e["direction"] for e in result.events if e["kind"] == "follow"} == {"down", "up"}
    _assert_nothing_left(unique_prefix, before)


def test_failing_command_and_its_children_are_cleaned_up(tmp_path: Path, traces,
                                                         unique_prefix: str):
    require_root()
    require_binary("ethtool", "ip")
    before = _workers()
    marker = "31.4159"
    spec = ReplaySpec(down=traces["bw"], prefix=unique_prefix, run_dir=tmp_path / "run")
    result = run_replay(spec, ["sh", "-c", f"sleep {marker} & exit 3"])
    assert result.returncode == 3
    _assert_nothing_left(unique_prefix, before, marker)


def test_cli_returns_the_command_status(tmp_path: Path, traces, unique_prefix: str):
    require_root()
    require_binary("ethtool", "ip")
    before = _workers()
    rc = main(["replay", "--prefix", unique_prefix, "--down", str(traces["bw"]),
               "--run-dir", str(tmp_path / "run"), "--",
               "sh", "-c", "exit 3"])
    _assert_nothing_left(unique_prefix, before)
    assert rc == 3


_LIBRARY_REPLAY = """
import sys
from pathlib import Path
from testbed.replay import ReplaySpec, run_replay
spec = ReplaySpec(down=Path(sys.argv[1]), prefix=sys.argv[2], run_dir=Path(sys.argv[5]))
result = run_replay(spec, sys.argv[6:], ground_command=["sleep", sys.argv[3]],
                    announce=lambda t: print("link up", file=sys.stderr, flush=True))
print(f"stopped by signal {result.interrupted_by}", file=sys.stderr)
sys.exit(result.returncode)
"""


@pytest.mark.parametrize("via", ["library", "cli"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_replay_and_cleans_up(tmp_path: Path, traces, unique_prefix: str,
                                           sig: int, via: str):
    require_root()
    require_binary("ethtool", "ip")
    before = _workers()
    marker = f"27.{sig}183"
    if via == "cli":
        argv = [sys.executable, "-m", "testbed.cli.main", "replay", "--prefix", unique_prefix,
                "--down", str(traces["bw"]), "--ground", f"sleep {marker}",
                "--run-dir", str(tmp_path / "run"), "--", "sleep", marker]
    else:
        argv = [sys.executable, "-c", _LIBRARY_REPLAY, str(traces["bw"]), unique_prefix,
                marker, "-", str(tmp_path / "run"), "sleep", marker]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "link up" in line, line
        deadline = time.monotonic() + 10
        while len(_with_cmdline(f"sleep {marker}")) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_with_cmdline(f"sleep {marker}")) == 2  # the command and the ground one
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert f"stopped by signal {int(sig)}" in err
    assert proc.returncode == 128 + sig, err
    _assert_nothing_left(unique_prefix, before, marker)


def _ns_files(prefix: str) -> list[Path]:
    return [*Path("/var/run/netns").glob(f"{prefix}-*"), *Path("/etc/netns").glob(f"{prefix}-*")]


def test_readme_ping_ground_resolves_and_leaves_nothing(tmp_path: Path, shared_data: Path,
                                                         unique_prefix: str):
    """The README's command, as typed (plus a prefix and a run directory of the test's)."""
    require_root()
    require_binary("ping", "ethtool", "ip")
    trace = shared_data / "traces" / "starlink" / "leocc-downlink-bw.mahimahi.gz"
    if not trace.is_file():
        pytest.skip(f"{trace} not found (real Starlink traces)")
    before = _workers()
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "testbed.cli.main", "replay", "--down", str(trace),
         "--prefix", unique_prefix, "--run-dir", str(run), "--", "ping", "-c", "5", "ground"],
        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PING ground (100.64.0.1)" in done.stdout
    assert "5 packets transmitted, 5 received" in done.stdout
    _assert_nothing_left(unique_prefix, before)
    assert not _ns_files(unique_prefix)  # the hosts files went with the namespaces


def test_terminal_resolves_from_the_ground_side(tmp_path: Path, traces, unique_prefix: str):
    require_root()
    require_binary("getent", "ethtool", "ip")
    out = tmp_path / "getent.txt"
    result = run_replay(ReplaySpec(down=traces["bw"], prefix=unique_prefix,
                                   run_dir=tmp_path / "run"),
                        ["sh", "-c", f"getent hosts terminal ground > {out}"])
    assert result.returncode == 0
    assert out.read_text().split() == ["100.64.0.2", "terminal", "100.64.0.1", "ground"]


def _sleeps(marker: str) -> list[int]:
    """The `sleep MARKER` processes themselves (not the replay whose arguments name them)."""
    return [p.info["pid"] for p in psutil.process_iter(["pid", "cmdline"])
            if p.info["cmdline"] == ["sleep", marker]]


def test_down_after_sigkill_of_replay_leaves_nothing(tmp_path: Path, traces,
                                                     unique_prefix: str):
    require_root()
    require_binary("ethtool", "ip")
    marker = "29.7183"
    run = tmp_path / "run"
    err_path = tmp_path / "stderr.txt"
    with err_path.open("w") as err:  # a file, not a pipe: the survivors keep it open
        proc = subprocess.Popen(
            [sys.executable, "-m", "testbed.cli.main", "replay", "--prefix", unique_prefix,
             "--down", str(traces["bw"]), "--ground", f"sleep {marker}", "--run-dir",
             str(run), "--", "sleep", marker], cwd=REPO, stdout=subprocess.DEVNULL,
            stderr=err)
    try:
        deadline = time.monotonic() + 60  # a loaded CI machine starts the forwarder slowly
        while len(_sleeps(marker)) < 2 and time.monotonic() < deadline \
                and proc.poll() is None:
            time.sleep(0.1)
        assert len(_sleeps(marker)) == 2, (proc.poll(), err_path.read_text())
        assert f"testbed down {run}" in err_path.read_text()
        proc.kill()  # SIGKILL: no teardown runs
        proc.wait(timeout=10)
        assert _ns_files(unique_prefix) and _sleeps(marker), "SIGKILL left these"
        recorded = [json.loads(line) for line in (run / "ledger.jsonl").read_text().splitlines()]
        pids = [e["details"]["pid"] for e in recorded if e["kind"] == "process"]
        assert len(pids) == 3  # the forwarder, the ground command, the command
        assert main(["down", str(run)]) == 0
        assert not [pid for pid in pids if psutil.pid_exists(pid)
                    and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
        # (not the global worker count: other test sessions may run forwarders meanwhile)
        _assert_nothing_left(unique_prefix, _workers(), marker)
        assert not _ns_files(unique_prefix)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        main(["down", str(run)])  # idempotent: removes everything even if a check failed
