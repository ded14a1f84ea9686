"""The libvirt node backend: a satellite node is a VM (KVM in the lab, TCG emulation elsewhere).

Owns, per node: two taps named by the plan (`<prefix>d<i>` joined to the node's OVS bridge as
OpenFlow port 1 with the plan's data MAC; `<prefix>m<i>` on the run's management Linux bridge),
the node's initramfs (the cached base image plus its node archive: addresses, SSH keys, agent
code), a transient libvirt domain booted straight into that kernel and initramfs, and running
commands in the guest over SSH with the run's key and the guest's pinned host key. Also starts
libvirt's daemons when none answers. Everything is recorded in the ledger before it exists; the
undo of "libvirt-domain" and "guest-process" is registered here, "daemon" in libvirt_daemon.
Does not build the image recipe (libvirt_image) nor create OVS bridges or links (fabric).

exec/spawn path: the guest runs sshd on the management network; `exec` is one `ssh` per
command, `spawn` keeps the `ssh` client as the local child (its exit is the process's exit) and
reads the guest pid from a pid file the remote shell writes before it execs the command.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from testbed.backends.base import (
    BackendContext,
    DataPortKind,
    KillReport,
    NodeBackendError,
    NodeProcess,
)
from testbed.backends.libvirt_cpio import Member
from testbed.backends.libvirt_daemon import (
    ensure_libvirt,
    is_local,
    kvm_node_warning,
    libvirt_module,
)
from testbed.backends.libvirt_domain import (
    AccelChoice,
    DomainSpec,
    choose_accel,
    domain_xml,
    vcpus_and_memory,
)
from testbed.backends.libvirt_guest import (
    GUEST_CODE_DIR,
    GUEST_PID_DIR,
    GUEST_RESULTS_DIR,
    GuestConfig,
    SshKeys,
    mgmt_mac_for,
    node_members,
    write_node_initramfs,
)
from testbed.backends.libvirt_image import GuestImage, Progress, Recipe, build_image
from testbed.cgroups import Budget
from testbed.errors import InputError
from testbed.fabric.addressing import AddressPlan, NodeAddress
from testbed.ledger import (
    Entry,
    Ledger,
    Outcome,
    TeardownReport,
    Undoer,
    process_entry_details,
    teardown,
    undoes,
)
from testbed.paths import REPO_ROOT
from testbed.sysrun import CommandError, Completed, Runner

DEFAULT_URI = "qemu:///system"
GIB = 1 << 30
QEMU_PIDFILE_DIR = "/run/libvirt/qemu"
SSH_PORT = 22
_OPTION_KEYS = {"libvirt_uri", "accel", "max_vcpus", "max_memory_bytes", "memory_bytes",
                "boot_timeout_s", "agents"}
GUEST_TOKEN_PATH = "/var/lib/testbed/agent.token"
"""Where the run's agent token lies in every guest (mode 0600, from the node's boot archive)."""


def _stderr_progress(msg: str) -> None:
    print(f"[libvirt] {msg}", file=sys.stderr, flush=True)


@dataclass
class _Guest:
    node: NodeAddress
    domain: str
    xml: str
    console_log: Path
    procs: list[NodeProcess] = field(default_factory=list)


class LibvirtBackend:
    """Satellite (or any) nodes as libvirt VMs; see the module docstring."""

    kind: ClassVar[str] = "libvirt"
    data_port: ClassVar[DataPortKind] = "backend"

    def __init__(
        self,
        runner: Runner,
        ledger: Ledger,
        plan: AddressPlan,
        run_dir: Path,
        cache_dir: Path,
        *,
        libvirt_uri: str = DEFAULT_URI,
        accel: str = "auto",
        max_vcpus: int | None = None,
        max_memory_bytes: int | None = None,
        memory_bytes: int = GIB,
        boot_timeout_s: float = 180.0,
        agents: Mapping[str, Sequence[str]] | None = None,
        guest_files: Mapping[str, Mapping[str, bytes]] | None = None,
        image: GuestImage | None = None,
        recipe: Recipe | None = None,
        progress: Progress = _stderr_progress,
    ) -> None:
        """`agents`: node -> agent argv that the guest's /init starts at every boot (so a
        revived node runs its agent again); `guest_files`: node -> {guest path: bytes} added to
        its boot archive (e.g. the agent's token file, mode 0600); `memory_bytes`: guest RAM
        without a budget;
        `max_vcpus`/`max_memory_bytes` cap budgets (TCG default: 1 vCPU, 1 GiB)."""
        self.runner = runner
        self.ledger = ledger
        self.plan = plan
        self.run_dir = Path(run_dir)
        self.cache_dir = Path(cache_dir)
        self.uri = libvirt_uri
        self.accel_option = accel
        self.accel: AccelChoice | None = None  # chosen once the kernel exists (create_nodes)
        self._max_vcpus = max_vcpus
        self._max_memory_bytes = max_memory_bytes
        self.progress = progress
        self.memory_bytes = memory_bytes
        self.boot_timeout_s = boot_timeout_s
        self.agents = {k: list(v) for k, v in (agents or {}).items()}
        self.guest_files = {k: dict(v) for k, v in (guest_files or {}).items()}
        self.token_path: str | None = None
        """The agent token's path in the guests (set by `from_context` when the run has one)."""
        self.image = image
        self.recipe = recipe
        self.work_dir = self.run_dir / "libvirt"
        self.keys: SshKeys | None = None
        self.daemons_started: list[str] = []
        self._guests: dict[str, _Guest] = {}
        self._conn: Any = None
        self.timings_s: dict[str, float] = {}

    @classmethod
    def from_context(cls, ctx: BackendContext, **kwargs: Any) -> LibvirtBackend:
        """Build from a run's context; `ctx.options` may set libvirt_uri, accel, max_vcpus,
        max_memory_bytes, memory_bytes, boot_timeout_s, agents."""
        unknown = set(ctx.options) - _OPTION_KEYS - {"kind"}
        unknown.discard("token_file")  # the run's agent token (set by the network builder)
        if unknown:
            raise InputError(f"libvirt backend: unknown option(s) {', '.join(sorted(unknown))}; "
                             f"choose: {', '.join(sorted(_OPTION_KEYS))}", field="backend")
        opts = {k: v for k, v in ctx.options.items() if k in _OPTION_KEYS}
        token = ctx.options.get("token_file")
        if token and "guest_files" not in kwargs:
            data = Path(str(token)).read_bytes()
            kwargs["guest_files"] = {n.name: {GUEST_TOKEN_PATH: data} for n in ctx.plan.nodes}
        backend = cls(ctx.runner, ctx.ledger, ctx.plan, ctx.run_dir, ctx.cache_dir,
                      **(opts | kwargs))
        backend.token_path = GUEST_TOKEN_PATH if token else None
        return backend

    def _timed(self, step: str, t0: float) -> None:
        self.timings_s[step] = self.timings_s.get(step, 0.0) + time.monotonic() - t0

    # --- libvirt connection ----------------------------------------------------------------

    def connection(self) -> Any:
        """The libvirt connection (daemons started and ledgered first when none answers)."""
        if self._conn is None:
            libvirt = libvirt_module()
            self.daemons_started = ensure_libvirt(self.ledger, self.uri)
            warning = kvm_node_warning() if is_local(self.uri) else None
            if warning:
                self.progress(f"warning: {warning}")
            try:
                self._conn = libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                raise NodeBackendError(f"libvirt {self.uri}: {exc}") from exc
        return self._conn

    def close(self) -> None:
        """Close the libvirt connection; removes nothing."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- management network ------------------------------------------------------------------

    def create_management(self) -> None:
        """The run's management Linux bridge with the gateway address (shared with netns)."""
        from testbed.backends.mgmt import create_management_bridge

        create_management_bridge(self.plan, self.ledger)

    # --- nodes -------------------------------------------------------------------------------

    def domain_name(self, n: NodeAddress) -> str:
        return f"{self.plan.prefix}-vm{n.index}"

    def create_nodes(self, nodes: Sequence[NodeAddress] | None = None,
                     budgets: Mapping[str, Budget] | None = None) -> None:
        """Start one VM per node and wait until each answers over SSH. The node's OVS bridge
        and the management bridge must exist. `budgets` set vCPUs and memory (capped)."""
        nodes = list(self.plan.nodes if nodes is None else nodes)
        budgets = budgets or {}
        conn = self.connection()
        t0 = time.monotonic()
        if self.image is None:
            self.image = build_image(self.cache_dir, self.recipe)
        self._timed("image", t0)
        if self.accel is None:
            t0 = time.monotonic()
            choose_accel(self.accel_option)  # a bad option fails before the probe runs
            self.accel = choose_accel(self.accel_option, self.image.kernel_path)
            self.progress(f"guests run with type='{self.accel.accel}': {self.accel.reason}")
            self._timed("accel probe", t0)
        self.ledger.record("dir", str(self.work_dir), path=str(self.work_dir), recursive=True)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if self.keys is None:
            self.keys = SshKeys.create(self.work_dir / "ssh", f"testbed-{self.plan.prefix}")
        t0 = time.monotonic()
        self._create_taps(nodes)
        self._timed("taps", t0)
        t0 = time.monotonic()
        specs = [self._spec(n, budgets.get(n.name, Budget())) for n in nodes]
        self.ledger.record_many([
            ("libvirt-domain", s.name, {"node": s.node, "uri": self.uri,
                                        "pidfile": f"{QEMU_PIDFILE_DIR}/{s.name}.pid"})
            for s in specs])
        for n, spec in zip(nodes, specs, strict=True):
            guest = _Guest(n, spec.name, domain_xml(spec), spec.console_log)
            self._guests[n.name] = guest
            self._start(conn, guest)
        self._timed("define + start", t0)
        t0 = time.monotonic()
        for n in nodes:
            self.wait_ready(n.name)
        self._timed("boot to ssh", t0)

    def _spec(self, n: NodeAddress, budget: Budget) -> DomainSpec:
        if self.image is None or self.keys is None:
            raise NodeBackendError(f"node {n.name}: image and keys are made by create_nodes")
        host_key = self.keys.host_key(n.name, n.mgmt_ip)
        config = GuestConfig.for_node(n, self.plan.neighbours(), self.image.modules,
                                      self.agents.get(n.name))
        initramfs = self.work_dir / f"{n.name}.initramfs"
        extra = [Member(path.lstrip("/"), 0o600, data)
                 for path, data in self.guest_files.get(n.name, {}).items()]
        write_node_initramfs(self.image.initramfs_path, initramfs,
                             node_members(config, self.keys, host_key, [REPO_ROOT / "nodes"],
                                          extra))
        tcg = self._accel().accel == "qemu"
        max_vcpus = self._max_vcpus if self._max_vcpus is not None else (1 if tcg else 64)
        max_memory = self._max_memory_bytes if self._max_memory_bytes is not None else (
            GIB if tcg else 1 << 40)
        vcpus, memory = vcpus_and_memory(
            budget.cpu_cores, budget.memory_bytes, max_vcpus=max_vcpus,
            max_memory_bytes=max_memory, default_memory_bytes=self.memory_bytes)
        return DomainSpec(
            name=self.domain_name(n), node=n.name, accel=self._accel().accel, vcpus=vcpus,
            memory_bytes=memory, kernel=self.image.kernel_path, initramfs=initramfs,
            mgmt_tap=n.mgmt_root_ifname, mgmt_mac=mgmt_mac_for(n.mgmt_ip),
            data_tap=n.data_ifname, data_mac=n.data_mac,
            console_log=self.work_dir / f"{n.name}.console.log",
            cpu_quota_cores=budget.cpu_cores)

    def _create_taps(self, nodes: Sequence[NodeAddress]) -> None:
        """Per node: the data tap on its OVS bridge as OpenFlow port 1 (replacing an internal
        port of the same name, which OvsFabric.create_bridges makes for namespace nodes) and
        the management tap on the management bridge."""
        from testbed.fabric.netlink import iproute

        self.ledger.record_many(
            [("link", n.data_ifname, {"node": n.name, "role": "data-tap"}) for n in nodes]
            + [("link", n.mgmt_root_ifname, {"node": n.name, "role": "mgmt-tap"})
               for n in nodes]
            + [("ovs-port", n.data_ifname, {"bridge": n.bridge, "node": n.name})
               for n in nodes])
        vsctl = ["ovs-vsctl", "--timeout=60"]
        for n in nodes:  # an internal port would hold the tap's name: remove it first
            if self._ovs_type(n.data_ifname) == "internal":
                vsctl += ["--", "--if-exists", "del-port", n.bridge, n.data_ifname]
        if len(vsctl) > 2:
            self._vsctl(vsctl, "removing internal data ports")
        with iproute(None) as ipr:
            mgmt = ipr.link_lookup(ifname=self.plan.mgmt_bridge)
            if not mgmt:
                raise NodeBackendError(f"management bridge {self.plan.mgmt_bridge} missing: "
                                       "call create_management() first")
            for n in nodes:
                for tap in (n.data_ifname, n.mgmt_root_ifname):
                    if not ipr.link_lookup(ifname=tap):
                        ipr.link("add", ifname=tap, kind="tuntap", mode="tap")
                d_idx = ipr.link_lookup(ifname=n.data_ifname)[0]
                m_idx = ipr.link_lookup(ifname=n.mgmt_root_ifname)[0]
                ipr.link("set", index=d_idx, state="up")
                ipr.link("set", index=m_idx, master=mgmt[0], state="up")
        vsctl = ["ovs-vsctl", "--timeout=60"]
        for n in nodes:
            vsctl += ["--", "--may-exist", "add-port", n.bridge, n.data_ifname]
        for n in nodes:
            vsctl += ["--", "set", "interface", n.data_ifname,
                      f"ofport_request={n.data_ofport}"]
        self._vsctl(vsctl, "adding data taps")
        for n in nodes:
            _write_sysctl(f"net/ipv6/conf/{n.mgmt_root_ifname}/disable_ipv6", "1")
            _write_sysctl(f"net/ipv6/conf/{n.data_ifname}/disable_ipv6", "1")

    def _ovs_type(self, ifname: str) -> str | None:
        done = self.runner.run(["ovs-vsctl", "--timeout=30", "--if-exists", "get", "interface",
                                ifname, "type"], check=False)
        return done.stdout.strip().strip('"') if done.returncode == 0 else None

    def _vsctl(self, argv: list[str], what: str) -> None:
        try:
            self.runner.run(argv, timeout_s=120)
        except CommandError as exc:
            raise NodeBackendError(f"{what}: {exc}") from exc

    def _start(self, conn: Any, guest: _Guest) -> None:
        """Start the transient domain; one that already runs (a re-run of create_nodes after
        a partial up) is left alone."""
        libvirt = libvirt_module()
        try:
            if conn.lookupByName(guest.domain).isActive():
                return
        except libvirt.libvirtError:
            pass  # not defined: start it
        guest.console_log.unlink(missing_ok=True)
        try:
            conn.createXML(guest.xml, 0)
        except libvirt.libvirtError as exc:
            raise NodeBackendError(f"node {guest.node.name}: starting domain {guest.domain} "
                                   f"({self._accel().accel}): {exc}") from exc

    def console_tail(self, node: str, chars: int = 2000) -> str:
        """The end of the node's serial console (boot messages, /init progress)."""
        path = self._guest(node).console_log
        try:
            return path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no console log)"

    def is_running(self, node: str) -> bool:
        libvirt = libvirt_module()
        try:
            return bool(self.connection().lookupByName(self._guest(node).domain).isActive())
        except libvirt.libvirtError:
            return False

    def wait_ready(self, node: str, *, timeout_s: float | None = None) -> float:
        """Wait until `node`'s sshd accepts our key; returns the seconds waited. Raises
        NodeBackendError with the console's tail when the domain stops or time runs out."""
        limit_s = self.boot_timeout_s if timeout_s is None else timeout_s
        n = self.plan.node(node)
        t0 = time.monotonic()
        while True:
            if _port_open(n.mgmt_ip, SSH_PORT):
                done = self.exec(node, ["true"], check=False, timeout_s=30)
                if done.returncode == 0:
                    return time.monotonic() - t0
            if not self.is_running(node):
                raise NodeBackendError(f"node {node}: domain {self._guest(node).domain} "
                                       f"stopped while booting; console:\n"
                                       f"{self.console_tail(node)}")
            if time.monotonic() - t0 > limit_s:
                raise NodeBackendError(f"node {node}: no SSH answer from {n.mgmt_ip} after "
                                       f"{limit_s:.0f} s ({self._accel().accel}); "
                                       f"console:\n"
                                       f"{self.console_tail(node)}")
            time.sleep(0.25)

    def _accel(self) -> AccelChoice:
        if self.accel is None:
            raise NodeBackendError("libvirt backend: accelerator not chosen yet "
                                   "(create_nodes first)")
        return self.accel

    def _guest(self, node: str) -> _Guest:
        try:
            return self._guests[node]
        except KeyError:
            self.plan.node(node)  # InputError for a name outside the plan
            raise NodeBackendError(f"node {node}: not a VM of this backend (create_nodes "
                                   "first)") from None

    # --- running things on a node --------------------------------------------------------------

    def python(self, node: str) -> str:
        return "python3"

    def mgmt_address(self, node: str) -> str:
        """The guest's management interface has the plan's address."""
        return self.plan.node(node).mgmt_ip

    def agent_argv(self, node: str, *, mgmt_port: int, results: Path,
                   data_ip: str | None = None) -> list[str]:
        """`python3 -m nodes.agent` inside the guest (its boot archive carries `nodes/` and
        the run's token at GUEST_TOKEN_PATH)."""
        n = self.plan.node(node)
        argv = [self.python(node), "-m", "nodes.agent", "--name", n.name, "--role", n.role,
                "--mgmt-listen", f"{n.mgmt_ip}:{mgmt_port}",
                "--results", self.node_path(node, results)]
        if data_ip is not None:
            argv += ["--data-ip", data_ip]
        argv += (["--token-file", self.token_path] if self.token_path
                 else ["--insecure-no-token"])
        return argv

    def collect(self, node: str) -> int:
        """The agent's results file (`<results>/<node>.json`) back into the run directory."""
        results = self.run_dir / "results"
        results.mkdir(parents=True, exist_ok=True)
        try:
            self.fetch(node, f"{self.node_path(node, results)}/{node}.json",
                       results / f"{node}.json")
        except NodeBackendError:
            return 0  # no results written (the agent never ran a job)
        return 1

    def node_path(self, node: str, path: Path) -> str:
        """A run-directory path as the guest sees it (under /var/lib/testbed/run; the guest
        has no shared folder: copy results back with `fetch`)."""
        try:
            rel = Path(path).resolve().relative_to(self.run_dir.resolve())
        except ValueError:
            raise InputError(f"node {node}: path {path} is outside the run directory "
                             f"{self.run_dir}, expected a path inside it") from None
        return f"{GUEST_RESULTS_DIR}/{rel}" if str(rel) != "." else GUEST_RESULTS_DIR

    def _ssh(self, node: str) -> list[str]:
        if self.keys is None:
            raise NodeBackendError(f"node {node}: no SSH keys yet (create_nodes first)")
        return self.keys.ssh_argv(self.plan.node(node).mgmt_ip)

    def exec(self, node: str, argv: Sequence[str], *, check: bool = True,
             timeout_s: float | None = None, input: str | None = None) -> Completed:
        """Run `argv` in the guest (cwd and PYTHONPATH: the agent code) over SSH."""
        remote = (f"cd /{GUEST_CODE_DIR} && PYTHONPATH=/{GUEST_CODE_DIR} exec "
                  f"{shlex.join(argv)}")
        done = self.runner.run([*self._ssh(node), remote], check=False, timeout_s=timeout_s,
                               input=input)
        if check and done.returncode != 0:
            what = "ssh could not connect" if done.returncode == 255 else \
                f"exited with status {done.returncode}"
            raise NodeBackendError(f"node {node}: `{shlex.join(argv)}` {what}\n"
                                   f"stdout: {done.stdout.strip()[-2000:] or '(empty)'}\n"
                                   f"stderr: {done.stderr.strip()[-2000:] or '(empty)'}")
        return done

    def spawn(self, node: str, argv: Sequence[str], *, log_path: Path | None = None,
              env: Mapping[str, str] | None = None) -> NodeProcess:
        """Start `argv` in the guest; the local `ssh` client is the returned popen (stdout and
        stderr go to `log_path`). Both the ssh client and the guest pid go into the ledger."""
        guest = self._guest(node)
        token = uuid.uuid4().hex[:12]
        pidfile = f"{GUEST_PID_DIR}/{token}"
        envs = " ".join(shlex.quote(f"{k}={v}") for k, v in (env or {}).items())
        remote = (f"echo $$ > {pidfile} && cd /{GUEST_CODE_DIR} && exec env "
                  f"PYTHONPATH=/{GUEST_CODE_DIR} {envs} {shlex.join(argv)}")
        log = open(log_path, "ab") if log_path is not None else None  # noqa: SIM115
        try:
            popen = self.runner.spawn([*self._ssh(node), remote], stdout=log or subprocess.DEVNULL,
                                      stderr=subprocess.STDOUT if log else subprocess.DEVNULL)
        finally:
            if log is not None:
                log.close()
        self.ledger.record("process", f"{node}:ssh:{popen.pid}", node=node,
                           argv=["ssh", node, *argv], **process_entry_details(popen.pid))
        pid = self._read_guest_pid(node, pidfile, popen)
        n = self.plan.node(node)
        self.ledger.record("guest-process", f"{node}:{pid}", node=node, pid=pid,
                           domain=guest.domain, uri=self.uri, ssh=self._ssh(node),
                           mgmt_ip=n.mgmt_ip, argv=list(argv))
        proc = NodeProcess(node=node, pid=pid, popen=popen,
                           details={"domain": guest.domain, "ssh_pid": popen.pid})
        guest.procs.append(proc)
        return proc

    def _read_guest_pid(self, node: str, pidfile: str, popen: subprocess.Popen[bytes],
                        timeout_s: float = 60.0) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            done = self.exec(node, ["cat", pidfile], check=False, timeout_s=30)
            if done.returncode == 0 and done.stdout.strip().isdigit():
                return int(done.stdout.strip())
            if popen.poll() is not None:
                raise NodeBackendError(f"node {node}: spawned command ended (ssh status "
                                       f"{popen.returncode}) before its pid could be read")
            time.sleep(0.2)
        raise NodeBackendError(f"node {node}: no pid in {pidfile} after {timeout_s:.0f} s")

    def fetch(self, node: str, guest_path: str, local_path: Path) -> int:
        """Copy one file out of the guest (e.g. the agent's results); returns its size."""
        done = subprocess.run([*self._ssh(node), f"cat {shlex.quote(guest_path)}"],
                              capture_output=True, timeout=120, check=False)
        if done.returncode != 0:
            raise NodeBackendError(f"node {node}: cannot read {guest_path}: "
                                   f"{done.stderr.decode(errors='replace').strip()}")
        local_path.parent.mkdir(parents=True, exist_ok=True)
        local_path.write_bytes(done.stdout)
        return len(done.stdout)

    # --- faults --------------------------------------------------------------------------------

    def kill(self, node: str) -> KillReport:
        """Hard power-off (`destroy`): every guest process dies with it. The domain's taps,
        ports and files stay for `revive`. Local ssh clients of its processes are stopped."""
        libvirt = libvirt_module()
        guest = self._guest(node)
        problems: list[str] = []
        try:
            self.connection().lookupByName(guest.domain).destroy()
        except libvirt.libvirtError as exc:
            problems.append(f"destroy {guest.domain}: {exc}")
        killed = [p.pid for p in guest.procs if p.poll() is None]
        for p in guest.procs:
            if p.popen is not None and p.popen.poll() is None:
                p.popen.terminate()
                try:
                    p.popen.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.popen.kill()
                    p.popen.wait(timeout=5)
        guest.procs.clear()
        return KillReport(node=node, pids_killed=killed, problems=problems)

    def revive(self, node: str) -> None:
        """Boot the node's domain again (same XML, taps and initramfs) and wait for SSH; the
        guest's /init starts its agent again when one was configured."""
        guest = self._guest(node)
        if self.is_running(node):
            return
        self._start(self.connection(), guest)
        self.wait_ready(node)

    # --- removal -------------------------------------------------------------------------------

    def remove_node(self, node: str) -> TeardownReport:
        """Undo what this run recorded for `node` (processes, domain, taps, data port)."""
        entries = [e for e in self.ledger.entries()
                   if e.details.get("node") == node and e.kind != "ovs-bridge"]
        self._guests.pop(node, None)
        return teardown(entries, self.runner)


# --- undo of the kinds this module creates ------------------------------------------------

@undoes("libvirt-domain")
def _undo_domains(u: Undoer, batch: Sequence[Entry]) -> list[Outcome]:
    """Destroy each transient domain through libvirt; when libvirt cannot be asked, kill the
    qemu process named by libvirt's pid file (checked against the domain name)."""
    by_uri: dict[str, list[Entry]] = {}
    for e in batch:
        by_uri.setdefault(str(e.details.get("uri", DEFAULT_URI)), []).append(e)
    out: list[Outcome] = []
    for uri, entries in by_uri.items():
        out += _undo_domains_at(uri, entries)
    return out


def _undo_domains_at(uri: str, batch: Sequence[Entry]) -> list[Outcome]:
    out: list[Outcome] = []
    conn = None
    try:
        libvirt = libvirt_module()
        conn = libvirt.open(uri)
    except Exception:  # noqa: BLE001 - no libvirt: the pid-file path below still works
        conn = None
    try:
        for e in batch:
            try:
                removed = False
                if conn is not None:
                    try:
                        dom = conn.lookupByName(e.name)
                        if dom.isActive():
                            dom.destroy()
                            removed = True
                        if dom.isPersistent():
                            dom.undefine()
                            removed = True
                    except libvirt.libvirtError as exc:
                        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                            raise
                removed = _kill_qemu(e) or removed
                out.append(Outcome(e, "removed" if removed else "absent"))
            except Exception as exc:  # noqa: BLE001 - reported per entry
                out.append(Outcome(e, "failed", f"{type(exc).__name__}: {exc}"))
    finally:
        if conn is not None:
            conn.close()
    return out


def _kill_qemu(e: Entry) -> bool:
    """SIGKILL the qemu of domain `e.name` if its pid file names a live qemu of that domain
    (only local URIs have one here)."""
    if not is_local(str(e.details.get("uri", DEFAULT_URI))):
        return False
    pidfile = Path(str(e.details.get("pidfile", f"{QEMU_PIDFILE_DIR}/{e.name}.pid")))
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return False
    if not any(a.startswith(f"guest={e.name},".encode()) or a == f"guest={e.name}".encode()
               for a in cmdline):
        return False
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return True


@undoes("guest-process")
def _undo_guest_processes(u: Undoer, batch: Sequence[Entry]) -> list[Outcome]:
    """SIGTERM each process inside its guest over SSH (so an agent writes its results), then
    SIGKILL after 3 s. A guest that is not running holds no process: absent."""
    out: list[Outcome] = []
    for e in batch:
        pid = int(e.details["pid"])
        ip = str(e.details["mgmt_ip"])
        if not _port_open(ip, SSH_PORT, timeout_s=1.0):
            out.append(Outcome(e, "absent"))
            continue
        script = (f"kill -TERM {pid} 2>/dev/null || exit 3; i=0; while [ $i -lt 30 ]; do "
                  f"kill -0 {pid} 2>/dev/null || exit 0; sleep 0.1; i=$((i+1)); done; "
                  f"kill -KILL {pid}; exit 0")
        try:
            done = u.runner.run([*e.details["ssh"], script], check=False, timeout_s=30)
        except CommandError as exc:
            out.append(Outcome(e, "failed", str(exc)))
            continue
        if done.returncode == 0:
            out.append(Outcome(e, "removed"))
        elif done.returncode == 3:
            out.append(Outcome(e, "absent"))
        elif done.returncode == 255:  # the guest went away meanwhile: nothing runs there
            out.append(Outcome(e, "absent"))
        else:
            out.append(Outcome(e, "failed", f"ssh kill in {e.details['domain']} exited "
                                            f"{done.returncode}: {done.stderr.strip()}"))
    return out


def _port_open(ip: str, port: int, *, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _write_sysctl(key: str, value: str) -> None:
    path = Path("/proc/sys") / key
    if path.exists():
        path.write_text(value)

