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
from netem.shapers.base import Shaper
from netem.shapers.userspace import UserspaceShaper
from netem.shapers.userspace_program import TraceProgram
from testbed.backends.base import NodeBackend
from testbed.errors import InputError, TestbedError
from testbed.fabric.addressing import (
    DEFAULT_MGMT_SUBNET,
    AddressPlan,
    LinkSpec,
    NodeSpec,
    pick_mgmt_subnet,
)
from testbed.fabric.ovs import OvsFabric
from testbed.ledger import Ledger, process_entry_details
from testbed.lifecycle.links import LinkBook
from testbed.lifecycle.routes import RouteProgrammer, RoutePusher
from testbed.lifecycle.run_dir import RunDir
from testbed.lifecycle.snapshot import capture_topology, snapshot_from_state
from testbed.lifecycle.static_routing import StaticRouting
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


def choose_mgmt_subnet(scenario: Scenario) -> str:
    """`backend.mgmt_subnet` checked against the host's addresses and routes (`auto`: the
    first free candidate), so a second run on this host gets its own management network."""
    from testbed.fabric.netlink import host_ipv4_networks

    return pick_mgmt_subnet(scenario.backend.mgmt_subnet, host_ipv4_networks())


def build_plan(timeline: Timeline, prefix: str, isl_shaper_name: str = "userspace",
               mgmt_subnet: str = DEFAULT_MGMT_SUBNET) -> AddressPlan:
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
    return AddressPlan.build(prefix, nodes, links, mgmt_subnet=mgmt_subnet)


@dataclass
class Network:
    """A running network: made by `Network.up(...)` (every field set), driven with
    `apply_events()`, ended with `stop_processes()` (the ledger removes the rest)."""

    scenario: Scenario
    timeline: Timeline
    run_dir: RunDir
    runner: Runner
    ledger: Ledger
    plan: AddressPlan
    book: LinkBook
    fabric: OvsFabric
    backends: dict[str, NodeBackend]
    """Node role ("satellite", "ground") -> the backend that makes nodes of that role."""
    shapers: dict[str, Shaper]
    """Shaper name ("userspace", "kernel") -> the shaper serving this run's links."""
    shaper_of: dict[str, str]
    """Direction key -> the name of the shaper that shapes it."""
    routing: RouteProgrammer
    pusher: RoutePusher
    controller: ControllerProcess | None = None
    """None with `backend.routing: static` (no controller)."""
    static_routing: StaticRouting | None = None
    """Set with `backend.routing: static`."""
    generation: int = 0
    down_nodes: set[str] = field(default_factory=set)
    start_ns: int = 0
    programs: dict[str, TraceProgram] = field(default_factory=dict)
    ground_programs: dict[str, TraceProgram | None] = field(default_factory=dict)
    """"downlink" / "uplink" -> what every ground link's direction plays (None: constant)."""
    following: set[str] = field(default_factory=set)
    inventory: object = None
    """The lab inventory (testbed.inventory) for the libvirt and remote backends, or None."""
    lock: threading.RLock = field(default_factory=threading.RLock)
    """Serialises the link book and the shaper between the clock, the route pusher's
    deferred downs and fault commands."""

    @classmethod
    def up(cls, scenario: Scenario, timeline: Timeline, run_dir: RunDir, runner: Runner,
           ledger: Ledger, *, progress: Progress | None = None, inventory: object = None,
           mgmt_subnet: str | None = None) -> Network:
        """Create the network of a run (nodes, fabric, shapers, controller, first routes) and
        return it running. Everything is recorded in `ledger` before it exists; on failure
        the processes started so far are stopped and the error propagates (the ledger's
        teardown removes the rest). `mgmt_subnet`: the one `prepare()` picked (None: pick
        now from `backend.mgmt_subnet`)."""
        from testbed.lifecycle.build import NetworkBuilder

        return NetworkBuilder(scenario, timeline, run_dir, runner, ledger, progress,
                              inventory, mgmt_subnet).build()

    def backend_of(self, node: str) -> NodeBackend:
        """The backend that made node `node` (raises for unknown names, listing valid ones)."""
        return self.backends[self.plan.node(node).role]

    # --- driving ----------------------------------------------------------------------------------

    def _push(self, label: str, scheduled_ns: int | None = None,
              deferred: Callable[[], None] | None = None, wait: bool = False) -> None:
        """Hand the current topology to the route pusher.

        `wait`: return only once the routes are in effect (fault commands: their caller
        expects the network to have routed around the fault when the command returns)."""
        generation, make = self._next_snapshot(label)
        self.pusher.submit(make, generation=generation, label=label,
                           scheduled_ns=scheduled_ns, deferred=deferred)
        if wait and not self.pusher.drain(timeout_s=60.0):
            raise TestbedError(f"routes for {label!r} not in effect within 60 s")

    def _next_snapshot(self, label: str) -> tuple[int, Callable[[], Snapshot]]:
        """A new generation of the current topology: captured now (microseconds), built by
        whoever calls the returned function (milliseconds, off the clock's thread)."""
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
        with self.pusher.lock:
            t0 = time.monotonic()
            self.controller.kill()
            self.controller.start()
            assert self.controller.pid is not None
            self.ledger.record("process", "controller",
                               **process_entry_details(self.controller.pid))
            generation, make = self._next_snapshot("after controller restart")
            token = self.controller.token
            push_snapshot(self.controller.endpoint, make(), token=token)
            wait_applied(self.controller.endpoint, generation, timeout_s=60.0, token=token)
            return time.monotonic() - t0

    def route_table(self) -> dict[str, object]:
        """The routes in effect: the controller's table, or the nodes' static routes."""
        if self.static_routing is not None:
            return {"generation": self.static_routing.generation,
                    "routes": self.static_routing.routes()}
        assert self.controller is not None
        return get_routes(self.controller.endpoint,
                          token=self.controller.token).model_dump(mode="json")

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
        return [link.name for link in self.plan.links if name in (link.a.node, link.b.node)]

    def set_links(self, link_names: Sequence[str], up: bool) -> None:
        """Force links up (with their current values) or down in the book and the shaper, in
        one batch; routes are not changed (`reroute`, `kill_node`, `revive_node` do that)."""
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
