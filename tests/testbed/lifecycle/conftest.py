"""Fixtures for whole-network tests: a small scenario and a check that a run left nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_binary, require_root


def wait_until(pred: Callable[[], Any], timeout_s: float, what: str, poll_s: float = 0.1) -> Any:
    """`pred()`'s first truthy value, polled every `poll_s`; fails naming `what` after
    `timeout_s` (bounded waits for a live run's files and agents)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"{what} not within {timeout_s} s")


@contextmanager
def running_testbed(path: Path, log: Path, timeout_s: float = 240) -> Iterator[Path]:
    """`testbed up PATH` in the background (its output in `log`) until the run's status.json
    exists; yields the run directory; afterwards stops it with SIGTERM and checks it exited
    cleanly (a real `up`, as a user runs it, for tests that drive `testbed job`)."""
    from testbed.scenario import load_scenario

    scenario = load_scenario(path)
    run_dir = Path(scenario.outputs.dir) / scenario.name
    with log.open("wb") as out:
        up = subprocess.Popen([sys.executable, "-m", "testbed.cli.main", "up", str(path)],
                              stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def live() -> bool:
            if up.poll() is not None:
                raise AssertionError(f"`testbed up` exited with {up.returncode}")
            return (run_dir / "status.json").exists()

        try:
            wait_until(live, timeout_s, "status.json", poll_s=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- up.log ---\n"
                                 + log.read_text(errors="replace")[-3000:]) from None
        yield run_dir
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        up.wait(timeout=120)
    assert up.returncode == 0


SMALL = """\
name: {name}
epoch: 2024-07-16T00:00:00Z
duration_s: {duration}
speed: {speed}
constellation:
  walker: {{planes: 3, per_plane: 9, phasing: 1, altitude_km: 550, inclination_deg: 53}}
ground_stations:
  - {{name: gs, lat_deg: 31.23, lon_deg: 121.47, min_elevation_deg: 5}}
links:
  ground:
    policy: highest-elevation
    downlink: {{rate_mbps: 50, delay: propagation}}
    uplink: {{rate_mbps: 10, delay: propagation}}
  isl: {{max_range_km: 20000, capacity: constant, rate_mbps: 50{isl}}}
timeline: {{step_s: 5}}
nodes: {{agents: {agents}}}
outputs: {{dir: "{out}"}}
"""


def leftovers(prefix: str) -> dict[str, list[str]]:
    """Namespaces, interfaces, OVS bridges and processes whose names carry `prefix`."""
    def out(argv: list[str]) -> str:
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout

    return {
        "netns": [n.split()[0] for n in out(["ip", "netns", "list"]).splitlines()
                  if n.startswith(prefix)],
        "links": [ln.split()[0] for ln in out(["ip", "-br", "link"]).splitlines()
                  if ln.startswith(prefix)],
        "bridges": [b for b in out(["ovs-vsctl", "--timeout=10", "list-br"]).split()
                    if b.startswith(prefix)],
    }


@pytest.fixture
def small_scenario(tmp_path: Path, unique_prefix: str):
    """Write a 27-satellite scenario; returns a function(duration_s, speed) -> path."""
    require_root()
    require_binary("ovs-vsctl", "ip", "ping", "ethtool")

    def make(duration: float = 30, speed: float = 1.0, isl: str = "",
             agents: str = "on-demand") -> Path:
        """`isl`: more keys of links.isl, e.g. ", delay: none, shaper: kernel"; `agents`:
        nodes.agents (on demand by default: tests without a workload start none)."""
        path = tmp_path / "small.yaml"
        path.write_text(SMALL.format(name=f"life-{unique_prefix}", duration=duration,
                                     speed=speed, out=tmp_path / "runs", isl=isl,
                                     agents=agents))
        return path

    return make
