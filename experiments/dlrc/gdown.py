"""End-to-end downlink gain G_down(N_w, tau_w, x) (paper Appendix B), from the measured byte
saving and the modelled sync time.

Our formulation (the appendix's own text is not available here, so this is the form we
evaluate, stated in full): a satellite's share of one observation takes N_w contact windows of
tau_w seconds to downlink without DLRC. With DLRC it sends a fraction (1 - x) of the bytes
(x: the measured saving, headers and maps included) after one signature-sync round T_sync on
the ISLs that holds its downlink back, so

    G_down = N_w * tau_w / ((1 - x) * N_w * tau_w + T_sync)
           = 1 / ((1 - x) + T_sync / (N_w * tau_w))

G_down > 1 whenever x * N_w * tau_w > T_sync; it tends to 1 / (1 - x) for long downlinks.

    python experiments/dlrc/gdown.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def g_down(n_windows: float, tau_s: float, saving: float, t_sync_s: float) -> float:
    """G_down for N_w windows of tau_s seconds, byte saving x, one sync round of t_sync_s.

    >>> round(g_down(1, 300.0, 0.3, 0.3), 4)   # 1 / (0.7 + 0.001)
    1.4265
    """
    if not (n_windows > 0 and tau_s > 0 and 0 <= saving < 1 and t_sync_s >= 0):
        raise ValueError(f"g_down: N_w={n_windows}, tau_w={tau_s}, x={saving}, "
                         f"T_sync={t_sync_s}; expected N_w > 0, tau_w > 0, 0 <= x < 1, "
                         "T_sync >= 0")
    return 1.0 / ((1.0 - saving) + t_sync_s / (n_windows * tau_s))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rd", type=Path,
                   default=REPO / "experiments/dlrc/results/bmshj2018-hyperprior/rd.json")
    p.add_argument("--sync", type=Path, default=REPO / "experiments/dlrc/results/sync/sync.json")
    p.add_argument("--windows", nargs="+", type=float, default=[1, 2, 4, 8])
    p.add_argument("--tau-s", nargs="+", type=float, default=[1, 10, 60, 300])
    p.add_argument("--out", type=Path, default=REPO / "experiments/dlrc/results/gdown.json")
    args = p.parse_args(argv)
    rd = json.loads(args.rd.read_text())
    sync = json.loads(args.sync.read_text())["model"]["sync_s"]
    t_sync = sync["p95"]
    rows = []
    for r in rd["rows"]:
        for nw in args.windows:
            for tau in args.tau_s:
                rows.append({"o_exp": r["o_exp"], "lambda": r["lambda"], "x": r["saving"],
                             "N_w": nw, "tau_w_s": tau, "T_sync_s": t_sync,
                             "G_down": g_down(nw, tau, r["saving"], t_sync)})
    args.out.write_text(json.dumps(
        {"command": "python experiments/dlrc/gdown.py " + " ".join(argv or sys.argv[1:]),
         "inputs": {"rd": str(args.rd.relative_to(REPO)), "sync": str(args.sync.relative_to(REPO)),
                    "T_sync": "p95 of the 12 h model series"},
         "formula": "G_down = 1 / ((1 - x) + T_sync / (N_w * tau_w))", "rows": rows},
        indent=2) + "\n")
    for row in rows:
        if row["N_w"] == 1:
            print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
