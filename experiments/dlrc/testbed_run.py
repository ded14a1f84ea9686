"""Runs experiments/dlrc-testbed.yaml on the testbed and keeps its DLRC summary.

Needs root, Open vSwitch and the cached codec (`make models-codecs`). Writes
`results/testbed/summary.json`: the run's workload summary (per satellite: bpp by part, plain
bpp, kept vectors, sync-round time, measured and emulated encode times, PSNR and MS-SSIM at the
ground; the routes the signature lists took), the scenario's settings and the command.

    sudo python experiments/dlrc/testbed_run.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def portable(obj: object) -> object:
    """The same document with this machine's data folder written `${TESTBED_DATA}` and the
    checkout's folder `.`, so the committed file names no host path."""
    from testbed.paths import data_dir

    if isinstance(obj, dict):
        return {k: portable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [portable(v) for v in obj]
    if isinstance(obj, str):
        return obj.replace(str(data_dir()), "${TESTBED_DATA}").replace(str(REPO), ".")
    return obj


def main(argv: list[str] | None = None) -> int:
    from testbed.lifecycle.session import hold, prepare, summarize
    from testbed.workloads.registry import workload_for

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", type=Path, default=REPO / "experiments/dlrc-testbed.yaml")
    p.add_argument("--out", type=Path, default=REPO / "experiments/dlrc/results/testbed")
    args = p.parse_args(argv)
    prep = prepare(args.scenario)
    held = hold(prep, report=lambda m: print(m, flush=True), workload=workload_for(prep))
    s = summarize(prep, held)
    isl = prep.scenario.links.isl
    out = {"command": "python experiments/dlrc/testbed_run.py "
           + " ".join(argv if argv is not None else sys.argv[1:]),
           "scenario": str(args.scenario.relative_to(REPO)),
           "speed": s["speed"], "speed_caveat": s["speed_caveat"],
           "isl_capacity": isl.capacity, "interrupted": s["interrupted"],
           "lateness_ms": s["lateness_ms"], "workload": s["workload"]}
    args.out.mkdir(parents=True, exist_ok=True)
    doc = portable(json.loads(json.dumps(out, default=str)))
    (args.out / "summary.json").write_text(json.dumps(doc, indent=2) + "\n")
    w = s["workload"]
    print(json.dumps({"bpp_mean": w.get("bpp_mean"), "ground": w.get("ground_summary"),
                      "sync": {k: v for k, v in w.get("sync", {}).items()
                               if not k.startswith("routes")}}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
