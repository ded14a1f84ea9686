"""The Open vSwitch fabric: one bridge per node, veth links between bridges, all ledgered.

Owns: making sure ovs-vswitchd runs, creating bridges (datapath type from the configuration:
`netdev` userspace here, `system` kernel in the lab; fail_mode=secure; OpenFlow13; controller
tcp:127.0.0.1:<port>; datapath id from the node index) with each node's data-plane internal
port, creating the links (a veth pair, or two veth pairs with the shaper ends left for a
userspace shaper) and their OVS ports with fixed OpenFlow port numbers. Everything is created in
batched `ovs-vsctl` transactions (one process for hundreds of bridges) and recorded in the
ledger first. Does not move interfaces into namespaces (backends do) nor program flows
(the controller does; `add_flows` exists for tests).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from testbed.errors import InputError, SystemRequirementError, TestbedError
from testbed.fabric.addressing import LinkAddress, NodeAddress
from testbed.fabric.netlink import NetlinkBatchError, RequestBatch, ifindex, raw_rtnl_socket
from testbed.ledger import Entry, Ledger, Outcome, Undoer, undoes
from testbed.sysrun import CommandError, Runner

OVS_CTL_PATHS = (
    "/usr/share/openvswitch/scripts/ovs-ctl",
    "/usr/local/share/openvswitch/scripts/ovs-ctl",
)
_NETLINK_BATCH_BYTES = 256 * 1024
OVS_HINT = "install Open vSwitch (Debian/Ubuntu: apt-get install openvswitch-switch)"


class OvsError(TestbedError):
    """An Open vSwitch operation failed (names the bridge or port)."""


@dataclass(frozen=True)
class FabricConfig:
    """How bridges are made. `controller_port=None` leaves bridges without a controller."""

    datapath_type: Literal["netdev", "system"] = "netdev"
    controller_host: str = "127.0.0.1"
    controller_port: int | None = 6653
    bridges_per_transaction: int = 250
    ports_per_transaction: int = 2000

    def __post_init__(self) -> None:
        if self.datapath_type not in ("netdev", "system"):
            raise InputError(f"datapath_type={self.datapath_type!r}, expected netdev or system",
                             field="datapath_type")
        if self.controller_port is not None and not 1 <= self.controller_port <= 65535:
            raise InputError(f"controller_port={self.controller_port}, expected 1..65535",
                             field="controller_port")

    @property
    def controller_target(self) -> str | None:
        if self.controller_port is None:
            return None
        return f"tcp:{self.controller_host}:{self.controller_port}"


class OvsFabric:
    """Creates (and records) the OVS side of a run's fabric."""

    def __init__(self, runner: Runner, ledger: Ledger, config: FabricConfig | None = None) -> None:
        self.runner = runner
        self.ledger = ledger
        self.config = config or FabricConfig()
        self.timings_s: dict[str, float] = {}  # where the time went, by step (benchmarks)

    def _timed(self, step: str, t0: float) -> None:
        self.timings_s[step] = self.timings_s.get(step, 0.0) + time.monotonic() - t0

    # --- daemon ------------------------------------------------------------------------------

    def ensure_daemon(self, *, timeout_s: float = 60.0) -> bool:
        """See `ensure_ovs_daemon`."""
        return ensure_ovs_daemon(self.runner, timeout_s=timeout_s)

    # --- queries -----------------------------------------------------------------------------

    def list_bridges(self) -> list[str]:
        done = self.runner.run(["ovs-vsctl", "--timeout=30", "list-br"], timeout_s=60)
        return done.stdout.split()

    def list_ports(self, bridge: str) -> list[str]:
        done = self.runner.run(["ovs-vsctl", "--timeout=30", "list-ports", bridge], timeout_s=60)
        return done.stdout.split()

    def get(self, table: str, record: str, column: str) -> str:
        """One column of one OVS database record, as ovs-vsctl prints it."""
        done = self.runner.run(["ovs-vsctl", "--timeout=30", "get", table, record, column])
        return done.stdout.strip()

    # --- bridges -----------------------------------------------------------------------------

    def create_bridges(self, nodes: Sequence[NodeAddress],
                       internal_port: Callable[[NodeAddress], bool] | None = None) -> None:
        """One bridge per node plus, where `internal_port(node)` (default: every node), its
        data-plane internal port (OpenFlow port 1). Nodes without one get their data port from
        their backend (a VM's tap, a board's NIC: `add_data_port`)."""
        internal = {n.name for n in nodes if internal_port is None or internal_port(n)}
        # Grouped by kind so that teardown undoes each group in one batch.
        self.ledger.record_many(
            [("ovs-bridge", n.bridge, {"node": n.name}) for n in nodes]
            + [("ovs-port", n.data_ifname, {"bridge": n.bridge, "node": n.name}) for n in nodes
               if n.name in internal]
        )
        step = self.config.bridges_per_transaction
        t0 = time.monotonic()
        for start in range(0, len(nodes), step):
            argv = ["ovs-vsctl", "--timeout=300",
                    *self._bridge_commands(nodes[start:start + step], internal)]
            self._vsctl(argv, f"creating bridges {nodes[start].bridge}..")
        self._timed("ovs bridges", t0)

    def _bridge_commands(self, nodes: Sequence[NodeAddress], internal: set[str]) -> list[str]:
        """One transaction's commands. ovs-vsctl rebuilds its whole cache after every generic
        `set`, so the `add-*`/`set-controller` commands come first and the `set`s last:
        interleaving them makes a transaction quadratic in the database size."""
        cmds: list[str] = []
        for n in nodes:
            cmds += ["--", "--may-exist", "add-br", n.bridge]
        for n in nodes:
            if n.name in internal:
                cmds += ["--", "--may-exist", "add-port", n.bridge, n.data_ifname]
        target = self.config.controller_target
        if target is not None:
            for n in nodes:
                cmds += ["--", "set-controller", n.bridge, target]
        for n in nodes:
            cmds += [
                "--", "set", "bridge", n.bridge,
                f"datapath_type={self.config.datapath_type}",
                "fail_mode=secure",
                "protocols=OpenFlow13",
                f"other-config:datapath-id={n.dpid_hex}",
                "other-config:disable-in-band=true",
            ]
        for n in nodes:
            if n.name in internal:
                cmds += ["--", "set", "interface", n.data_ifname, "type=internal",
                         f"ofport_request={n.data_ofport}"]
        return cmds

    def add_data_port(self, node: NodeAddress, ifname: str) -> None:
        """Join an existing interface (a VM's tap, a board's NIC or tunnel port) to the node's
        bridge as its data port (OpenFlow port 1), recorded in the ledger first."""
        self.ledger.record("ovs-port", ifname, bridge=node.bridge, node=node.name)
        self._vsctl(["ovs-vsctl", "--timeout=60", "--", "--may-exist", "add-port", node.bridge,
                     ifname, "--", "set", "interface", ifname,
                     f"ofport_request={node.data_ofport}"],
                    f"adding data port {ifname} to {node.bridge}")

    # --- links -------------------------------------------------------------------------------

    def create_links(self, links: Sequence[LinkAddress], *, wait: bool = True) -> None:
        """Veth pairs (and shaper pairs) in the root namespace, then their OVS ports.

        `wait=False` returns once the database holds the ports, while ovs-vswitchd is still
        adding them (its userspace datapath needs time that grows with the square of the port
        count); do other work, then call `wait_links(links)`.
        """
        veths: list[tuple[str, str, dict[str, Any]]] = []
        ports: list[tuple[str, str, dict[str, Any]]] = []
        for lk in links:
            if lk.shaper_ifnames is None:
                veths.append(("link", lk.a.ifname, {"peer": lk.b.ifname, "link": lk.name}))
            else:
                sa, sb = lk.shaper_ifnames
                veths.append(("link", lk.a.ifname, {"peer": sa, "link": lk.name}))
                veths.append(("link", lk.b.ifname, {"peer": sb, "link": lk.name}))
            ports.append(("ovs-port", lk.a.ifname, {"bridge": lk.a.bridge, "link": lk.name}))
            ports.append(("ovs-port", lk.b.ifname, {"bridge": lk.b.bridge, "link": lk.name}))
        self.ledger.record_many(veths + ports)  # grouped by kind: one undo batch each
        pairs: list[tuple[str, str, str]] = []
        for lk in links:
            if lk.shaper_ifnames is None:
                pairs.append((lk.name, lk.a.ifname, lk.b.ifname))
            else:
                pairs.append((lk.name, lk.a.ifname, lk.shaper_ifnames[0]))
                pairs.append((lk.name, lk.b.ifname, lk.shaper_ifnames[1]))
        t0 = time.monotonic()
        try:
            with RequestBatch() as batch, raw_rtnl_socket(None) as sock:
                for name, x, y in pairs:  # one netlink batch creates all veth pairs
                    if ifindex(x) is None:
                        batch.link("add", ifname=x, kind="veth", peer=y, state="up",
                                   label=f"link {name}: veth {x}/{y}")
                    if batch.size_bytes > _NETLINK_BATCH_BYTES:
                        batch.send(sock)
                batch.send(sock)
                for name, x, y in pairs:  # a veth peer is created down: bring both up
                    for end in (x, y):
                        idx = ifindex(end)
                        if idx is None:
                            raise OvsError(f"link {name}: {end} vanished right after creation")
                        batch.link("set", index=idx, state="up", label=f"link {name}: {end} up")
                batch.send(sock)
        except NetlinkBatchError as exc:
            raise OvsError(f"creating links: {exc}") from exc
        self._timed("veth pairs", t0)
        t0 = time.monotonic()
        step = self.config.ports_per_transaction
        ends = [(end.bridge, end.ifname, end.ofport) for lk in links for end in (lk.a, lk.b)]
        for start in range(0, len(ends), step):
            argv = ["ovs-vsctl", "--timeout=300"] + ([] if wait else ["--no-wait"])
            chunk = ends[start:start + step]
            for bridge, ifname, _ in chunk:  # adds first, `set`s last (see _bridge_commands)
                argv += ["--", "--may-exist", "add-port", bridge, ifname]
            for _, ifname, ofport in chunk:
                argv += ["--", "set", "interface", ifname, f"ofport_request={ofport}"]
            self._vsctl(argv, f"adding link ports {ends[start][1]}..")
        self._timed("ovs link ports" if wait else "ovs link ports (db only)", t0)

    def wait_links(self, links: Sequence[LinkAddress], *, timeout_s: float = 900.0) -> None:
        """Wait until ovs-vswitchd has added every port of `links` with its OpenFlow number."""
        ends = [(end.ifname, end.ofport) for lk in links for end in (lk.a, lk.b)]
        step = self.config.ports_per_transaction
        t0 = time.monotonic()
        for start in range(0, len(ends), step):
            argv = ["ovs-vsctl", f"--timeout={int(timeout_s)}"]
            for ifname, ofport in ends[start:start + step]:
                argv += ["--", "wait-until", "Interface", ifname, f"ofport={ofport}"]
            self._vsctl(argv, f"waiting for link ports {ends[start][0]}..",
                        timeout_s=timeout_s + 30)
        self._timed("ovs link ports (wait)", t0)

    # --- flows (tests; the controller owns flows in a run) -------------------------------------

    def add_flows(self, bridge: str, flows: Sequence[str]) -> None:
        """Add OpenFlow 1.3 flows (ovs-ofctl syntax) to `bridge` in one call."""
        self.runner.require("ovs-ofctl", hint=OVS_HINT)
        self._vsctl(["ovs-ofctl", "-O", "OpenFlow13", "add-flows", bridge, "-"],
                    f"adding flows to {bridge}", input="\n".join(flows) + "\n")

    def _vsctl(self, argv: list[str], what: str, *, input: str | None = None,
               timeout_s: float = 360.0) -> None:
        try:
            self.runner.run(argv, input=input, timeout_s=timeout_s)
        except CommandError as exc:
            raise OvsError(f"{what}: {exc}") from exc


def ensure_ovs_daemon(runner: Runner, *, timeout_s: float = 60.0) -> bool:
    """Start ovsdb-server and ovs-vswitchd with ovs-ctl unless they answer. True if started.

    The daemons are a host service shared by runs: they are never ledgered nor stopped.
    Raises SystemRequirementError when Open vSwitch is not installed or will not start.
    """
    runner.require("ovs-vsctl", hint=OVS_HINT)
    if _daemon_answers(runner):
        return False
    ovs_ctl = next((p for p in OVS_CTL_PATHS if Path(p).exists()), None)
    if ovs_ctl is None:
        raise SystemRequirementError(f"ovs-vsctl exists but ovs-ctl does not (looked in "
                                     f"{', '.join(OVS_CTL_PATHS)}); {OVS_HINT}")
    try:
        runner.run([ovs_ctl, "--system-id=random", "start"], timeout_s=timeout_s)
    except CommandError as exc:
        raise SystemRequirementError(f"Open vSwitch did not start: {exc}") from exc
    deadline = time.monotonic() + timeout_s
    while not _daemon_answers(runner):
        if time.monotonic() > deadline:
            raise SystemRequirementError(
                f"Open vSwitch started by {ovs_ctl} but ovs-vsctl gets no answer after "
                f"{timeout_s:.0f} s")
        time.sleep(0.2)
    return True


def _daemon_answers(runner: Runner) -> bool:
    try:
        runner.run(["ovs-vsctl", "--timeout=5", "show"], timeout_s=10)
    except CommandError:
        return False
    return True


# --- ledger undo (kinds `ovs-bridge`, `ovs-port`) ------------------------------------------------

def _ovs_names(u: Undoer, table: str) -> set[str] | str:
    """Names in an OVS table, or the error text when OVS cannot be asked."""
    try:
        done = u.runner.run(["ovs-vsctl", "--timeout=20", "--bare", "--columns=name", "list",
                             table], timeout_s=30)
    except (CommandError, TestbedError) as exc:
        return f"cannot list OVS {table}s (is ovs-vswitchd running?): {exc}"
    return {line.strip() for line in done.stdout.splitlines() if line.strip()}


def _ovs_batch(u: Undoer, batch: Sequence[Entry], table: str,
               command: Callable[[Entry], list[str]]) -> list[Outcome]:
    existing = _ovs_names(u, table)
    if isinstance(existing, str):
        return [Outcome(e, "failed", existing) for e in batch]
    out = [Outcome(e, "absent") for e in batch if e.name not in existing]
    todo = [e for e in batch if e.name in existing]
    for start in range(0, len(todo), 500):
        chunk = todo[start:start + 500]
        argv = ["ovs-vsctl", "--timeout=120"]
        for e in chunk:
            argv += ["--", "--if-exists", *command(e)]
        try:
            u.runner.run(argv, timeout_s=180)
            out += [Outcome(e, "removed") for e in chunk]
        except (CommandError, TestbedError):
            for e in chunk:  # find which ones fail, one by one
                try:
                    u.runner.run(["ovs-vsctl", "--timeout=20", "--if-exists", *command(e)])
                    out.append(Outcome(e, "removed"))
                except (CommandError, TestbedError) as exc:
                    out.append(Outcome(e, "failed", str(exc)))
    return out


@undoes("ovs-bridge")
def _undo_ovs_bridges(u: Undoer, batch: Sequence[Entry]) -> list[Outcome]:
    return _ovs_batch(u, batch, "Bridge", lambda e: ["del-br", e.name])


@undoes("ovs-port")
def _undo_ovs_ports(u: Undoer, batch: Sequence[Entry]) -> list[Outcome]:
    return _ovs_batch(u, batch, "Port", lambda e: ["del-port", str(e.details["bridge"]), e.name])
