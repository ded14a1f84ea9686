"""Workloads as the orchestrator drives them: start a node agent in every node (inside its
namespace and cgroup, on the management network), start the workload through the agents' API,
and collect their results at the end. Workloads register under kebab-case names."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from nodes import client
from nodes.errors import NodeError
from testbed.errors import InputError, TestbedError
from testbed.lifecycle.links import trace_program
from testbed.lifecycle.network import Network
from testbed.lifecycle.session import Prepared, contact_seconds

AGENT_PORT = 9100
GROUND_PORT = 7000


class WorkloadRunError(TestbedError):
    """A node agent or its workload failed (names the node)."""


def _map_nodes(fn: Callable[[str], Any], names: list[str]) -> dict[str, Any]:
    """Run fn on every node in parallel; re-raise the first failure with the node's name."""
    out: dict[str, Any] = {}
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(names)))) as pool:
        futures = {name: pool.submit(fn, name) for name in names}
        for name, fut in futures.items():
            try:
                out[name] = fut.result()
            except (NodeError, TestbedError, OSError) as exc:
                raise WorkloadRunError(f"node {name}: {exc}") from exc
    return out


@dataclass
class DownlinkFiles:
    """Every satellite sends the files of `options.source` to the (first) ground station
    whenever the network gives it a path; the ground station verifies and counts them."""

    prep: Prepared
    net: Network | None = None
    agents: dict[str, str] = field(default_factory=dict)  # node -> mgmt addr
    started_ns: int = 0

    def _options(self) -> dict[str, Any]:
        opts = dict(self.prep.scenario.workload.options)
        if "source" not in opts:
            raise InputError("workload downlink-files needs options.source (a folder of "
                             "files, e.g. ${TESTBED_DATA}/images/rsvqa-lr)",
                             field="workload.options.source")
        opts.pop("relay_over_isl", None)  # relaying is the network's job (routes over ISLs)
        return opts

    def start(self, net: Network) -> None:
        assert net.plan is not None and net.backend is not None
        self.net = net
        plan = net.plan
        ground = [n for n in plan.nodes if n.role == "ground"]
        if not ground:
            raise InputError("workload downlink-files needs a ground station",
                             field="ground_stations")
        logs = self.prep.run_dir.logs
        results = self.prep.run_dir.results
        for n in plan.nodes:
            argv = [sys.executable, "-m", "nodes.agent", "--name", n.name, "--role", n.role,
                    "--mgmt-listen", f"{n.mgmt_ip}:{AGENT_PORT}", "--data-ip", n.data_ip,
                    "--results", str(results)]
            with (logs / f"agent-{n.name}.log").open("ab") as log:
                net.backend.spawn(n.name, argv, stdout=log, stderr=log)
            self.agents[n.name] = f"{n.mgmt_ip}:{AGENT_PORT}"
        _map_nodes(lambda name: client.wait_healthy(self.agents[name], timeout_s=60),
                   list(self.agents))
        opts = self._options()
        wall_s = self.prep.scenario.duration_s / self.prep.scenario.speed
        gs = ground[0]
        client.start_workload(self.agents[gs.name], "downlink-files",
                              {"ground_port": GROUND_PORT})
        sat_opts = {**opts, "ground_ip": gs.data_ip, "ground_port": GROUND_PORT,
                    "duration_s": wall_s}
        sats = [n.name for n in plan.nodes if n.role == "satellite"]
        _map_nodes(lambda name: client.start_workload(self.agents[name], "downlink-files",
                                                      sat_opts), sats)
        self.started_ns = time.monotonic_ns()

    def stop(self) -> dict[str, Any]:
        if not self.agents or self.net is None or self.net.plan is None:
            return {}
        plan = self.net.plan
        sats = [n.name for n in plan.nodes if n.role == "satellite"]
        ground = [n.name for n in plan.nodes if n.role == "ground"]
        sat_results = _map_nodes(lambda name: client.stop_workload(self.agents[name]), sats)
        gs_results = {g: client.stop_workload(self.agents[g]) for g in ground}
        received = gs_results[ground[0]].get("summary", {}).get("senders", {})
        speed = self.prep.scenario.speed
        capacity_bps = self._downlink_capacity_bps()
        contact = {sat: s / speed for sat, s in contact_seconds(
            self.prep.timeline, int(self.prep.scenario.duration_s * 1e9)).items()}
        per_sat: dict[str, Any] = {}
        for name in sats:
            tally = received.get(name, {})
            nbytes = int(tally.get("bytes_received", 0))
            wall = contact.get(name, 0.0)
            per_sat[name] = {
                "files": int(tally.get("files_received", 0)),
                "bytes": nbytes,
                "goodput_mbps": (nbytes * 8 / wall / 1e6) if wall > 0 else 0.0,
                "capacity_mbps": capacity_bps / 1e6,
                "sender": sat_results[name].get("summary", {}),
            }
        return {"kind": "downlink-files", "per_satellite": per_sat,
                "ground": {g: r.get("summary", {}) for g, r in gs_results.items()},
                "note": "goodput = bytes delivered / wall-clock contact time of the "
                        "satellite's own ground link (relayed traffic counts for the sender)"}

    def _downlink_capacity_bps(self) -> float:
        """Programmed mean downlink capacity: the trace's, or the constant rate."""
        spec = self.prep.scenario.links.ground.downlink
        program = trace_program(spec, "downlink")
        if program is not None and program.opportunities_ns is not None:
            return float(program.capacity_bps)
        return float(spec.rate_mbps * 1e6) if spec.rate_mbps else float("nan")


WORKLOADS: dict[str, Callable[[Prepared], Any]] = {"downlink-files": DownlinkFiles}


def workload_for(prep: Prepared) -> Any:
    """The orchestrator side of the scenario's workload; error lists the valid kinds."""
    kind = prep.scenario.workload.kind
    try:
        return WORKLOADS[kind](prep)
    except KeyError:
        raise InputError(f"unknown workload kind '{kind}'; choose: none, "
                         + ", ".join(sorted(WORKLOADS)), field="workload.kind") from None
