"""DLRC sync-round time over 12 h (paper Fig. 10): the EdgeSpaceCom model on the 550 km Walker
shell of experiments/dlrc-walker.yaml, and the times measured on the testbed.

Each minute: the orbit engine (testbed.orbit through testbed.timeline.sample_geometry) gives
the +Grid ISLs that are up, their lengths and link-budget capacities; the N observers are the N
satellites with the highest elevation over the region's station (those that see it); the
min-delay multi-hop route between every pair (Dijkstra on propagation delay), its hop count and
bottleneck capacity feed nodes.dlrc.sync_model.sync_round (relay 0.5 ms per hop, control
0.03 s per round per satellite). The model is pure computation in nodes/; the orbit work stays
here, in testbed's layer (nodes must not import testbed).

    python experiments/dlrc/sync_time.py --measured experiments/dlrc/results/testbed/summary.json
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from nodes.dlrc.sync_model import CONTROL_S, RELAY_S, sync_round  # noqa: E402

SPEED_OF_LIGHT_KM_S = 299_792.458


def routes(n_sats: int, pairs: np.ndarray, dist_km: np.ndarray, up: np.ndarray,
           cap_bps: np.ndarray, observers: np.ndarray) -> tuple[np.ndarray, ...]:
    """(prop_s, hops, bottleneck_bps), each (N, N), of the min-delay routes between observers."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import dijkstra

    a, b = pairs[up, 0], pairs[up, 1]
    w = dist_km[up] / SPEED_OF_LIGHT_KM_S
    c = cap_bps[up]
    graph = csr_matrix((np.r_[w, w], (np.r_[a, b], np.r_[b, a])), shape=(n_sats, n_sats))
    cap = {}
    for x, y, r in zip(a.tolist(), b.tolist(), c.tolist(), strict=True):
        cap[(x, y)] = cap[(y, x)] = r
    dist, pred = dijkstra(graph, indices=observers, return_predecessors=True)
    n = len(observers)
    prop = np.full((n, n), np.inf)
    hops = np.zeros((n, n), dtype=np.int64)
    rate = np.full((n, n), np.inf)
    for i in range(n):
        for j in range(n):
            dst = int(observers[j])
            if i == j or not np.isfinite(dist[i, dst]):
                continue
            prop[i, j] = dist[i, dst]
            k, node, bottleneck = 0, dst, np.inf
            while node != observers[i]:
                prev = int(pred[i, node])
                bottleneck = min(bottleneck, cap[(prev, node)])
                node, k = prev, k + 1
            hops[i, j], rate[i, j] = k, bottleneck
    return prop, hops, rate


def series(scenario_path: Path, hours: float, step_s: float, n_obs: int,
           list_bytes: int) -> list[dict]:
    from testbed.constellation import resolve_constellation
    from testbed.orbit import IslLinkBudget
    from testbed.scenario import load_scenario
    from testbed.timeline.build import sample_geometry

    sc = load_scenario(scenario_path)
    sc = sc.model_copy(update={"duration_s": hours * 3600.0,
                               "timeline": sc.timeline.model_copy(update={"step_s": step_s})})
    sats = resolve_constellation(sc).satellites
    geo = sample_geometry(sc, sats)
    budget = IslLinkBudget(**sc.links.isl.link_budget.model_dump())
    with np.errstate(invalid="ignore"):
        cap = budget.capacity_bps(np.where(geo.isl_distance_km > 0, geo.isl_distance_km, np.nan))
    station = sc.ground_stations[0].name
    elev = geo.elevation_deg[station]
    rows = []
    for t in range(len(geo.t_ns)):
        obs = np.argsort(-elev[:, t], kind="stable")[:n_obs]
        prop, hops, rate = routes(len(sats), geo.pairs, geo.isl_distance_km[:, t],
                                  geo.isl_up[:, t], cap[:, t], obs)
        r = sync_round(prop, hops, np.full(n_obs, list_bytes), rate)
        finite = np.isfinite(prop) & ~np.eye(n_obs, dtype=bool)
        rows.append({"t_min": geo.t_ns[t] / 60e9, "sync_s": r.total_s, "network_s": r.network_s,
                     "control_s": r.control_s, "max_hops": int(hops[finite].max())
                     if finite.any() else 0,
                     "max_prop_ms": float(prop[finite].max() * 1e3) if finite.any() else None,
                     "reachable_pairs": int(finite.sum())})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", type=Path, default=REPO / "experiments/dlrc-walker.yaml")
    p.add_argument("--hours", type=float, default=12.0)
    p.add_argument("--step-s", type=float, default=60.0)
    p.add_argument("--observers", type=int, default=8)
    p.add_argument("--list-bytes", type=int, default=30 + 8 * 256 + 4,
                   help="one signature list: header + 256 signatures (a 256 px patch) + CRC")
    p.add_argument("--measured", type=Path, default=None,
                   help="a testbed run's dlrc summary (experiments/dlrc/testbed_run.py)")
    p.add_argument("--out", type=Path, default=REPO / "experiments/dlrc/results/sync")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = series(args.scenario, args.hours, args.step_s, args.observers, args.list_bytes)
    with open(args.out / "sync_model.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    finite = np.array([r["sync_s"] for r in rows if np.isfinite(r["sync_s"])])
    net = np.array([r["network_s"] for r in rows if np.isfinite(r["network_s"])])
    stats = {"command": "python experiments/dlrc/sync_time.py "
             + " ".join(argv if argv is not None else sys.argv[1:]),
             "model": {"steps": len(rows), "unreachable_steps": len(rows) - len(finite),
                       "sync_s": _pct(finite), "network_s": _pct(net),
                       "max_hops": max(r["max_hops"] for r in rows),
                       "relay_s": RELAY_S, "control_s_per_satellite": CONTROL_S,
                       "observers": args.observers, "list_bytes": args.list_bytes,
                       "scenario": str(args.scenario.relative_to(REPO)),
                       "hours": args.hours, "step_s": args.step_s}}
    if args.measured is not None:
        stats["measured"] = measured(args.measured.resolve(), args.list_bytes)
    (args.out / "sync.json").write_text(json.dumps(stats, indent=2) + "\n")
    plot(rows, stats.get("measured"), args.out / "sync.png")
    print(json.dumps(stats, indent=2))
    return 0


def _pct(x: np.ndarray) -> dict | None:
    if not len(x):
        return None
    return {"min": float(x.min()), "p50": float(np.median(x)), "mean": float(x.mean()),
            "p95": float(np.percentile(x, 95)), "max": float(x.max())}


def measured(summary_path: Path, list_bytes: int) -> dict:
    """The testbed run's sync figures and the model on that run's own routes."""
    w = json.loads(summary_path.read_text())
    w = w.get("workload", w)
    routes_ = {k: v for k, v in w["sync"]["routes_at_start"].items() if v}
    sats = w["plan"]["observers"]
    idx = {s: i for i, s in enumerate(sats)}
    n = len(sats)
    prop = np.full((n, n), np.inf)
    hops = np.zeros((n, n), dtype=np.int64)
    for key, r in routes_.items():
        a, b = key.split("->")
        prop[idx[a], idx[b]] = r["delay_us"] / 1e6
        hops[idx[a], idx[b]] = r["hops"]
    rate = float(w.get("isl_rate_bps") or 50e6)
    model = sync_round(prop, hops, np.full(n, list_bytes), rate)
    rounds = [v["sync_round_s"] for v in w["per_satellite"].values() if v["sync_round_s"]]
    return {"run": str(summary_path.relative_to(REPO)) if summary_path.is_relative_to(REPO)
            else summary_path.name,
            "observers": n, "list_one_way_s_max": w["sync"]["list_one_way_s_max"],
            "list_one_way_s": w["sync"].get("list_one_way_s"),
            "sync_round_s_per_satellite": rounds,
            "model_on_run_routes": {"network_s": model.network_s, "total_s": model.total_s,
                                    "isl_rate_bps": rate}}


def plot(rows: list[dict], meas: dict | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.6))
    t = [r["t_min"] / 60 for r in rows]
    ax.plot(t, [r["sync_s"] * 1e3 for r in rows], lw=1, label="model: T_sync")
    ax.plot(t, [r["network_s"] * 1e3 for r in rows], lw=1, label="model: slowest list (network)")
    if meas:
        ax.axhline(meas["list_one_way_s_max"] * 1e3, color="C3", ls="--",
                   label=f"testbed: slowest list, {meas['observers']} observers")
    ax.set_xlabel("time (h)")
    ax.set_ylabel("ms")
    ax.set_title("DLRC signature sync round, 550 km Walker shell, 8 observers")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
