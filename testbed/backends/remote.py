"""The remote backend: a node is a lab host (Jetson board, GPU ground server) reached over SSH.

Owns, per node: choosing its host from the inventory, deploying the agent there (Python >= 3.11
checked, `nodes/` copied by SFTP into a per-run folder, a venv, requirements installed offline
from a wheelhouse, an optional token file with mode 0600), starting processes detached with
their pid and start time recorded, killing them, bringing files back, removing the folder, and
joining the host's data port to the node's OVS bridge (the inventory's `fabric_port` as OpenFlow
port 1). Every remote process and folder is in the ledger before it exists; their undo lives in
testbed.backends.remote_undo. Does not make bridges or links (testbed.fabric) and sets no CPU
budget (a board is its own budget).
"""

from __future__ import annotations

import secrets
import shlex
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import nodes as nodes_package
from testbed.backends.base import (
    BackendContext,
    DataPortKind,
    KillReport,
    NodeBackendError,
    NodeProcess,
)
from testbed.backends.remote_python import (
    Wheelhouse,
    check_python,
    prepare_wheelhouse,
)
from testbed.backends.remote_ssh import (
    RemoteCommandError,
    RemoteError,
    SshSession,
    SshTarget,
    connect,
    remote_command,
)
from testbed.backends.remote_undo import ADDR_SCRIPT, TAG_VAR, kill_tagged, privileged
from testbed.cgroups import Budget
from testbed.errors import InputError
from testbed.fabric.addressing import AddressPlan, NodeAddress
from testbed.ledger import Ledger, TeardownReport, teardown
from testbed.sysrun import Completed, Runner

NODES_DIR = Path(nodes_package.__file__).resolve().parent


@dataclass
class _Placed:
    """A node's host and its per-run folder there."""

    node: str
    host: Any  # testbed.inventory.InventoryHost
    target: SshTarget
    run_dir: str
    tag: str
    python: str | None = None  # the host's interpreter, absolute (after the check)
    session: SshSession | None = None
    spawned: int = 0
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def venv_python(self) -> str:
        return f"{self.run_dir}/venv/bin/python"


class RemoteBackend:
    """Nodes on lab hosts over SSH. Build with `from_context(ctx)` (needs ctx.inventory)."""

    kind: ClassVar[str] = "remote"
    data_port: ClassVar[DataPortKind] = "backend"

    def __init__(self, runner: Runner, ledger: Ledger, plan: AddressPlan, inventory: Any, *,
                 run_dir: Path, assign: Mapping[str, str] | None = None,
                 wheelhouse: Wheelhouse | None = None, token_file: Path | None = None,
                 connect_timeout_s: float = 10.0, attach_fabric: bool = True) -> None:
        """`assign`: node -> inventory host name (default: satellites to boards, ground nodes
        to ground servers, in order). `wheelhouse`: the agent's requirements (None: standard
        library only). `token_file`: copied to each node with mode 0600 for the agent."""
        if inventory is None:
            raise InputError("backend remote needs a lab inventory (testbed.inventory)",
                             field="backend.inventory")
        self.runner, self.ledger, self.plan, self.inventory = runner, ledger, plan, inventory
        self.run_dir = Path(run_dir)
        self.wheelhouse, self.token_file = wheelhouse, token_file
        self.connect_timeout_s = connect_timeout_s
        self.attach_fabric = attach_fabric
        self._assign = self._assignment(dict(assign or {}))
        self._placed: dict[str, _Placed] = {}
        self._ledger_lock = threading.Lock()  # deploys run in threads; the ledger is not shared

    def _record(self, kind: str, name: str, **details: Any) -> Any:
        with self._ledger_lock:
            return self.ledger.record(kind, name, **details)

    @classmethod
    def from_context(cls, ctx: BackendContext, **kwargs: Any) -> RemoteBackend:
        """Options (the scenario's backend section): `assign` {node: host}, `requirements`
        [pip specs], `token_file`, `connect_timeout_s`."""
        opts = dict(ctx.options)
        reqs = list(opts.get("requirements", []))
        wheelhouse = kwargs.pop("wheelhouse", None)
        if reqs and wheelhouse is None:
            wheelhouse = prepare_wheelhouse(reqs, ctx.cache_dir / "wheelhouse", runner=ctx.runner)
        token = opts.get("token_file")
        return cls(ctx.runner, ctx.ledger, ctx.plan, ctx.inventory, run_dir=ctx.run_dir,
                   assign=opts.get("assign"), wheelhouse=wheelhouse,
                   token_file=Path(token) if token else None,
                   connect_timeout_s=float(opts.get("connect_timeout_s", 10.0)), **kwargs)

    def _assignment(self, explicit: dict[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        names = {n.name for n in self.plan.nodes}
        for node, host in explicit.items():
            if node not in names:
                raise InputError(f"assign: unknown node {node!r}; the plan has: "
                                 + ", ".join(sorted(names)), field="backend.assign")
            self.inventory.host(host)  # InventoryError listing the hosts
            out[node] = host
        pools = {"satellite": [h.name for h in self.inventory.by_role("board")],
                 "ground": [h.name for h in self.inventory.by_role("ground-server")]}
        for n in self.plan.nodes:
            if n.name in out:
                continue
            free = [h for h in pools.get(n.role, []) if h not in out.values()]
            if not free:
                continue  # only an error if this node is created (create_nodes names it)
            out[n.name] = free[0]
        return out

    def host_of(self, node: str) -> Any:
        """The inventory host that runs `node`."""
        try:
            return self.inventory.host(self._assign[node])
        except KeyError:
            raise NodeBackendError(f"node {node}: no inventory host for it (role "
                                   f"{self.plan.node(node).role}); add a host or `assign` "
                                   "one") from None

    def mgmt_address(self, node: str) -> str:
        """Where the orchestrator reaches the node's agent: the host's SSH address."""
        return self.host_of(node).address

    # --- life of a run -------------------------------------------------------------------------

    def create_management(self) -> None:
        """Nothing: the lab's own network is the management path (SSH and the agents' API)."""

    def create_nodes(self, nodes: Sequence[NodeAddress] | None = None,
                     budgets: Mapping[str, Budget] | None = None) -> None:
        """Deploy the agent to each node's host (in parallel, every failure re-raised with the
        node's name), give each host's `data_interface` the plan's address, and add each host's
        fabric port to the node's bridge. `budgets` are not applied: the board is the budget."""
        todo = list(self.plan.nodes if nodes is None else nodes)
        for n in todo:
            self.placed(n.name)  # host lookup errors before any thread starts
        with ThreadPoolExecutor(max_workers=min(8, max(1, len(todo)))) as pool:
            futures = [(n.name, pool.submit(self.deploy, n.name)) for n in todo]
        for name, fut in futures:
            exc = fut.exception()
            if exc is not None:
                exc.add_note(f"while deploying node {name}")
                raise exc
        for n in todo:
            self.configure_data_interface(n)
            if self.attach_fabric:
                self.attach_data_port(n)

    def _session(self, p: _Placed) -> SshSession:
        if p.session is None or not p.session.alive():
            p.session = connect(p.target)
        return p.session

    def placed(self, node: str) -> _Placed:
        if node not in self._placed:
            host = self.host_of(node)
            target = SshTarget.from_host(host, connect_timeout_s=self.connect_timeout_s)
            self._placed[node] = _Placed(
                node, host, target, f"{host.work_dir}/{self.plan.prefix}-{node}",
                tag=f"{self.plan.prefix}-{node}-{secrets.token_hex(4)}")
        return self._placed[node]

    def deploy(self, node: str) -> dict[str, float]:
        """Connect, check Python, copy `nodes/`, make the venv, install requirements, copy the
        token. Returns seconds per step. Any failure after the folder exists removes it."""
        p = self.placed(node)
        steps: dict[str, float] = {}

        def step(name: str, fn: Callable[[], Any]) -> Any:
            t0 = time.monotonic()
            out = fn()
            steps[name] = time.monotonic() - t0
            return out

        session = step("connect", lambda: self._session(p))
        p.python = step("check python", lambda: check_python(session, p.host))
        entry = self._record("remote-dir", f"{p.host.name}:{p.run_dir}", node=node,
                                   path=p.run_dir, run=self.plan.prefix, python=p.python,
                                   **p.target.to_details())
        try:
            # one round trip: each command pays the login shell's start on the host
            step("folder + venv", lambda: session.run(
                ["sh", "-c", 'rm -rf -- "$1" && mkdir -p -- "$1/src" "$1/run" "$1/logs" '
                 '"$1/pids" && "$2" -m venv --without-pip "$1/venv"', "sh", p.run_dir,
                 p.python or "python3"], timeout_s=120))
            step("copy nodes/", lambda: session.put_tree(NODES_DIR, f"{p.run_dir}/src/nodes"))
            if self.wheelhouse is not None and self.wheelhouse.requirements:
                step("requirements", lambda: self._install(session, p))
            if self.token_file is not None:
                step("token", lambda: session.put_file(
                    self.token_file, f"{p.run_dir}/token", mode=0o600))  # type: ignore[arg-type]
        except BaseException as exc:
            report = teardown([entry], self.runner)
            if not report.ok:
                exc.add_note(f"cleanup of {p.run_dir} on {p.target.where} failed: "
                             + report.summary())
            raise
        p.timings_s = steps
        return steps

    def _install(self, session: SshSession, p: _Placed) -> None:
        wh = self.wheelhouse
        if wh is None:
            return
        remote_wh = f"{p.run_dir}/wheelhouse"
        session.put_tree(wh.path, remote_wh)
        session.run([p.venv_python, f"{remote_wh}/{wh.pip_wheel().name}/pip", "install",
                     "--no-index", "--find-links", remote_wh, "--no-cache-dir",
                     "--disable-pip-version-check", "--no-input", *wh.requirements],
                    timeout_s=600)

    def configure_data_interface(self, n: NodeAddress) -> None:
        """Give the host's `data_interface` the plan's data MAC and address, and a static ARP
        entry for every other node (as the netns backend does inside a namespace). Needs root
        there (or passwordless `sudo -n`); the original MAC is restored by the undo."""
        host = self.host_of(n.name)
        ifname = host.data_interface
        if ifname is None:
            return
        p = self.placed(n.name)
        session = self._session(p)
        got = session.run(["cat", f"/sys/class/net/{ifname}/address"], check=False)
        if got.returncode != 0:
            raise NodeBackendError(f"node {n.name}: data_interface {ifname!r} does not exist on "
                                   f"host {p.target.where}")
        sudo = host.user != "root"
        others = [(ip, mac) for ip, mac in self.plan.neighbours() if ip != n.data_ip]
        address = f"{n.data_ip}/{n.data_prefixlen}"
        self._record("remote-addr", f"{host.name}:{ifname}", node=n.name, ifname=ifname,
                     address=address, original_mac=got.stdout.strip(), sudo=sudo,
                     neighbours=[ip for ip, _ in others], **p.target.to_details())
        session.run(privileged(["sh", "-c", ADDR_SCRIPT, "sh", ifname, address, n.data_mac,
                                *(x for pair in others for x in pair)], sudo), timeout_s=60)

    def attach_data_port(self, n: NodeAddress) -> None:
        """Add the host's `fabric_port` to the node's bridge as OpenFlow port 1."""
        from testbed.fabric.netlink import ifindex

        port = self.host_of(n.name).fabric_port
        if port is None:
            return
        if ifindex(port) is None:
            raise NodeBackendError(f"node {n.name}: fabric_port {port!r} of host "
                                   f"{self.host_of(n.name).name} does not exist on the "
                                   "orchestrator (expected a NIC or tunnel interface)")
        self._record("ovs-port", port, bridge=n.bridge, node=n.name)
        self.runner.run(["ovs-vsctl", "--timeout=20", "--may-exist", "add-port", n.bridge, port,
                         "--", "set", "Interface", port, f"ofport_request={n.data_ofport}"])
        got = self.runner.run(["ovs-vsctl", "--timeout=20", "get", "Interface", port,
                               "ofport"]).stdout.strip()
        if got != str(n.data_ofport):
            raise NodeBackendError(f"node {n.name}: fabric_port {port} got ofport {got}, "
                                   f"expected {n.data_ofport} (is the port number taken?)")

    # --- running things ------------------------------------------------------------------------

    def python(self, node: str) -> str:
        return self.placed(node).venv_python

    def node_path(self, node: str, path: Path) -> str:
        """Paths below the run directory map to `<per-run folder>/run/...` on the host."""
        try:
            rel = Path(path).resolve().relative_to(self.run_dir.resolve())
        except ValueError:
            raise NodeBackendError(f"node {node}: {path} is outside the run directory "
                                   f"{self.run_dir}; only run paths exist on a board") from None
        base = f"{self.placed(node).run_dir}/run"
        return base if rel == Path(".") else f"{base}/{rel.as_posix()}"

    def token_path(self, node: str) -> str | None:
        """Where the agent's token file is on the host (None without a token)."""
        return None if self.token_file is None else f"{self.placed(node).run_dir}/token"

    def agent_argv(self, node: str, *, mgmt_port: int, results: Path,
                   data_ip: str | None = None) -> list[str]:
        """The agent's command line on the host (listening on the host's address)."""
        n = self.plan.node(node)
        argv = [self.python(node), "-m", "nodes.agent", "--name", node, "--role", n.role,
                "--mgmt-listen", f"{self.mgmt_address(node)}:{mgmt_port}",
                "--results", self.node_path(node, results)]
        if data_ip is not None:
            argv += ["--data-ip", data_ip]
        token = self.token_path(node)
        if token is not None:
            argv += ["--token-file", token]
        return argv

    def exec(self, node: str, argv: Sequence[str], *, check: bool = True,
             timeout_s: float | None = None, input: str | None = None) -> Completed:
        """Run `argv` on the node's host (words quoted; tagged so kill() also stops it)."""
        p = self.placed(node)
        return self._session(p).run(argv, check=check, input=input,
                                    timeout_s=60.0 if timeout_s is None else timeout_s,
                                    env={TAG_VAR: p.tag})

    def spawn(self, node: str, argv: Sequence[str], *, log_path: Path | None = None,
              env: Mapping[str, str] | None = None) -> NodeProcess:
        """Start `argv` detached on the host (own session, nohup, cwd `<run folder>/src`),
        stdout+stderr to `<run folder>/logs/<log_path's name or node-N.log>`. Recorded in the
        ledger before it starts (tag) and again with its pid and start time."""
        p = self.placed(node)
        if p.python is None:
            raise NodeBackendError(f"node {node}: not deployed on {p.target.where}; call "
                                   "create_nodes() or deploy() first")
        session = self._session(p)
        p.spawned += 1
        name = f"{node}:{p.spawned}"
        pidfile = f"{p.run_dir}/pids/{p.spawned}.pid"
        log = f"{p.run_dir}/logs/{log_path.name if log_path else f'{node}-{p.spawned}.log'}"
        base = {"node": node, "host": p.host.name, "tag": p.tag, "python": p.python,
                "argv": list(argv), "log": log, **p.target.to_details()}
        self._record("remote-process", name, **base)
        full_env = {TAG_VAR: p.tag, "PYTHONPATH": f"{p.run_dir}/src", **(env or {})}
        launcher = ["nohup", "setsid", "sh", "-c", 'echo $$ > "$0"; exec "$@"', pidfile, *argv]
        line = (remote_command(launcher, cwd=f"{p.run_dir}/src", env=full_env)
                + f" > {shlex.quote(log)} 2>&1 < /dev/null &")
        session.run_line(line, argv=launcher, timeout_s=30)
        pid, start = self._read_pid(session, pidfile)
        self._record("remote-process", name, **base, pid=pid, start_ticks=start)
        return NodeProcess(node, pid, None, {"host": p.host.name, "log": log, "tag": p.tag,
                                             "start_ticks": start})

    def _read_pid(self, session: SshSession, pidfile: str) -> tuple[int, int]:
        script = ('i=0; while [ ! -s "$0" ] && [ $i -lt 250 ]; do sleep 0.02; i=$((i+1)); done; '
                  'p=$(cat "$0") && echo "$p" && cat "/proc/$p/stat"')
        done = session.run(["sh", "-c", script, pidfile], check=False, timeout_s=30)
        lines = done.stdout.splitlines()
        if done.returncode != 0 or len(lines) < 2:
            raise RemoteCommandError(session.target.where, ["read", pidfile], done.returncode,
                                     done.stdout, done.stderr,
                                     reason="did not start (no pid file or it exited at once)")
        stat = lines[1]
        return int(lines[0]), int(stat[stat.rindex(")") + 2:].split()[19])

    def wait_agent(self, node: str, addr: str, timeout_s: float = 20.0) -> dict[str, object]:
        """Wait until the agent at `addr` answers /health; on failure the error carries the
        tail of its remote log."""
        from nodes.client import wait_healthy
        from nodes.errors import AgentUnreachableError

        try:
            return wait_healthy(addr, timeout_s=timeout_s)
        except AgentUnreachableError as exc:
            tail = self.exec(node, ["sh", "-c", 'tail -n 20 "$0"/logs/* 2>/dev/null',
                                    self.placed(node).run_dir], check=False).stdout
            raise NodeBackendError(f"node {node}: agent at {addr} not healthy within "
                                   f"{timeout_s:g} s: {exc}\nremote log tail:\n{tail}") from None

    def fetch(self, node: str, remote_path: str, local_path: Path) -> int:
        """Copy a file or folder from the node's host; returns the number of files."""
        p = self.placed(node)
        return self._session(p).get(remote_path, Path(local_path))

    def collect(self, node: str) -> int:
        """Bring the node's run files and logs home: `<run folder>/run` into the run directory,
        `<run folder>/logs` into `<run dir>/logs/<node>`."""
        p = self.placed(node)
        return (self.fetch(node, f"{p.run_dir}/run", self.run_dir)
                + self.fetch(node, f"{p.run_dir}/logs", self.run_dir / "logs" / node))

    # --- faults and removal --------------------------------------------------------------------

    def kill(self, node: str) -> KillReport:
        """Stop every process this run started on the node's host (their process groups)."""
        p = self.placed(node)
        try:
            got = kill_tagged(self._session(p), p.python or "python3", p.tag)
        except RemoteError as exc:
            return KillReport(node, problems=[str(exc)])
        problems = [f"pids {got['survivors']} survived SIGKILL"] if got["survivors"] else []
        return KillReport(node, pids_killed=got["found"], problems=problems)

    def revive(self, node: str) -> None:
        """Starts nothing: checks the host answers over SSH (reconnecting if needed)."""
        p = self.placed(node)
        if p.session is not None and not p.session.alive():
            p.session.close()
            p.session = None
        self._session(p).run(["true"], timeout_s=self.connect_timeout_s)

    def remove_node(self, node: str) -> TeardownReport:
        """Undo this run's entries of `node`: its processes, data port, data address and per-run
        folder (its bridge stays: it is the fabric's)."""
        entries = [e for e in self.ledger.entries()
                   if e.details.get("node") == node and e.kind != "ovs-bridge"]
        report = teardown(sorted(entries, key=lambda e: e.seq), self.runner)
        self._forget(node)
        return report

    def _forget(self, node: str) -> None:
        p = self._placed.pop(node, None)
        if p is not None and p.session is not None:
            p.session.close()

    def close(self) -> None:
        """Close SSH sessions; removes nothing."""
        for node in list(self._placed):
            p = self._placed[node]
            if p.session is not None:
                p.session.close()
                p.session = None

