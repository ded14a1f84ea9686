"""dlrc, orchestrator side: N observer satellites see overlapping patches of one scene window,
exchange LSH signature lists over the emulated ISLs, and downlink only what nobody with a
higher priority sends; the ground station rebuilds every patch.

Chooses the observers (the satellites with the most ground-contact time in the run, or the
`satellites` option), the window (W = P * sqrt(N / o_exp), a multiple of 16) and each patch's
16-px-aligned offset (seeded), submits the node jobs (nodes/workloads/dlrc_job.py), records the
routes the signature lists took (from the run's route table: hops, delay, the nodes crossed)
and summarises: bpp with and without DLRC, PSNR and MS-SSIM, sync-round times, encoder overhead.

| option | default | meaning |
|---|---|---|
| `scene` | required | the image every observer sees a part of |
| `models` | `<repo>/.cache/models/codecs` | the codec cache (`make models-codecs`) |
| `codec`, `lmbda` | `bmshj2018-hyperprior`, 0.0483 | which cached codec |
| `observers` | 8 | N, when `satellites` is not given |
| `satellites` | none | the observers by name (their order is their satellite id) |
| `o_exp` | 2.0 | expected overlap N P^2 / W^2 (decides W) |
| `window_origin_px` | [0, 0] | top-left of the window in the scene |
| `patch_px`, `seed` | 256, 0 | P; the seed of the patch offsets |
| `rounds`, `representative`, `priority` | 20, original, satellite-id | DLRC settings |
| `margin_px` | 0 | scene around each patch the analysis sees (its codec's cache in `models`) |
| `downlink` | `contact` | `contact` (own contact windows only) or `route` |
| `accelerator` | none | also emulate the transforms on this board (nodes.compute) |
| `ground` | the first station | the station that reconstructs |
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from nodes import client
from testbed.errors import InputError
from testbed.lifecycle.session import contact_seconds
from testbed.paths import REPO_ROOT
from testbed.workloads.base import OrchestratorWorkload
from testbed.workloads.pool import map_nodes

STRIDE_PX = 16
_KNOWN = {"scene", "models", "codec", "lmbda", "observers", "satellites", "o_exp",
          "window_origin_px", "patch_px", "seed", "rounds", "representative", "priority",
          "downlink", "accelerator", "ground", "margin_px"}


def window_px(n: int, patch_px: int, o_exp: float) -> int:
    """W for N patches of P at expected overlap o_exp = N P^2 / W^2, down to a multiple of 16
    (never below P)."""
    w = patch_px * math.sqrt(n / o_exp)
    return max(patch_px, int(w // STRIDE_PX) * STRIDE_PX)


def patch_offsets(n: int, window: int, patch_px: int, seed: int) -> list[list[int]]:
    """N [top, left] offsets, 16-px aligned, uniform in the window (seeded)."""
    rng = np.random.default_rng(seed)
    steps = (window - patch_px) // STRIDE_PX + 1
    return [[STRIDE_PX * int(rng.integers(steps)), STRIDE_PX * int(rng.integers(steps))]
            for _ in range(n)]


def route_path(routes: list[dict[str, Any]], src: str, dst_ip: str) -> dict[str, Any] | None:
    """The nodes a packet from `src` to `dst_ip` crosses (source first, as far as the table's
    switches go), with the route's hops and delay; None when `src` has no route to it."""
    by_key = {(r["node"], r["ipv4_dst"]): r for r in routes}
    node_of = {r["dpid"]: r["node"] for r in routes if "dpid" in r}
    first = by_key.get((src, dst_ip))
    if first is None:
        return None
    path, entry = [src], first
    while entry is not None and entry.get("next_dpid") is not None and len(path) < 64:
        nxt = node_of.get(entry["next_dpid"])
        if nxt is None:
            break
        path.append(nxt)
        entry = by_key.get((nxt, dst_ip))
    return {"hops": first["hops"], "delay_us": first["delay_us"], "path": path}


def isl_hops(timeline: Any, anchor: str) -> dict[str, int]:
    """Hop count from `anchor` to every satellite it reaches over the ISLs up at time 0."""
    adj: dict[str, set[str]] = {}
    for e in timeline.events:
        if e.t_ns > 0:
            break
        if e.link_kind == "isl" and e.kind == "up":
            adj.setdefault(e.a, set()).add(e.b)
            adj.setdefault(e.b, set()).add(e.a)
    hops, frontier = {anchor: 0}, [anchor]
    while frontier:
        nxt = []
        for a in frontier:
            for b in sorted(adj.get(a, ())):
                if b not in hops:
                    hops[b] = hops[a] + 1
                    nxt.append(b)
        frontier = nxt
    return hops


class Dlrc(OrchestratorWorkload):
    """Observers exchange signatures over ISLs and downlink; the ground reconstructs."""

    kind = "dlrc"

    def __init__(self, prep: Any) -> None:
        super().__init__(prep)
        self.jobs: dict[str, str] = {}
        self.plan: dict[str, Any] = {}
        self.routes_at_start: dict[str, Any] = {}
        self._stop_watch = threading.Event()
        self._watcher: threading.Thread | None = None
        self._check()

    # options ----------------------------------------------------------------------------------
    def _opt(self, name: str, default: Any) -> Any:
        value = self.options.get(name)
        return default if value is None else value

    def _check(self) -> None:
        opts = self.options
        unknown = sorted(set(opts) - _KNOWN)
        if unknown:
            raise InputError(f"workload dlrc: unknown option(s) {', '.join(unknown)}; valid: "
                             + ", ".join(sorted(_KNOWN)), field="workload.options")
        if "scene" not in opts:
            raise InputError("workload dlrc needs options.scene (an image, e.g. "
                             "${TESTBED_DATA}/images/rsvqa-hr/3.png)",
                             field="workload.options.scene")
        scene = Path(str(opts["scene"]))
        if not scene.is_file():
            raise InputError(f"workload dlrc: options.scene={str(scene)!r} is not a file",
                             field="workload.options.scene")
        o_exp = self._opt("o_exp", 2.0)
        if not isinstance(o_exp, (int, float)) or not o_exp > 0:
            raise InputError(f"workload dlrc: options.o_exp={o_exp!r}, expected a number > 0",
                             field="workload.options.o_exp")
        sats = {s.name for s in self.prep.timeline.nodes if s.kind == "satellite"}
        wanted = opts.get("satellites")
        if wanted is not None:
            bad = [s for s in wanted if s not in sats]
            if bad or len(wanted) < 2:
                raise InputError(f"workload dlrc: options.satellites={wanted!r}: expected 2 "
                                 f"or more satellites of the scenario (unknown: {bad})",
                                 field="workload.options.satellites")
        n = len(wanted) if wanted is not None else int(self._opt("observers", 8))
        if not 2 <= n <= len(sats):
            raise InputError(f"workload dlrc: options.observers={n}, expected 2..{len(sats)}",
                             field="workload.options.observers")
        stations = [g.name for g in self.prep.scenario.ground_stations]
        ground = self._opt("ground", stations[0] if stations else None)
        if ground not in stations:
            raise InputError(f"workload dlrc: options.ground={ground!r}; choose: "
                             + ", ".join(stations), field="workload.options.ground")

    def observers(self) -> list[str]:
        """The observer satellites: `satellites`, else N satellites that can reach each
        other over the ISLs up at the start: the one with the most ground-contact time in the
        run, then the others of its ISL component by contact time (they pass over the
        station's region), then by hop distance, then by name."""
        wanted = self.options.get("satellites")
        if wanted is not None:
            return list(wanted)
        n = int(self._opt("observers", 8))
        contact = contact_seconds(self.prep.timeline, int(self.prep.scenario.duration_s * 1e9))
        anchor = min(contact, key=lambda s: (-contact[s], s))
        hops = isl_hops(self.prep.timeline, anchor)
        if len(hops) < n:
            raise InputError(f"workload dlrc: options.observers={n}, but only {len(hops)} "
                             f"satellites reach {anchor} over the ISLs up at the start",
                             field="workload.options.observers")
        return sorted(hops, key=lambda s: (-contact.get(s, 0.0), hops[s], s))[:n]

    def node_options(self) -> dict[str, Any]:
        """The one option set every node's job gets (dlrc_settings.py)."""
        sats = self.observers()
        p = int(self._opt("patch_px", 256))
        o_exp = float(self._opt("o_exp", 2.0))
        w = window_px(len(sats), p, o_exp)
        top, left = self._opt("window_origin_px", [0, 0])
        stations = [g.name for g in self.prep.scenario.ground_stations]
        models = Path(str(self._opt("models", REPO_ROOT / ".cache/models/codecs")))
        opts = {"models": str(models.resolve()), "codec": self._opt("codec",
                                                                    "bmshj2018-hyperprior"),
                "lmbda": float(self._opt("lmbda", 0.0483)), "satellites": sats,
                "ground": self._opt("ground", stations[0]),
                "scene": str(Path(str(self.options["scene"])).resolve()),
                "window_px": [int(top), int(left), w],
                "offsets_px": patch_offsets(len(sats), w, p, int(self._opt("seed", 0))),
                "patch_px": p, "rounds": int(self._opt("rounds", 20)),
                "representative": self._opt("representative", "original"),
                "priority": self._opt("priority", "satellite-id"),
                "margin_px": int(self._opt("margin_px", 0))}
        self.plan = {"observers": sats, "window_px": w, "o_exp_requested": o_exp,
                     "o_exp": len(sats) * p * p / (w * w), "offsets_px": opts["offsets_px"],
                     "scene": opts["scene"], "window_origin_px": [int(top), int(left)]}
        return opts

    # lifecycle --------------------------------------------------------------------------------
    def _start(self) -> None:
        assert self.pool is not None
        common = self.node_options()
        sats, gs = common["satellites"], common["ground"]
        contact = contact_seconds(self.prep.timeline, int(self.prep.scenario.duration_s * 1e9))
        self.pool.ensure([*sats, gs])
        self._watcher = threading.Thread(target=self._watch_routes, args=(sats,),
                                         name="dlrc-routes", daemon=True)
        self._watcher.start()
        reply = self.pool.submit(gs, self.kind, common)
        self.jobs[gs] = str(reply["id"])
        extra = {"downlink": self._opt("downlink", "contact")}
        if self.options.get("accelerator"):
            extra["accelerator"] = self.options["accelerator"]

        def submit(name: str) -> None:
            assert self.pool is not None
            r = self.pool.submit(name, self.kind, {**common, **extra,
                                                   "link_quality": contact.get(name, 0.0)})
            self.jobs[name] = str(r["id"])
        map_nodes(submit, sats)

    def _watch_routes(self, sats: list[str]) -> None:
        """Records, per ordered observer pair, the first route the network installs (hops,
        delay, nodes crossed): the one the signature lists take when the run starts (the
        first instant installs the links, after the jobs are submitted)."""
        ip = {n.name: n.data_ip for n in self.net.plan.nodes}
        pairs = [(a, b) for a in sats for b in sats if a != b]
        t0 = time.monotonic()
        while not self._stop_watch.is_set():
            try:
                routes = list((self.net.route_table() or {}).get("routes") or [])
            except Exception as exc:  # noqa: BLE001 -- recorded, the watch goes on
                self.routes_at_start["error"] = f"{type(exc).__name__}: {exc}"
                routes = []
            for a, b in pairs:
                key = f"{a}->{b}"
                if self.routes_at_start.get(key) is None:
                    found = route_path(routes, a, ip[b])
                    if found is not None:
                        found["seen_after_s"] = round(time.monotonic() - t0, 3)
                    self.routes_at_start[key] = found
            if all(self.routes_at_start.get(f"{a}->{b}") for a, b in pairs):
                return
            self._stop_watch.wait(0.2)

    def stop(self) -> dict[str, Any]:
        self._stop_watch.set()
        if self._watcher is not None:
            self._watcher.join(timeout=10)
        if not self.jobs or self.pool is None:
            return {}
        token = self.pool.token

        def finish(node: str) -> dict[str, Any]:
            addr, job_id = self.pool.addr(node), self.jobs[node]  # type: ignore[union-attr]
            try:
                client.cancel_job(addr, job_id, token=token)
            except client.AgentApiError as exc:
                if exc.status != 409:  # 409: it had ended already
                    raise
            return client.job_results(addr, job_id, events=True, token=token)

        results = map_nodes(finish, list(self.jobs))
        return summarize(self.plan, results, self.routes_at_start, self.node_names())

    def node_names(self) -> dict[str, str]:
        return {n.name: n.role for n in self.net.plan.nodes}


def summarize(plan: dict[str, Any], results: dict[str, dict[str, Any]],
              routes: dict[str, Any], roles: dict[str, str]) -> dict[str, Any]:
    """The run's DLRC figures from every node's job results (see the module docstring)."""
    sats = plan["observers"]
    gs_name = next(n for n in results if n not in sats)
    ground = results[gs_name].get("summary") or {}
    per_sat: dict[str, Any] = {}
    one_way: list[float] = []
    for name in sats:
        r = results.get(name, {})
        s = dict(r.get("summary") or {})
        for e in r.get("events") or []:
            if e.get("what") == "signatures-received":
                one_way.append(float(e["one_way_s"]))
        g = (ground.get("per_satellite") or {}).get(name, {})
        per_sat[name] = {"state": r.get("state"), "error": r.get("error"),
                         "rank": s.get("rank"), "kept_vectors": s.get("kept_vectors"),
                         "positions": s.get("positions"), "bpp": s.get("bpp"),
                         "sync_round_s": s.get("sync_round_s"), "times": s.get("times"),
                         "waited_for_contact_s": s.get("waited_for_contact_s"),
                         "contact": s.get("contact"),
                         "psnr_db": g.get("psnr_db"), "ms_ssim": g.get("ms_ssim"),
                         "payload_sha256": s.get("payload_sha256"),
                         "ground_payload_sha256": g.get("payload_sha256"),
                         "delivered": "psnr_db" in g}
    done = [v for v in per_sat.values() if v["bpp"]]
    totals: dict[str, Any] = {}
    if done:
        def mean_bpp(part: str) -> float | None:
            vals = [v["bpp"].get(part) for v in done]
            return float(np.mean(vals)) if all(x is not None for x in vals) else None

        totals = {k: mean_bpp(k) for k in ("total", "entropy_coded", "map_lzma", "map_raw",
                                           "header", "plain")}
        if totals["plain"]:
            totals["reduction_total"] = 1 - totals["total"] / totals["plain"]
            totals["reduction_entropy_coded"] = 1 - totals["entropy_coded"] / totals["plain"]
        ratios = [v["times"]["measured"]["overhead_ratio"] for v in done if v.get("times")]
        totals["encoder_overhead_measured"] = float(np.median(ratios)) if ratios else None
        emu = [v["times"]["emulated"]["overhead_ratio"] for v in done
               if v.get("times") and "emulated" in v["times"]]
        totals["encoder_overhead_emulated"] = float(np.median(emu)) if emu else None
    isl_only = {pair: (r is not None and all(roles.get(n) == "satellite" for n in r["path"]))
                for pair, r in routes.items() if "->" in pair}
    syncs = [v["sync_round_s"] for v in per_sat.values() if v["sync_round_s"] is not None]
    return {"kind": "dlrc", "ground": gs_name, "plan": plan, "per_satellite": per_sat,
            "ground_summary": {k: ground.get(k) for k in ("stage", "received", "decoded",
                                                          "bpp", "psnr_db", "ms_ssim")},
            "bpp_mean": totals,
            "sync": {"round_s_max": max(syncs) if syncs else None,
                     "list_one_way_s_max": max(one_way) if one_way else None,
                     "list_one_way_s": {"min": min(one_way), "p50": float(np.median(one_way)),
                                        "max": max(one_way)} if one_way else None,
                     "lists_received": len(one_way),
                     "routes_at_start": routes, "routes_isl_only": isl_only},
            "note": "bpp: bytes sent per satellite x 8 / its patch pixels, mean over "
                    "satellites; plain = the same codec without DLRC on the same patch; "
                    "encode times measured on this host's CPU (emulated: roofline of the "
                    "transforms and LSH for the accelerator option)"}
