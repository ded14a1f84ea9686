"""Runs experiments/dlrc-testbed.yaml on the testbed and keeps its DLRC summary.

Needs root, Open vSwitch and the cached codec (`make models-codecs`). Writes
`results/testbed/summary.json`: the run's workload summary (per satellite: bpp by part, plain
bpp, kept vectors, sync-round time, measured and emulated encode times, PSNR and MS-SSIM at the
ground; the routes the signature lists took), the scenario's settings and the command.

    sudo python experiments/dlrc/testbed_run.py
    sudo python experiments/dlrc/testbed_run.py --codec elic2022-official --lmbda 0.0483 \
        --out experiments/dlrc/results/testbed-elic
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


def with_codec(scenario: Path, codec: str | None, lmbda: float | None, folder: Path) -> Path:
    """A copy of `scenario` in `folder` whose dlrc workload uses another cached codec (its
    name gets the codec's, so its run directory is its own)."""
    import yaml

    doc = yaml.safe_load(scenario.read_text())
    opts = doc["workload"]["options"]
    if codec:
        opts["codec"] = codec
        doc["name"] = f"{doc['name']}-{codec.split('-')[0]}"
    if lmbda is not None:
        opts["lmbda"] = lmbda
    path = folder / scenario.name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> int:
    from testbed.lifecycle.session import hold, prepare, summarize
    from testbed.workloads.registry import workload_for

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", type=Path, default=REPO / "experiments/dlrc-testbed.yaml")
    p.add_argument("--out", type=Path, default=REPO / "experiments/dlrc/results/testbed")
    p.add_argument("--codec", default=None, help="another cached codec than the scenario's")
    p.add_argument("--lmbda", type=float, default=None, help="and its lambda")
    args = p.parse_args(argv)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:  # the derived scenario lives as long as the run
        scenario = args.scenario
        if args.codec or args.lmbda is not None:
            scenario = with_codec(args.scenario, args.codec, args.lmbda, Path(tmp))
        prep = prepare(scenario)
        held = hold(prep, report=lambda m: print(m, flush=True), workload=workload_for(prep))
        s = summarize(prep, held)
    isl = prep.scenario.links.isl
    out = {"command": "python experiments/dlrc/testbed_run.py "
           + " ".join(argv if argv is not None else sys.argv[1:]),
           "scenario": str(args.scenario.relative_to(REPO)),
           "codec_override": {"codec": args.codec, "lmbda": args.lmbda},
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
