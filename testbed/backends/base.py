"""The node-backend seam: what every kind of node (namespace, VM, remote board) must offer.

Owns the `NodeBackend` protocol, the handles it returns and the kebab-case registry
(`backend_class(kind)`). Concrete backends live beside this module (`netns.py`, `libvirt.py`,
`remote.py`) and register themselves; `Network` only talks to this protocol. Does not create
OVS bridges or links (testbed.fabric) nor decide budgets (testbed.profiles).

A backend's life for one run, in the order `Network.up()` calls it:

1. `create_management()`  the run's management network on the orchestrator's side
   (a Linux bridge with the gateway address; shared by every backend of the run).
2. `create_nodes(nodes, budgets)`  each node with its CPU/memory budget, a management address
   (`NodeAddress.mgmt_ip`) reachable from the orchestrator, and its data port joined to the
   node's OVS bridge as OpenFlow port `DATA_OFPORT` with the plan's data IP and MAC.
   `data_port` says who makes that port: "internal" (the fabric makes an OVS internal port
   that the backend moves into the node: netns) or "backend" (the backend adds its own port
   to the bridge: a VM's tap, a board's physical or tunnel port).
3. `exec` / `spawn` on a node while the run lasts; `spawn` records the process in the ledger
   with whatever undo needs (a local pid, a remote pid on a host, a pid inside a guest).
4. `kill(node)` / `revive(node)` for faults: kill leaves the node's resources but stops every
   process and connection on it; revive makes it able to run processes again.
5. `remove_node(node)`; at the end of the run the ledger's teardown removes the rest.

Every resource is recorded in the ledger *before* it exists, under a ledger kind whose undo
function is registered (`@undoes(kind)`) beside the code that creates it.
"""

from __future__ import annotations

import importlib
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from testbed.cgroups import Budget
from testbed.errors import InputError, TestbedError
from testbed.fabric.addressing import AddressPlan, NodeAddress
from testbed.ledger import Ledger, TeardownReport
from testbed.sysrun import Completed, Runner

DataPortKind = Literal["internal", "backend"]


class NodeBackendError(TestbedError):
    """Creating or using a node failed (the message names the node)."""


@dataclass(frozen=True)
class KillReport:
    """What `NodeBackend.kill` did to one node."""

    node: str
    pids_killed: list[int] = field(default_factory=list)
    sockets_destroyed: int | None = None
    problems: list[str] = field(default_factory=list)


@dataclass
class NodeProcess:
    """A process started on a node with `spawn`: wait for it or stop it, wherever it runs.

    `popen` is set when the process is a local child (netns; the SSH client of a remote
    process); `pid` is the pid where it runs (on the board or in the guest for remote ones)."""

    node: str
    pid: int
    popen: subprocess.Popen[bytes] | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def poll(self) -> int | None:
        """Exit status, or None while it runs (None also when unknown: not a local child)."""
        return None if self.popen is None else self.popen.poll()


@dataclass(frozen=True)
class BackendContext:
    """What every backend is built from: one run's runner, ledger, plan and folders.

    `options`: the scenario's `backend.options` plus `token_file` (the run's agent token,
    written 0600 before any backend exists);
    `inventory`: the lab inventory (testbed.inventory.Inventory) or None;
    `cache_dir`: where built artefacts (VM images, calibration) are cached across runs;
    `run_dir`: the run's folder (logs of nodes go to run_dir/logs); `fabric`: see below."""

    runner: Runner
    ledger: Ledger
    plan: AddressPlan
    run_dir: Path
    cache_dir: Path
    options: Mapping[str, Any] = field(default_factory=dict)
    inventory: Any = None
    fabric: Any = None
    """The run's testbed.fabric.ovs.OvsFabric: backends whose `data_port` is "backend" join
    their port with `fabric.add_data_port(node, ifname)`."""


@runtime_checkable
class NodeBackend(Protocol):
    """What `Network` needs from a kind of node (see the module docstring for the order)."""

    kind: ClassVar[str]
    data_port: ClassVar[DataPortKind]

    def create_management(self) -> None: ...

    def create_nodes(self, nodes: Sequence[NodeAddress] | None = None,
                     budgets: Mapping[str, Budget] | None = None) -> None: ...

    def python(self, node: str) -> str:
        """The Python interpreter that runs the agent on `node` (argv[0] for `spawn`)."""
        ...

    def node_path(self, node: str, path: Path) -> str:
        """Where a path of the orchestrator's run directory is seen on `node` (results, logs;
        the same path for netns, a copy or a shared folder elsewhere)."""
        ...

    def mgmt_address(self, node: str) -> str:
        """The address the orchestrator reaches the node's agent at (the plan's management IP
        for namespaces and VMs; the board's own address for a remote host)."""
        ...

    def agent_argv(self, node: str, *, mgmt_port: int, results: Path,
                   data_ip: str | None = None) -> list[str]:
        """The agent's command line on `node` (interpreter, listen address, results folder and
        the run's token file as the node sees them)."""
        ...

    def collect(self, node: str) -> int:
        """Bring the node's result and log files into the run directory (0 when they are
        already there); returns how many files were copied."""
        ...

    def exec(self, node: str, argv: Sequence[str], *, check: bool = True,
             timeout_s: float | None = None, input: str | None = None) -> Completed: ...

    def spawn(self, node: str, argv: Sequence[str], *, log_path: Path | None = None,
              env: Mapping[str, str] | None = None) -> NodeProcess: ...

    def kill(self, node: str) -> KillReport: ...

    def revive(self, node: str) -> None: ...

    def remove_node(self, node: str) -> TeardownReport: ...

    def close(self) -> None:
        """Release client handles (SSH sessions, libvirt connections); removes nothing."""
        ...


_KEBAB = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
BACKENDS: dict[str, str] = {
    "netns": "testbed.backends.netns:NetnsBackend",
    "libvirt": "testbed.backends.libvirt:LibvirtBackend",
    "remote": "testbed.backends.remote:RemoteBackend",
}
"""Kind -> "module:Class", imported on first use (a backend's client library, libvirt-python or
paramiko, loads only in runs that use it)."""


def register_backend(kind: str, target: str) -> None:
    """Register a backend class under a kebab-case kind ("module:Class")."""
    if not _KEBAB.match(kind):
        raise InputError(f"backend kind {kind!r}: expected kebab-case (e.g. 'my-board')")
    BACKENDS[kind] = target


def backend_kinds() -> list[str]:
    return sorted(BACKENDS)


def backend_class(kind: str) -> type[Any]:
    """The class registered under `kind`; unknown kinds raise InputError listing valid ones."""
    try:
        target = BACKENDS[kind]
    except KeyError:
        raise InputError(f"unknown backend {kind!r}; choose: {', '.join(backend_kinds())}",
                         field="backend.kind") from None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def create_backend(kind: str, ctx: BackendContext, **kwargs: Any) -> NodeBackend:
    """Instantiate the backend of `kind` for one run (`cls.from_context(ctx, **kwargs)`)."""
    cls = backend_class(kind)
    backend = cls.from_context(ctx, **kwargs)
    if not isinstance(backend, NodeBackend):
        raise TestbedError(f"backend {kind!r} ({cls.__name__}) does not implement NodeBackend")
    return backend
