"""The running emulated network of one run (embedded default: namespaces, OVS, userspace
shapers, the os-ken controller), created from the timeline and recorded in the ledger.

Owns creation order and the live objects (shaper worker, controller process). Removal is the
ledger's job (`testbed down`), so a crash at any point leaves a ledger that removes everything.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from controller.api import get_routes, push_snapshot, wait_applied
from controller.model import Snapshot
from controller.process import ControllerProcess
from netem.linkstate import LinkState
from netem.probe import Capabilities, probe_capabilities
from netem.shapers import shaper_class
from netem.shapers.base import Shaper
from netem.shapers.userspace import UserspaceLink, UserspaceShaper
from netem.shapers.userspace_pair import disable_offloads
from netem.shapers.userspace_program import TraceProgram
from testbed.backends.base import BackendContext, NodeBackend, create_backend
from testbed.cgroups import Budget
from testbed.errors import InputError, TestbedError
from testbed.fabric.addressing import AddressPlan, LinkSpec, NodeSpec
from testbed.fabric.ovs import FabricConfig, OvsFabric
from testbed.ledger import Ledger, process_entry_details
from testbed.lifecycle.links import LinkBook, direction_keys, trace_program
from testbed.lifecycle.routes import ControllerRoutes, RouteProgrammer, RoutePusher
from testbed.lifecycle.run_dir import RunDir
from testbed.lifecycle.snapshot import capture_topology, snapshot_from_state
from testbed.lifecycle.static_routing import StaticRouting
from testbed.profiles import budget_for, calibrate, get_profile, profile_from_mapping
from testbed.scenario.model import Scenario
from testbed.sysrun import Runner
from testbed.timeline.model import LinkEvent, Timeline

Progress = Callable[[str, int, int], None]

MAKE_BEFORE_BREAK_GRACE_S = 0.02
"""From new routes in effect to the departing links going down (see `_take_down`)."""


def run_prefix(scenario_name: str) -> str:
    """Short resource prefix (IFNAMSIZ leaves ~8 characters): 't' + 5 hex of the name."""
    return "t" + hashlib.sha1(scenario_name.encode()).hexdigest()[:5]


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def isl_shaper(scenario: Scenario, caps: Capabilities | None = None) -> str:
    """Which shaper ISLs get: `links.isl.shaper`, with `auto` resolved against the kernel.

    The kernel's htb is cheaper (no userspace hop) but without netem it can only apply rate:
    it serves ISLs when netem is present or ISLs carry no delay (`links.isl.delay: none`).
    Raises InputError when `kernel` is asked for links this kernel cannot emulate."""
    isl = scenario.links.isl
    if isl.shaper == "userspace":
        return "userspace"
    caps = caps or probe_capabilities()
    able = caps.has("htb") and (caps.netem or isl.delay == "none")
    if isl.shaper == "kernel" and not able:
        raise InputError("links.isl.shaper: kernel, but ISL delay needs the netem qdisc, which "
                         f"this kernel lacks ({caps.reason('netem')}); use links.isl.delay: "
                         "none for rate-only ISLs, or shaper: userspace",
                         field="links.isl.shaper")
    return "kernel" if able else "userspace"


def build_plan(timeline: Timeline, prefix: str, isl_shaper_name: str = "userspace"
               ) -> AddressPlan:
    """Nodes of the timeline; one link for every node pair that is ever up. Ground links are
    always userspace-shaped (they follow recorded traces); ISLs get `isl_shaper_name`."""
    nodes = [NodeSpec(n.name, n.kind) for n in timeline.nodes]
    seen: dict[str, str] = {}
    for e in timeline.events:
        if e.kind == "up":
            seen.setdefault(e.link, e.link_kind)
    links = [LinkSpec(*name.split("--"),
                      shaper=isl_shaper_name if kind == "isl" else "userspace")  # type: ignore[arg-type]
             for name, kind in seen.items()]
    return AddressPlan.build(prefix, nodes, links)


@dataclass
class Network:
    """Create with `up()`; drive with `apply_events()`; `stop_processes()` at the end."""

    scenario: Scenario
    timeline: Timeline
    run_dir: RunDir
    runner: Runner
    ledger: Ledger
    progress: Progress | None = None
    plan: AddressPlan | None = None
    book: LinkBook | None = None
    shapers: dict[str, Shaper] = field(default_factory=dict)
    """Shaper name ("userspace", "kernel") -> the shaper serving this run's links."""
    shaper_of: dict[str, str] = field(default_factory=dict)
    """Direction key -> the name of the shaper that shapes it."""
    controller: ControllerProcess | None = None
    backends: dict[str, NodeBackend] = field(default_factory=dict)
    """Node role ("satellite", "ground") -> the backend that makes nodes of that role."""
    fabric: OvsFabric | None = None
    generation: int = 0
    down_nodes: set[str] = field(default_factory=set)
    start_ns: int = 0
    programs: dict[str, TraceProgram] = field(default_factory=dict)
    ground_programs: dict[str, TraceProgram | None] = field(default_factory=dict)
    """"downlink" / "uplink" -> what every ground link's direction plays (None: constant)."""
    following: set[str] = field(default_factory=set)
    routing: RouteProgrammer | None = None
    static_routing: StaticRouting | None = None
    pusher: RoutePusher | None = None
    inventory: object = None
    """The lab inventory (testbed.inventory) for the libvirt and remote backends, or None."""
    lock: threading.RLock = field(default_factory=threading.RLock)
    """Serialises the link book and the shaper between the clock, the route pusher's
    deferred downs and fault commands."""

    def _step(self, name: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(name, done, total)

    # --- creation -------------------------------------------------------------------------------

    def _budgets(self, plan: AddressPlan) -> dict[str, Budget]:
        calibration = calibrate(self.run_dir.path.parent / ".cache")
        custom = {name: profile_from_mapping(name, spec.model_dump())
                  for name, spec in self.scenario.nodes.profiles.items()}
        out = {}
        for n in plan.nodes:
            role = self.scenario.nodes.satellite if n.role == "satellite" else \
                self.scenario.nodes.ground
            profile = custom.get(role.profile) or get_profile(role.profile)
            out[n.name] = budget_for(profile, calibration)
        return out

    def backend_of(self, node: str) -> NodeBackend:
        """The backend that made node `node` (raises for unknown names, listing valid ones)."""
        assert self.plan is not None
        return self.backends[self.plan.node(node).role]

    def _make_backends(self, plan: AddressPlan, fabric: OvsFabric) -> None:
        """One backend per distinct kind, from the registry; roles of the same kind share it."""
        spec = self.scenario.backend
        ctx = BackendContext(runner=self.runner, ledger=self.ledger, plan=plan,
                             run_dir=self.run_dir.path,
                             cache_dir=self.run_dir.path.parent / ".cache",
                             options=dict(spec.options), inventory=self.inventory,
                             fabric=fabric)
        by_kind: dict[str, NodeBackend] = {}
        for role, kind in (("satellite", spec.kind), ("ground", spec.ground)):
            if kind not in by_kind:
                by_kind[kind] = create_backend(kind, ctx)
            self.backends[role] = by_kind[kind]

    def up(self) -> None:
        static = self.scenario.backend.routing == "static"
        prefix = run_prefix(self.scenario.name)
        self.plan = plan = build_plan(self.timeline, prefix, isl_shaper(self.scenario))
        self.run_dir.write_json(self.run_dir.state, {"prefix": prefix, "plan": plan.to_dict()})
        stations = {n.name for n in self.timeline.nodes if n.kind == "ground"}
        self.book = LinkBook(self.scenario, plan, stations,
                             isl_delay=self.scenario.links.isl.delay == "propagation")

        of_port = None if static else free_tcp_port()
        self.fabric = fabric = OvsFabric(self.runner, self.ledger, FabricConfig(
            datapath_type=self.scenario.backend.ovs_datapath, controller_port=of_port))
        self._make_backends(plan, fabric)
        self._step("open vswitch", 0, 1)
        fabric.ensure_daemon()
        self._step("open vswitch", 1, 1)

        if of_port is not None:
            self.controller = ControllerProcess(
                of_port=of_port, api_port=free_tcp_port(),
                log_path=self.run_dir.logs / "controller.log",
                state_path=self.run_dir.path / "controller-state.json")
            self.controller.start()
            assert self.controller.pid is not None
            self.ledger.record("process", "controller",
                               **process_entry_details(self.controller.pid))

        self._step("nodes", 0, len(plan.nodes))
        distinct = list({id(b): b for b in self.backends.values()}.values())
        for backend in distinct:
            backend.create_management()
        fabric.create_bridges(list(plan.nodes), internal_port=lambda n: self.backends[
            n.role].data_port == "internal")
        budgets = self._budgets(plan)
        for backend in distinct:
            mine = [n for n in plan.nodes if self.backends[n.role] is backend]
            backend.create_nodes(mine, budgets={n.name: budgets[n.name] for n in mine})
        self._step("nodes", len(plan.nodes), len(plan.nodes))
        self._step("links", 0, len(plan.links))
        fabric.create_links(list(plan.links))
        self._make_shaper()
        self._step("links", len(plan.links), len(plan.links))
        if self.controller is None:
            self.static_routing = StaticRouting(plan, self.runner)
            self.static_routing.setup()
            self.routing = self.static_routing
        else:
            self.routing = ControllerRoutes(self.controller.endpoint, timeout_s=120.0)
        self._push(label="initial")
        self.pusher = RoutePusher(self.routing, record_path=self.run_dir.route_changes)

    def _make_shaper(self) -> None:
        """The shapers the plan's links ask for (netem.shapers registry): one userspace worker
        for every userspace link, the kernel shaper (htb on the veth ends' egress) for the
        others; `shaper_of` says which shapes each direction."""
        assert self.plan is not None and self.book is not None
        initial = self.book.initial_states()
        by_kind = {kind: [link for link in self.plan.links if link.shaper == kind]
                   for kind in ("userspace", "kernel")}
        if by_kind["userspace"]:
            shaper = shaper_class("userspace")(seed=self.scenario.seed)  # reproducible loss
            self.ledger.record("process", "shaper", **process_entry_details(shaper.pid))
            self.shapers["userspace"] = shaper
        if by_kind["kernel"]:
            self.shapers["kernel"] = shaper_class("kernel")(probe_capabilities(),
                                                             rate_qdisc="htb")
        done = 0
        for link in by_kind["userspace"]:
            assert link.shaper_ifnames is not None
            for ifname in (link.a.ifname, link.b.ifname, *link.shaper_ifnames):
                disable_offloads(ifname, None)
            ab, ba = direction_keys(link)
            self.shapers["userspace"].add_link(  # type: ignore[attr-defined]
                UserspaceLink(link.name, link.shaper_ifnames[0], link.shaper_ifnames[1],
                              a_to_b=ab, b_to_a=ba), initial[ab], initial[ba])
            self.shaper_of.update({ab: "userspace", ba: "userspace"})
            done += 1
            self._step("links", done, len(self.plan.links))
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
            self._step("links", done, len(self.plan.links))
        g = self.scenario.links.ground
        # Read and parse each direction spec once: every satellite's ground link plays the same
        # recorded link (thousands of links, one trace in memory).
        self.ground_programs = {"downlink": trace_program(g.downlink, "downlink"),
                                "uplink": trace_program(g.uplink, "uplink")}
        for r in self.book.records.values():
            if r.kind == "ground":
                down_key = self.book.downlink_key(r)
                ab, ba = direction_keys(r.link)
                up_key = ba if down_key == ab else ab
                for key, which in ((down_key, "downlink"), (up_key, "uplink")):
                    program = self.ground_programs[which]
                    if program is not None:
                        self.programs[key] = program

    # --- driving ----------------------------------------------------------------------------------

    def _push(self, label: str, scheduled_ns: int | None = None,
              deferred: Callable[[], None] | None = None, wait: bool = False) -> None:
        """Hand the current topology to the route pusher (the first one synchronously).

        `wait`: return only once the routes are in effect (fault commands: their caller
        expects the network to have routed around the fault when the command returns)."""
        assert self.routing is not None
        generation, make = self._next_snapshot(label)
        if self.pusher is None:
            self.routing.apply(make())
            if deferred is not None:
                deferred()
            return
        self.pusher.submit(make, generation=generation, label=label,
                           scheduled_ns=scheduled_ns, deferred=deferred)
        if wait and not self.pusher.drain(timeout_s=60.0):
            raise TestbedError(f"routes for {label!r} not in effect within 60 s")

    def _next_snapshot(self, label: str) -> tuple[int, Callable[[], Snapshot]]:
        """A new generation of the current topology: captured now (microseconds), built by
        whoever calls the returned function (milliseconds, off the clock's thread)."""
        assert self.plan is not None and self.book is not None
        with self.lock:
            self.generation += 1
            generation = self.generation
            state = capture_topology(self.book, frozenset(self.down_nodes))
        plan = self.plan
        return generation, lambda: snapshot_from_state(plan, state, generation, label=label)

    def start_clock(self, start_ns: int) -> None:
        """Scenario time zero is `start_ns` on the monotonic clock (aligns trace replay)."""
        self.start_ns = start_ns

    @property
    def shaper(self) -> UserspaceShaper | None:
        """The userspace shaper (ground links, and ISLs it shapes), if this run has one."""
        return self.shapers.get("userspace")  # type: ignore[return-value]

    def _sync_following(self, states: dict[str, LinkState]) -> None:
        """Ground-link directions follow their trace while up, and stop while down."""
        assert self.shaper is not None
        for key, state in states.items():
            if key not in self.programs:
                continue
            if state.rate_bps > 0 and key not in self.following:
                self.shaper.follow(key, self.programs[key], start_ns=self.start_ns or None)
                self.following.add(key)
            elif state.rate_bps == 0 and key in self.following:
                self.shaper.unfollow(key)
                self.following.discard(key)

    def _apply_states(self, states: dict[str, LinkState],
                      scheduled_ns: int | None = None) -> None:
        """Direction states to the shaper in one call: a ground direction going down stops
        following its trace first, one coming up starts after."""
        if not states:
            return
        with self.lock:
            self._sync_following({k: s for k, s in states.items() if s.rate_bps == 0})
            split: dict[str, dict[str, LinkState]] = {}
            for key, state in states.items():
                split.setdefault(self.shaper_of[key], {})[key] = state
            for name, part in split.items():
                if name == "userspace":
                    self.shapers[name].apply_many(  # type: ignore[call-arg]
                        part, scheduled_ns=scheduled_ns)
                else:
                    self.shapers[name].apply_many(part)
            self._sync_following({k: s for k, s in states.items() if s.rate_bps > 0})

    def apply_events(self, events: Sequence[LinkEvent], scheduled_ns: int | None = None
                     ) -> dict[str, int]:
        """Apply all events of one instant: shaper changes in one call, at most one snapshot.

        Make-before-break: links going down stay up in the shaper until the routes of the new
        topology are in effect (the route pusher runs the deferred down); everything else
        (links coming up, rate and delay changes) applies at once.
        """
        assert self.book is not None
        with self.lock:
            now: dict[str, LinkState] = {}
            departing: list[str] = []
            topology = False
            for e in events:
                states, changed = self.book.apply(e)
                topology = topology or changed
                if e.kind == "down" and changed:
                    departing.append(e.link)
                    for key in states:
                        now.pop(key, None)
                else:
                    now.update(states)
            departing = [name for name in departing if not self.book.records[name].up]
            self._apply_states(now, scheduled_ns)
        if topology:
            self._push(label=f"t={events[0].t_ns / 1e9:.3f}s", scheduled_ns=scheduled_ns,
                       deferred=(lambda: self._take_down(departing)) if departing else None)
        return {"directions": len(now), "snapshot": int(topology), "deferred": len(departing)}

    def _take_down(self, link_names: Sequence[str]) -> None:
        """Apply the down state of links still down (a later event may have raised them).

        Runs once the new routes are in effect, after a short grace: frames already inside
        the userspace datapath on their way to the old link (each bridge crossing costs up to
        a few ms here) still reach it while it is up."""
        assert self.book is not None
        time.sleep(MAKE_BEFORE_BREAK_GRACE_S)
        with self.lock:
            states: dict[str, LinkState] = {}
            for name in link_names:
                if not self.book.records[name].up:
                    states.update(self.book.states(name))
            self._apply_states(states)

    # --- faults ---------------------------------------------------------------------------

    def cut_link(self, link_name: str, up: bool) -> None:
        self.set_links([link_name], up)
        self._push(label=f"fault: {'restore' if up else 'cut'} {link_name}", wait=True)

    def kill_node(self, name: str) -> None:
        assert self.plan is not None
        self.plan.node(name)  # raises for unknown names, listing some valid ones
        self.down_nodes.add(name)
        self.set_links(self.node_links(name), up=False)
        self._push(label=f"fault: kill {name}", wait=True)

    def restart_controller(self) -> float:
        """Kill and restart the controller; returns seconds until flows are in sync again.

        Holds the route pusher's lock, so no route change goes to the dead controller."""
        if self.controller is None:
            raise TestbedError("this run routes with backend.routing: static; it has no "
                               "controller to restart")
        assert self.pusher is not None
        with self.pusher.lock:
            t0 = time.monotonic()
            self.controller.kill()
            self.controller.start()
            assert self.controller.pid is not None
            self.ledger.record("process", "controller",
                               **process_entry_details(self.controller.pid))
            generation, make = self._next_snapshot("after controller restart")
            push_snapshot(self.controller.endpoint, make())
            wait_applied(self.controller.endpoint, generation, timeout_s=60.0)
            return time.monotonic() - t0

    def route_table(self) -> dict[str, object]:
        """The routes in effect: the controller's table, or the nodes' static routes."""
        if self.static_routing is not None:
            return {"generation": self.static_routing.generation,
                    "routes": self.static_routing.routes()}
        assert self.controller is not None
        return get_routes(self.controller.endpoint).model_dump(mode="json")

    def counters(self) -> dict[str, dict[str, object]]:
        with self.lock:
            return self.shaper.counters() if self.shaper is not None else {}

    def stop_processes(self) -> None:
        """Stop the route pusher, the shaper worker and the controller (the ledger removes
        the rest)."""
        errors: list[str] = []
        if self.pusher is not None:
            self.pusher.close(timeout_s=10.0)
        stops = [(f"{name} shaper", shaper.close) for name, shaper in self.shapers.items()]
        stops.append(("controller", self.controller.stop if self.controller else None))
        for name, stop in stops:
            if stop is None:
                continue
            try:
                stop()
            except (TestbedError, OSError) as exc:
                errors.append(f"{name}: {exc}")
        if errors:
            raise TestbedError("stopping run processes: " + "; ".join(errors))

    # --- fault support (testbed.lifecycle.faults) -----------------------------------------------

    def node_links(self, name: str) -> list[str]:
        """Names of the links that end at node `name` (up or down)."""
        assert self.plan is not None
        return [link.name for link in self.plan.links if name in (link.a.node, link.b.node)]

    def set_links(self, link_names: Sequence[str], up: bool) -> None:
        """Force links up (with their current values) or down in the book and the shaper, in
        one batch; routes are not changed (`reroute`, `kill_node`, `revive_node` do that)."""
        assert self.book is not None
        with self.lock:
            states: dict[str, LinkState] = {}
            for name in link_names:
                states.update(self.book.set_up(name, up))
            self._apply_states(states)

    def reroute(self, label: str) -> None:
        """Routes for the current link states, in effect when this returns."""
        self._push(label=label, wait=True)

    def revive_node(self, name: str) -> None:
        """Undo `kill_node`'s routing: the node carries traffic again over its links that are
        up (raise them first with `set_links`)."""
        self.down_nodes.discard(name)
        self._push(label=f"fault: revive {name}", wait=True)
