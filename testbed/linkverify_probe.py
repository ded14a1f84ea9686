"""What `testbed link verify` runs in the terminal namespace, as the replay's command: iperf3
UDP then TCP downlink (reverse mode: the ground server sends), then a fine-grained ping, each
output saved in OUTDIR with the monotonic instant it was launched (the clock is the host's, so
the verifier can place every measurement on the traces' time axis).

Usage: python -m testbed.linkverify_probe OUTDIR GROUND_ADDR PORT UDP_S TCP_S RATE_BPS
PING_COUNT PING_INTERVAL_S
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

UDP_PAYLOAD_BYTES = 1472
CONNECT_TRIES = 10


def _iperf(argv: list[str], timeout_s: float) -> tuple[int, str, int]:
    """Run an iperf3 client; retry while the ground server is not listening yet (bounded)."""
    for _ in range(CONNECT_TRIES):
        launched = time.monotonic_ns()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s,
                              check=False)
        if proc.returncode == 0 or "refused" not in proc.stdout + proc.stderr:
            break
        time.sleep(0.2)
    return launched, proc.stdout, proc.returncode


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    ground, port = argv[1], argv[2]
    udp_s, tcp_s, rate_bps = int(argv[3]), int(argv[4]), int(argv[5])
    ping_count, ping_interval_s = int(argv[6]), float(argv[7])
    meta: dict[str, object] = {"wall_minus_mono_ns": time.time_ns() - time.monotonic_ns()}
    base = ["iperf3", "-c", ground, "-p", port, "-R", "-J", "-i", "1"]
    launched, text, rc = _iperf([*base, "-u", "-b", str(rate_bps), "-l",
                                 str(UDP_PAYLOAD_BYTES), "-w", "4M", "-t", str(udp_s)],
                                udp_s + 30)
    (out / "udp.json").write_text(text)
    meta.update(udp_launched_ns=launched, udp_rc=rc)
    launched, text, rc = _iperf([*base, "-t", str(tcp_s)], tcp_s + 30)
    (out / "tcp.json").write_text(text)
    meta.update(tcp_launched_ns=launched, tcp_rc=rc)
    meta["ping_launched_ns"] = time.monotonic_ns()
    ping = subprocess.run(["ping", "-D", "-n", "-i", str(ping_interval_s), "-c",
                           str(ping_count), "-W", "2", ground], capture_output=True, text=True,
                          timeout=ping_count * ping_interval_s + 30, check=False)
    (out / "ping.txt").write_text(ping.stdout)
    meta["ping_rc"] = ping.returncode
    (out / "meta.json").write_text(json.dumps(meta))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
