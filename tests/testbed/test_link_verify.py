"""`testbed link verify` through main(): a 12 Mbit/s mahimahi trace with a delay trace that
steps 20 ms -> 5 ms; the summary errors stay within loose bounds and nothing is left."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from testbed.cli.main import main
from tests.conftest import require_binary, require_root

pytestmark = [pytest.mark.root]


def test_link_verify_summary_within_bounds(tmp_path: Path, unique_prefix: str):
    require_root()
    require_binary("iperf3", "ping", "ip", "ethtool")
    bw = tmp_path / "const.mahimahi"
    bw.write_text("".join(f"{ms}\n" for ms in range(1, 3001)))  # 12 Mbit/s, 3 s
    delay = tmp_path / "steps-delay.txt"
    delay.write_text("20\n" * 150 + "5\n" * 150)  # 10 ms bins: 20 ms 1.5 s, 5 ms 1.5 s
    out = tmp_path / "verify.json"
    plot = tmp_path / "verify.png"
    try:
        rc = main(["link", "verify", "--down", str(bw), "--delay", str(delay),
                   "--duration-s", "3", "--prefix", unique_prefix, "--json", str(out),
                   "--plot", str(plot), "--run-dir", str(tmp_path / "run")])
        assert rc == 0
        report = json.loads(out.read_text())
        s = report["summary"]
        assert s["throughput_median_abs_error_pct"] < 15
        assert s["rtt_median_error_ms"] < 3
        assert s["ping_loss"] <= 0.02
        assert len(report["udp"]) >= 2 and len(report["rtt"]) >= 1
        # the programmed RTT lies between the two delay levels (2 x 5 ms and 2 x 20 ms)
        programmed = [r["programmed_ms"] for r in report["rtt"]]
        assert all(9 < p < 42 for p in programmed)
        assert plot.stat().st_size > 1000
        # what it created is in its run directory's ledger, and all of it was removed
        ledger = [json.loads(x) for x in (tmp_path / "run" / "ledger.jsonl").read_text()
                  .splitlines()]
        kinds = {e["kind"] for e in ledger}
        assert {"netns", "process", "file"} <= kinds
        assert main(["down", str(tmp_path / "run")]) == 0  # nothing left to remove
        assert (tmp_path / "run" / "results" / "probes" / "udp.json").is_file()
    finally:
        assert not list(Path("/var/run/netns").glob(f"{unique_prefix}-*"))
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True,
                               check=True).stdout
        assert unique_prefix not in links
