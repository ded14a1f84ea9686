"""`testbed up` of a scenario with `backend: libvirt`: two satellite VMs (TCG here, KVM in the
lab) and a ground-station namespace, joined by the shaped fabric; agents inside the VMs run a
job whose messages cross the ISL between them; teardown leaves no domain, tap or process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from testbed.cli.main import main
from testbed.lifecycle.control import request
from testbed.lifecycle.network import run_prefix
from testbed.lifecycle.session import hold, prepare
from tests.conftest import require_binary, require_root

from .test_libvirt import built_image, cache_dir

pytestmark = [pytest.mark.root, pytest.mark.ovs, pytest.mark.vm, pytest.mark.slow]

SCENARIO = """\
name: {name}
epoch: 2024-07-16T00:00:00Z
duration_s: 600
constellation:
  # two neighbours of a 10-satellite plane (36 degrees apart: in line of sight, 14.3 ms)
  walker: {{planes: 1, per_plane: 10, phasing: 0, altitude_km: 550, inclination_deg: 53}}
  select: {{count: 2}}
ground_stations:
  - {{name: gs, lat_deg: 31.23, lon_deg: 121.47, min_elevation_deg: 5}}
links:
  ground: {{downlink: {{rate_mbps: 50}}, uplink: {{rate_mbps: 10}}}}
  isl: {{max_range_km: 40000, capacity: constant, rate_mbps: 50}}
timeline: {{step_s: 10}}
nodes: {{agents: on-demand}}
backend: {{kind: libvirt}}
outputs: {{dir: "{out}"}}
"""


class _Handle:
    def __init__(self) -> None:
        self.net: Any = None

    def start(self, net: Any, pool: Any = None) -> None:
        self.net = net

    def stop(self) -> dict[str, Any]:
        return {}


def _probe(run_dir: Path, handle: _Handle, checks: dict[str, Any]) -> None:
    """Beside hold(): a job pair across the VMs' ISL, then end the run (SIGTERM = Ctrl-C)."""
    try:
        deadline = time.monotonic() + 600
        while not (run_dir / "status.json").exists():
            if time.monotonic() > deadline:
                raise AssertionError("the run did not start within 600 s")
            time.sleep(0.5)
        live = request(run_dir / "control.sock", {"op": "status"})
        isl = next(v for k, v in live["links"].items() if v["kind"] == "isl")
        checks["isl_delay_s"] = isl["delay_us"] / 1e6
        checks["kinds"] = {role: b.kind for role, b in handle.net.backends.items()}
        checks["echo"] = main(["job", str(run_dir), "walker-p0-s1", "message-exchange",
                               "--set", "mode=echo", "--set", "count=3", "--no-wait"])
        out = run_dir.parent / "fetched"
        checks["send"] = main(["job", str(run_dir), "walker-p0-s0", "message-exchange",
                               "--set", "mode=send", "--set", "peer=walker-p0-s1",
                               "--set", "count=3", "--set", "timeout_s=30",
                               "--timeout-s", "300", "--fetch", str(out)])
        checks["rows"] = (out / "messages.csv").read_text().splitlines()[1:]
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        checks["error"] = exc
    finally:
        os.kill(os.getpid(), signal.SIGTERM)  # ends hold() through its Ctrl-C path


@pytest.mark.timeout(1500)
def test_up_with_libvirt_satellites_runs_jobs_across_the_shaped_isl(
        tmp_path: Path, unique_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    require_root()
    require_binary("ovs-vsctl", "ip", "ethtool")
    built_image()  # skips naming what is missing; builds and caches the guest image once
    monkeypatch.setenv("TESTBED_CACHE", str(cache_dir()))
    path = tmp_path / "vm.yaml"
    path.write_text(SCENARIO.format(name=f"vm-{unique_prefix}", out=tmp_path / "runs"))
    prep = prepare(path)
    checks: dict[str, Any] = {}
    handle = _Handle()
    prober = threading.Thread(target=_probe, args=(prep.run_dir.path, handle, checks))
    prober.start()
    held = hold(prep, report=lambda m: None, workload=handle)
    prober.join(timeout=60)
    assert "error" not in checks, checks.get("error")
    assert checks["kinds"] == {"satellite": "libvirt", "ground": "netns"}
    assert checks["echo"] == 0 and checks["send"] == 0
    rtts = [float(r.split(",")[-1]) for r in checks["rows"]]
    assert len(rtts) == 3
    assert min(rtts) >= 2 * checks["isl_delay_s"], (rtts, checks["isl_delay_s"])
    assert held.teardown is not None and held.teardown.ok, held.teardown.summary()
    prefix = run_prefix(prep.scenario.name)
    domains = subprocess.run(["pgrep", "-f", f"guest={prefix}-vm"], capture_output=True,
                             text=True, check=False).stdout.split()
    assert domains == [], f"qemu of {prefix} still running: {domains}"
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True,
                           check=True).stdout
    assert not [ln for ln in links.splitlines() if ln.startswith(prefix)]
    ledger = [json.loads(x) for x in prep.run_dir.ledger.read_text().splitlines()]
    assert {"libvirt-domain", "link", "ovs-port"} <= {e["kind"] for e in ledger}
