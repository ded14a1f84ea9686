"""The embedded node backend: a node is a network namespace plus a cgroup with its budget.

Owns, per node: the namespace (`<prefix>-n<i>`), its cgroup, moving the node's data-plane
interface (the OVS internal port the fabric made) into it with the plan's IPv4 address and MAC,
the static ARP table (every other node's data IP -> MAC: no broadcast on a looped grid), and
the management veth into the run's management bridge. Runs commands inside both namespace and
cgroup. Everything goes into the ledger before it exists. Does not create OVS bridges or links
(testbed.fabric.ovs) nor decide budgets (testbed.profiles).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from netem.nsutil import write_sysctl
from testbed.backends.base import (
    BackendContext,
    DataPortKind,
    KillReport,
    NodeBackendError,
    NodeProcess,
)
from testbed.backends.mgmt import create_management_bridge
from testbed.cgroups import Budget, CgroupManager, NodeCgroup, detect_hierarchy
from testbed.errors import SystemRequirementError
from testbed.fabric.addressing import AddressPlan, NodeAddress
from testbed.fabric.netlink import (
    NetlinkBatchError,
    RequestBatch,
    create_netns,
    encode_neighbours,
    ifindex,
    in_netns,
    neighbour_batch,
    netns_exists,
    netns_path,
    raw_rtnl_socket,
)
from testbed.ledger import Ledger, TeardownReport, process_entry_details, teardown
from testbed.sysrun import Completed, Runner, process_state

_NODES_PER_ROOT_BATCH = 200  # namespace fds held open per batch (stays below ulimit -n 1024)
KILL_WAIT_S = 5.0


class NetnsBackend:
    """Creates, runs commands in, and removes the nodes of one run (embedded default)."""

    kind: ClassVar[str] = "netns"
    data_port: ClassVar[DataPortKind] = "internal"

    @classmethod
    def from_context(cls, ctx: BackendContext, **kwargs: Any) -> NetnsBackend:
        """The backend of one run; nodes get cgroup budgets where the host has the cpu and
        memory controllers, and run without budgets (said in the log) where it has not."""
        cgroups = kwargs.pop("cgroups", "auto")
        if cgroups == "auto":
            try:
                cgroups = CgroupManager(detect_hierarchy(), ctx.plan.prefix, ledger=ctx.ledger)
            except SystemRequirementError:
                cgroups = None
        token = ctx.options.get("token_file")
        return cls(ctx.runner, ctx.ledger, ctx.plan, cgroups=cgroups,
                   token_file=Path(str(token)) if token else None, **kwargs)

    def __init__(
        self,
        runner: Runner,
        ledger: Ledger,
        plan: AddressPlan,
        *,
        cgroups: CgroupManager | None = None,
        static_arp: bool = True,
        disable_ipv6: bool = True,
        token_file: Path | None = None,
    ) -> None:
        """`cgroups=None` runs nodes without budgets (hosts without cpu/memory controllers)."""
        self.runner = runner
        self.ledger = ledger
        self.plan = plan
        self.cgroups = cgroups
        self.static_arp = static_arp
        self.disable_ipv6 = disable_ipv6
        self.token_file = token_file
        self._groups: dict[str, NodeCgroup] = {}
        self.timings_s: dict[str, float] = {}  # where the time went, by step (benchmarks)

    def _timed(self, step: str, t0: float) -> None:
        self.timings_s[step] = self.timings_s.get(step, 0.0) + time.monotonic() - t0

    # --- management network ------------------------------------------------------------------

    def create_management(self) -> None:
        """The management Linux bridge in the root namespace, with the gateway address."""
        create_management_bridge(self.plan, self.ledger)

    # --- nodes -------------------------------------------------------------------------------

    def create_nodes(
        self,
        nodes: Sequence[NodeAddress] | None = None,
        budgets: Mapping[str, Budget] | None = None,
    ) -> None:
        """Create `nodes` (default: all of the plan). Their bridges (with the data internal
        port) and the management bridge must exist. `budgets`: node name -> Budget."""
        nodes = list(self.plan.nodes if nodes is None else nodes)
        budgets = budgets or {}
        self.ledger.record_many(  # grouped by kind: teardown undoes each group in one batch
            [("netns", n.netns, {"node": n.name}) for n in nodes]
            + [("link", n.mgmt_root_ifname, {"peer": n.mgmt_ns_ifname, "node": n.name})
               for n in nodes]
        )
        t0 = time.monotonic()
        if self.cgroups is not None:
            made = self.cgroups.create_many(
                [(self._cgroup_name(n), budgets.get(n.name, Budget())) for n in nodes])
            for n, g in zip(nodes, made, strict=True):
                self._groups[n.name] = g
        self._timed("cgroups", t0)
        arp = encode_neighbours(self.plan.neighbours()) if self.static_arp else None
        mgmt_idx = ifindex(self.plan.mgmt_bridge)
        if mgmt_idx is None:
            raise NodeBackendError(f"management bridge {self.plan.mgmt_bridge} missing: "
                                   "call create_management() first")
        for start in range(0, len(nodes), _NODES_PER_ROOT_BATCH):
            chunk = nodes[start:start + _NODES_PER_ROOT_BATCH]
            t0 = time.monotonic()
            self._plug_in(chunk, mgmt_idx)
            self._timed("netns + moves + mgmt veths", t0)
            t0 = time.monotonic()
            for n in chunk:
                self._configure_inside(n, arp)
            self._timed("inside (addresses, ARP)", t0)

    def _plug_in(self, nodes: Sequence[NodeAddress], mgmt_idx: int) -> None:
        """Create the namespaces, then from the root namespace, in one netlink batch: move each
        data port in (the kernel's cost: ~20 ms each) and make each management veth with its
        peer inside, enslaved to the management bridge and up."""
        fds: list[int] = []
        try:
            with RequestBatch() as batch, raw_rtnl_socket(None) as sock:
                for n in nodes:
                    if not netns_exists(n.netns):
                        create_netns(n.netns)
                    fd = os.open(netns_path(n.netns), os.O_RDONLY)
                    fds.append(fd)
                    data_idx = ifindex(n.data_ifname)
                    if data_idx is not None:
                        batch.link("set", index=data_idx, net_ns_fd=fd,
                                   label=f"node {n.name}: move {n.data_ifname} into {n.netns}")
                    elif ifindex(n.data_ifname, n.netns) is None:
                        raise NodeBackendError(
                            f"node {n.name}: data interface {n.data_ifname} is in neither the "
                            "root namespace nor the node's: create the bridges "
                            "(OvsFabric.create_bridges) first")
                    m_idx = ifindex(n.mgmt_root_ifname)
                    if m_idx is None:
                        batch.link("add", ifname=n.mgmt_root_ifname, kind="veth",
                                   peer={"ifname": n.mgmt_ns_ifname, "net_ns_fd": fd},
                                   master=mgmt_idx, state="up",
                                   label=f"node {n.name}: management veth {n.mgmt_root_ifname}")
                    else:
                        batch.link("set", index=m_idx, master=mgmt_idx, state="up",
                                   label=f"node {n.name}: management veth {n.mgmt_root_ifname}")
                batch.send(sock)
        except NetlinkBatchError as exc:
            raise NodeBackendError(f"creating nodes: {exc}") from exc
        finally:
            for fd in fds:
                os.close(fd)
        if self.disable_ipv6:
            for n in nodes:
                write_sysctl(f"net/ipv6/conf/{n.mgmt_root_ifname}/disable_ipv6", "1")

    def _configure_inside(self, n: NodeAddress, arp: tuple[bytes, list[int]] | None) -> None:
        """Inside the node's namespace, one netlink batch: lo up, data port MAC + address + up,
        management address + up, and the static ARP table."""
        with in_netns(n.netns):
            if self.disable_ipv6:
                write_sysctl("net/ipv6/conf/all/disable_ipv6", "1")
                write_sysctl("net/ipv6/conf/default/disable_ipv6", "1")
            try:
                d_idx = socket.if_nametoindex(n.data_ifname)
                m_idx = socket.if_nametoindex(n.mgmt_ns_ifname)
            except OSError as exc:
                raise NodeBackendError(f"node {n.name}: interface missing in {n.netns}: "
                                       f"{exc}") from exc
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:
            sock.bind((0, 0))
            with RequestBatch() as batch:
                batch.link("set", index=1, state="up", label=f"node {n.name}: lo up")
                batch.link("set", index=d_idx, address=n.data_mac, state="up",
                           label=f"node {n.name}: {n.data_ifname} MAC and up")
                batch.addr("replace", index=d_idx, address=n.data_ip,
                           prefixlen=n.data_prefixlen,
                           label=f"node {n.name}: data address {n.data_ip}")
                batch.link("set", index=m_idx, state="up", label=f"node {n.name}: mgmt0 up")
                batch.addr("replace", index=m_idx, address=n.mgmt_ip,
                           prefixlen=n.mgmt_prefixlen,
                           label=f"node {n.name}: management address {n.mgmt_ip}")
                if arp is not None:
                    buf, _ = neighbour_batch(arp[0], arp[1], d_idx, skip=n.index)
                    batch.raw(buf, label=f"node {n.name}: static ARP entry")
                batch.send(sock)
        except NetlinkBatchError as exc:
            raise NodeBackendError(f"node {n.name} ({n.netns}): {exc}") from exc
        finally:
            sock.close()

    def _cgroup_name(self, n: NodeAddress) -> str:
        return f"n{n.index}"

    def node_cgroup(self, name: str) -> NodeCgroup | None:
        """The cgroup of node `name` (None when the backend runs without cgroups)."""
        if self.cgroups is None:
            return None
        if name not in self._groups:
            n = self.plan.node(name)
            run = self.cgroups.run_group_dirs()
            self._groups[name] = NodeCgroup(f"{self.cgroups.run_name}/{self._cgroup_name(n)}",
                                            self.cgroups.hierarchy.version,
                                            tuple(d / self._cgroup_name(n) for d in run))
        return self._groups[name]

    # --- running things on a node --------------------------------------------------------------

    def _argv(self, node: str, argv: Sequence[str]) -> list[str]:
        self.runner.require("ip", hint="install iproute2")
        return ["ip", "netns", "exec", self.plan.node(node).netns, *argv]

    def _preexec(self, node: str) -> Any:
        group = self.node_cgroup(node)
        return None if group is None else group.attach_self

    def exec(self, node: str, argv: Sequence[str], *, check: bool = True,
             timeout_s: float | None = None, input: str | None = None) -> Completed:
        """Run `argv` to completion inside node's namespace and cgroup."""
        return self.runner.run(self._argv(node, argv), check=check, timeout_s=timeout_s,
                               input=input, preexec_fn=self._preexec(node))

    def python(self, node: str) -> str:
        """A namespace shares the orchestrator's file system: the same interpreter."""
        self.plan.node(node)
        return sys.executable

    def node_path(self, node: str, path: Path) -> str:
        """A namespace sees the orchestrator's files at the same paths."""
        return str(path)

    def mgmt_address(self, node: str) -> str:
        return self.plan.node(node).mgmt_ip

    def agent_argv(self, node: str, *, mgmt_port: int, results: Path,
                   data_ip: str | None = None) -> list[str]:
        """`python -m nodes.agent` with this run's interpreter, inside the node."""
        n = self.plan.node(node)
        argv = [self.python(node), "-m", "nodes.agent", "--name", n.name, "--role", n.role,
                "--mgmt-listen", f"{n.mgmt_ip}:{mgmt_port}", "--results", str(results)]
        if data_ip is not None:
            argv += ["--data-ip", data_ip]
        if self.token_file is not None:
            argv += ["--token-file", str(self.token_file)]
        return argv

    def collect(self, node: str) -> int:
        """Nothing to copy: the node writes into the run directory itself."""
        return 0

    def spawn(self, node: str, argv: Sequence[str], *, log_path: Path | None = None,
              env: Mapping[str, str] | None = None, **popen: Any) -> NodeProcess:
        """Start `argv` in the background inside node's namespace and cgroup (own process
        group), recorded in the ledger so `down` stops it. `log_path` gets stdout and stderr
        (appended); other keyword args go to Runner.spawn (e.g. stdout=PIPE).

        The pid is only known after the start, so the entry follows it; should the caller die
        in between, removing the node's cgroup still kills what it holds.
        """
        if env is not None:
            popen["env"] = {**os.environ, **env}
        log = None
        if log_path is not None:
            log = open(log_path, "ab")  # noqa: SIM115 -- handed to the child, closed below
            popen.setdefault("stdout", log)
            popen.setdefault("stderr", log)
        try:
            proc = self.runner.spawn(self._argv(node, argv), preexec_fn=self._preexec(node),
                                     new_session=True, **popen)
        finally:
            if log is not None:
                log.close()
        details = process_entry_details(proc.pid)
        self.ledger.record("process", f"{node}:{proc.pid}",
                           node=node, argv=list(argv), **details)
        return NodeProcess(node, proc.pid, popen=proc, details=details)

    # --- faults --------------------------------------------------------------------------------

    def node_pids(self, node: str) -> list[int]:
        """Every process in the node's namespace or cgroup."""
        group = self.node_cgroup(node)
        return sorted(set(netns_pids(self.plan.node(node).netns))
                      | set(group.pids() if group else []))

    def kill(self, node: str) -> KillReport:
        """SIGKILL everything in the node's namespace and cgroup, then abort the TCP sockets
        the kernel still holds for it (a crashed board keeps no TCP state either)."""
        pids = self.node_pids(node)
        alive = kill_pids(pids)
        problems = [f"processes {alive} still run {KILL_WAIT_S} s after SIGKILL"] if alive else []
        done = self.exec(node, ["ss", "-K", "-t", "-a", "-n", "-H"], check=False,
                         timeout_s=10.0)
        sockets: int | None = None
        if done.returncode != 0:
            problems.append(f"`ss -K` failed ({done.returncode}): {done.stderr.strip()} "
                            "(needs a kernel with INET_DIAG_DESTROY)")
        else:
            sockets = sum(1 for line in done.stdout.splitlines() if line.strip())
        return KillReport(node, pids_killed=pids, sockets_destroyed=sockets, problems=problems)

    def revive(self, node: str) -> None:
        """Nothing to restart: the namespace and cgroup outlive their processes."""
        if not netns_exists(self.plan.node(node).netns):
            raise NodeBackendError(f"node {node}: namespace {self.plan.node(node).netns} is gone")

    def close(self) -> None:
        """No client handles to release."""

    # --- removal -------------------------------------------------------------------------------

    def remove_node(self, name: str) -> TeardownReport:
        """Undo what this run recorded for node `name` (processes, namespace, cgroup, management
        veth, data port), newest first. Its bridge and links stay (they are the fabric's)."""
        entries = [e for e in self.ledger.entries()
                   if e.details.get("node") == name and e.kind != "ovs-bridge"]
        if self.cgroups is not None:
            cg_name = f"{self.cgroups.run_name}/{self._cgroup_name(self.plan.node(name))}"
            entries += [e for e in self.ledger.entries()
                        if e.kind == "cgroup" and e.name == cg_name]
        entries.sort(key=lambda e: e.seq)
        self._groups.pop(name, None)
        return teardown(entries, self.runner)


def netns_pids(netns: str) -> list[int]:
    """Processes whose network namespace is the named one (what `ip netns pids` does)."""
    try:
        target = os.stat(netns_path(netns))
    except FileNotFoundError:
        return []
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:  # gone meanwhile, or a kernel thread
            continue
        if (st.st_ino, st.st_dev) == (target.st_ino, target.st_dev):
            out.append(int(entry))
    return sorted(out)


def kill_pids(pids: Sequence[int], timeout_s: float = KILL_WAIT_S) -> list[int]:
    """SIGKILL each pid; returns those still running (not gone, not a zombie) after timeout_s."""
    todo = sorted(set(pids) - {os.getpid()})
    for pid in todo:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    alive = todo
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if process_state(p) not in (None, "Z", "X")]
        if alive:
            time.sleep(0.02)
    return alive
