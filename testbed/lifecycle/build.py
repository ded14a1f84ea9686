"""Building a run's network: from the timeline to a running `Network` whose fields are all set.

Owns the creation order: address plan, Open vSwitch, controller, node backends (through the
registry, per role), bridges and nodes, links, shapers (per link, through netem's registry),
first routes. Every resource goes into the ledger before it exists. On failure the processes
started so far (controller, shaper worker) are stopped here and the error propagates; the
ledger's teardown (`testbed down`) removes everything else. Driving a running network is
`Network`'s job (network.py).
"""

from __future__ import annotations

from typing import Any

from controller.process import ControllerProcess
from netem.probe import probe_capabilities
from netem.shapers import shaper_class
from netem.shapers.base import Shaper
from netem.shapers.userspace import UserspaceLink
from netem.shapers.userspace_pair import disable_offloads
from netem.shapers.userspace_program import TraceProgram
from testbed.backends.base import BackendContext, NodeBackend, create_backend
from testbed.cgroups import Budget
from testbed.errors import TestbedError
from testbed.fabric.addressing import AddressPlan
from testbed.fabric.ovs import FabricConfig, OvsFabric
from testbed.ledger import Ledger, process_entry_details
from testbed.lifecycle.links import LinkBook, direction_keys, trace_program
from testbed.lifecycle.network import (
    Network,
    Progress,
    build_plan,
    choose_mgmt_subnet,
    free_tcp_port,
    isl_shaper,
    run_prefix,
)
from testbed.lifecycle.routes import ControllerRoutes, RouteProgrammer, RoutePusher
from testbed.lifecycle.run_dir import RunDir
from testbed.lifecycle.snapshot import capture_topology, snapshot_from_state
from testbed.lifecycle.static_routing import StaticRouting
from testbed.paths import cache_dir
from testbed.profiles import budget_for, calibrate, get_profile, profile_from_mapping
from testbed.scenario.model import Scenario
from testbed.sysrun import Runner
from testbed.timeline.model import Timeline
from testbed.workloads.pool import TOKEN_FILE, write_token


class NetworkBuilder:
    """Makes one run's network; `build()` once."""

    def __init__(self, scenario: Scenario, timeline: Timeline, run_dir: RunDir, runner: Runner,
                 ledger: Ledger, progress: Progress | None = None,
                 inventory: object = None, mgmt_subnet: str | None = None) -> None:
        self.scenario = scenario
        self.timeline = timeline
        self.run_dir = run_dir
        self.runner = runner
        self.ledger = ledger
        self.progress = progress
        self.inventory = inventory
        self.mgmt_subnet = mgmt_subnet or choose_mgmt_subnet(scenario)
        self.shapers: dict[str, Shaper] = {}
        self.shaper_of: dict[str, str] = {}
        self.controller: ControllerProcess | None = None

    def _step(self, name: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(name, done, total)

    def build(self) -> Network:
        try:
            return self._build()
        except BaseException:
            self._stop_started()
            raise

    def _stop_started(self) -> None:
        """Stop what this builder started (their ledger entries stay for teardown)."""
        for shaper in self.shapers.values():
            try:
                shaper.close()
            except (TestbedError, OSError):
                pass  # the ledger's teardown kills the worker process
        if self.controller is not None:
            try:
                self.controller.stop()
            except (TestbedError, OSError):
                pass  # the ledger's teardown kills the controller process

    # --- steps -----------------------------------------------------------------------------------

    def _build(self) -> Network:
        scenario, run_dir = self.scenario, self.run_dir
        static = scenario.backend.routing == "static"
        prefix = run_prefix(scenario.name)
        plan = build_plan(self.timeline, prefix, isl_shaper(scenario), self.mgmt_subnet)
        run_dir.write_json(run_dir.state, {"prefix": prefix, "plan": plan.to_dict()})
        stations = {n.name for n in self.timeline.nodes if n.kind == "ground"}
        book = LinkBook(scenario, plan, stations,
                        isl_delay=scenario.links.isl.delay == "propagation")

        of_port = None if static else free_tcp_port()
        fabric = OvsFabric(self.runner, self.ledger, FabricConfig(
            datapath_type=scenario.backend.ovs_datapath, controller_port=of_port))
        backends = self._backends(plan, fabric)
        self._step("open vswitch", 0, 1)
        fabric.ensure_daemon()
        self._step("open vswitch", 1, 1)
        if of_port is not None:
            self.controller = ControllerProcess(
                of_port=of_port, api_port=free_tcp_port(),
                log_path=run_dir.logs / "controller.log",
                state_path=run_dir.path / "controller-state.json",
                token_file=run_dir.path / TOKEN_FILE)  # the agents' token: one per run
            self.controller.start()
            if self.controller.pid is None:
                raise TestbedError("the SDN controller did not report its pid")
            self.ledger.record("process", "controller",
                               **process_entry_details(self.controller.pid))

        self._step("nodes", 0, len(plan.nodes))
        distinct = list({id(b): b for b in backends.values()}.values())
        for backend in distinct:
            backend.create_management()
        fabric.create_bridges(list(plan.nodes), internal_port=lambda n: backends[
            n.role].data_port == "internal")
        budgets = self._budgets(plan)
        for backend in distinct:
            mine = [n for n in plan.nodes if backends[n.role] is backend]
            backend.create_nodes(mine, budgets={n.name: budgets[n.name] for n in mine})
        self._step("nodes", len(plan.nodes), len(plan.nodes))
        self._step("links", 0, len(plan.links))
        fabric.create_links(list(plan.links))
        self._make_shapers(plan, book)
        ground_programs, programs = self._ground_programs(book)
        self._step("links", len(plan.links), len(plan.links))

        static_routing = None
        routing: RouteProgrammer
        if self.controller is None:
            static_routing = StaticRouting(plan, self.runner)
            static_routing.setup()
            routing = static_routing
        else:
            routing = ControllerRoutes(self.controller.endpoint, timeout_s=120.0,
                                       token=self.controller.token)
        # The first routes synchronously: the network carries traffic when `up` returns.
        routing.apply(snapshot_from_state(plan, capture_topology(book, frozenset()), 1,
                                          label="initial"))
        pusher = RoutePusher(routing, record_path=run_dir.route_changes)
        return Network(scenario, self.timeline, run_dir, self.runner, self.ledger,
                       plan=plan, book=book, fabric=fabric, backends=backends,
                       shapers=self.shapers, shaper_of=self.shaper_of, routing=routing,
                       pusher=pusher, controller=self.controller,
                       static_routing=static_routing, generation=1, programs=programs,
                       ground_programs=ground_programs, inventory=self.inventory)

    def _budgets(self, plan: AddressPlan) -> dict[str, Budget]:
        calibration = calibrate(cache_dir(self.run_dir.path.parent / ".cache"))
        custom = {name: profile_from_mapping(name, spec.model_dump())
                  for name, spec in self.scenario.nodes.profiles.items()}
        out = {}
        for n in plan.nodes:
            role = self.scenario.nodes.satellite if n.role == "satellite" else \
                self.scenario.nodes.ground
            profile = custom.get(role.profile) or get_profile(role.profile)
            out[n.name] = budget_for(profile, calibration)
        return out

    def _backends(self, plan: AddressPlan, fabric: OvsFabric) -> dict[str, NodeBackend]:
        """One backend per distinct kind, from the registry; roles of the same kind share it."""
        spec = self.scenario.backend
        token = write_token(self.run_dir.path)  # before any backend: remote ones upload it
        ctx = BackendContext(runner=self.runner, ledger=self.ledger, plan=plan,
                             run_dir=self.run_dir.path,
                             cache_dir=cache_dir(self.run_dir.path.parent / ".cache"),
                             options={**spec.options, "token_file": str(token)},
                             inventory=self.inventory, fabric=fabric)
        by_kind: dict[str, NodeBackend] = {}
        out: dict[str, NodeBackend] = {}
        for role, kind in (("satellite", spec.kind), ("ground", spec.ground)):
            if kind not in by_kind:
                by_kind[kind] = create_backend(kind, ctx)
            out[role] = by_kind[kind]
        return out

    def _make_shapers(self, plan: AddressPlan, book: LinkBook) -> None:
        """The shapers the plan's links ask for (netem.shapers registry): one userspace worker
        for every userspace link, the kernel shaper (htb on the veth ends' egress) for the
        others; `shaper_of` says which shapes each direction."""
        initial = book.initial_states()
        by_kind = {kind: [link for link in plan.links if link.shaper == kind]
                   for kind in ("userspace", "kernel")}
        if by_kind["userspace"]:
            shaper: Any = shaper_class("userspace")(seed=self.scenario.seed)  # reproducible
            self.ledger.record("process", "shaper", **process_entry_details(shaper.pid))
            self.shapers["userspace"] = shaper
        if by_kind["kernel"]:
            self.shapers["kernel"] = shaper_class("kernel")(probe_capabilities(),
                                                             rate_qdisc="htb")
        done = 0
        for link in by_kind["userspace"]:
            if link.shaper_ifnames is None:
                raise TestbedError(f"link {link.name}: userspace-shaped without shaper ends")
            for ifname in (link.a.ifname, link.b.ifname, *link.shaper_ifnames):
                disable_offloads(ifname, None)
            ab, ba = direction_keys(link)
            self.shapers["userspace"].add_link(  # type: ignore[attr-defined]
                UserspaceLink(link.name, link.shaper_ifnames[0], link.shaper_ifnames[1],
                              a_to_b=ab, b_to_a=ba), initial[ab], initial[ba])
            self.shaper_of.update({ab: "userspace", ba: "userspace"})
            done += 1
            self._step("links", done, len(plan.links))
        for link in by_kind["kernel"]:
            for ifname in (link.a.ifname, link.b.ifname):
                disable_offloads(ifname, None)
            ab, ba = direction_keys(link)
            # a frame from a's bridge to b's leaves through a's veth end: its egress shapes a->b
            for key, ifname in ((ab, link.a.ifname), (ba, link.b.ifname)):
                self.ledger.record("qdisc", f"{ifname}:root", ifname=ifname, parent="root")
                self.shapers["kernel"].add_direction(  # type: ignore[attr-defined]
                    key, ifname, None, initial[key])
                self.shaper_of[key] = "kernel"
            done += 1
            self._step("links", done, len(plan.links))

    def _ground_programs(self, book: LinkBook
                         ) -> tuple[dict[str, TraceProgram | None], dict[str, TraceProgram]]:
        """What ground-link directions play. Each direction spec is read and parsed once:
        every satellite's ground link plays the same recorded link (thousands of links, one
        trace in memory)."""
        g = self.scenario.links.ground
        ground = {"downlink": trace_program(g.downlink, "downlink"),
                  "uplink": trace_program(g.uplink, "uplink")}
        programs: dict[str, TraceProgram] = {}
        for r in book.records.values():
            if r.kind == "ground":
                down_key = book.downlink_key(r)
                ab, ba = direction_keys(r.link)
                up_key = ba if down_key == ab else ab
                for key, which in ((down_key, "downlink"), (up_key, "uplink")):
                    program = ground[which]
                    if program is not None:
                        programs[key] = program
        return ground, programs
