"""What one guest gets at boot on top of the cached base image: its node config, its SSH keys
and the agent code, packed as a small newc archive appended to the base initramfs.

Owns the node config format read by the guest's /init (`/etc/testbed/node.env`, shell
variables quoted with shlex), the run's SSH client key and each node's host key (so the
orchestrator pins the guest's host key: no trust-on-first-use), the per-node initramfs file and
the `ssh` command line used to reach a guest. Does not start guests (testbed.backends.libvirt).
"""

from __future__ import annotations

import ipaddress
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from testbed.backends.libvirt_cpio import Member, NewcWriter, members_with_parents
from testbed.errors import SystemRequirementError, TestbedError
from testbed.fabric.addressing import NodeAddress

GUEST_CODE_DIR = "opt/testbed"
GUEST_RESULTS_DIR = "/var/lib/testbed/run"
GUEST_PID_DIR = "/run/testbed/pids"
_ALIGN_BYTES = 512


class GuestConfigError(TestbedError):
    """A guest's config or keys cannot be made (names the node)."""


def mgmt_mac_for(mgmt_ip: str) -> str:
    """Locally administered MAC of a guest's management NIC: 02:01:<the four IPv4 bytes>
    (data NICs use 02:00:..., so the two never collide)."""
    return "02:01:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(mgmt_ip).packed)


@dataclass(frozen=True)
class GuestConfig:
    """Everything a guest's /init needs; written as `/etc/testbed/node.env`."""

    node: str
    mgmt_mac: str
    mgmt_cidr: str
    data_mac: str
    data_cidr: str
    neighbours: tuple[tuple[str, str], ...] = ()  # (data IP, MAC) of the other nodes
    modules: tuple[str, ...] = ()
    agent_argv: tuple[str, ...] | None = None  # started by /init at every boot when set

    @classmethod
    def for_node(cls, n: NodeAddress, neighbours: Sequence[tuple[str, str]],
                 modules: Sequence[str], agent_argv: Sequence[str] | None = None
                 ) -> GuestConfig:
        return cls(node=n.name, mgmt_mac=mgmt_mac_for(n.mgmt_ip),
                   mgmt_cidr=f"{n.mgmt_ip}/{n.mgmt_prefixlen}", data_mac=n.data_mac,
                   data_cidr=f"{n.data_ip}/{n.data_prefixlen}",
                   neighbours=tuple((ip, mac) for ip, mac in neighbours if mac != n.data_mac),
                   modules=tuple(modules),
                   agent_argv=None if agent_argv is None else tuple(agent_argv))

    def env_text(self) -> str:
        values = {
            "TESTBED_NODE": self.node,
            "TESTBED_MGMT_MAC": self.mgmt_mac,
            "TESTBED_MGMT_CIDR": self.mgmt_cidr,
            "TESTBED_DATA_MAC": self.data_mac,
            "TESTBED_DATA_CIDR": self.data_cidr,
            "TESTBED_NEIGHBOURS": " ".join(f"{ip},{mac}" for ip, mac in self.neighbours),
            "TESTBED_MODULES": " ".join(self.modules),
            "TESTBED_AGENT_ARGV": "" if self.agent_argv is None else shlex.join(self.agent_argv),
        }
        return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())


@dataclass(frozen=True)
class SshKeys:
    """The run's client key pair and the known_hosts file that pins every guest's host key."""

    client_key: Path
    known_hosts: Path
    host_keys: dict[str, Path] = field(default_factory=dict)  # node -> private host key

    @classmethod
    def create(cls, directory: Path, comment: str) -> SshKeys:
        """A fresh ed25519 client key in `directory` (kept when it already exists)."""
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = directory / "id_ed25519"
        if not key.exists():
            _keygen(key, comment)
        return cls(client_key=key, known_hosts=directory / "known_hosts")

    def host_key(self, node: str, mgmt_ip: str) -> Path:
        """The host key of `node` (made once), pinned in known_hosts under its mgmt IP."""
        key = self.client_key.parent / f"host-{node}"
        if not key.exists():
            _keygen(key, f"host {node}")
        pub = (key.parent / f"{key.name}.pub").read_text().split()
        line = f"{mgmt_ip} {pub[0]} {pub[1]}\n"
        lines = self.known_hosts.read_text().splitlines(keepends=True) \
            if self.known_hosts.exists() else []
        lines = [x for x in lines if not x.startswith(f"{mgmt_ip} ")] + [line]
        self.known_hosts.write_text("".join(lines))
        self.host_keys[node] = key
        return key

    def ssh_argv(self, ip: str, *, connect_timeout_s: int = 10) -> list[str]:
        """`ssh` to root@ip with the run's key, the pinned host key and no user config."""
        return ["ssh", "-F", "/dev/null", "-i", str(self.client_key),
                "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
                "-o", "IdentitiesOnly=yes", "-o", f"ConnectTimeout={connect_timeout_s}",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
                "-o", "LogLevel=ERROR", f"root@{ip}", "--"]


def _keygen(path: Path, comment: str) -> None:
    if shutil.which("ssh-keygen") is None:
        raise SystemRequirementError("binary 'ssh-keygen' not found on PATH; "
                                     "apt-get install openssh-client")
    proc = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment,
                           "-f", str(path)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise GuestConfigError(f"ssh-keygen {path}: exited {proc.returncode}: {proc.stderr}")


def node_members(config: GuestConfig, keys: SshKeys, host_key: Path,
                 code_dirs: Sequence[Path], extra: Sequence[Member] = ()) -> list[Member]:
    """The per-node archive's members: node.env, authorized key, host key, agent code and
    `extra` files (e.g. a token)."""
    members = [
        Member("etc/testbed/node.env", 0o644, config.env_text().encode()),
        Member("root/.ssh", 0o700),
        Member("root/.ssh/authorized_keys", 0o600,
               (keys.client_key.parent / f"{keys.client_key.name}.pub").read_bytes()),
        Member("etc/ssh/ssh_host_ed25519_key", 0o600, host_key.read_bytes()),
        Member("etc/ssh/ssh_host_ed25519_key.pub", 0o644,
               (host_key.parent / f"{host_key.name}.pub").read_bytes()),
    ]
    for src in code_dirs:
        if not src.is_dir():
            raise GuestConfigError(f"node {config.node}: code folder {src} missing, expected "
                                   "a Python package to copy into the guest")
        for path in sorted(src.rglob("*")):
            if "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            name = f"{GUEST_CODE_DIR}/{src.name}/{path.relative_to(src)}"
            if path.is_dir():
                members.append(Member(name, 0o755))
            elif path.is_file():
                members.append(Member(name, 0o644, path.read_bytes()))
    return members_with_parents([*members, *extra])


def write_node_initramfs(base: Path, out: Path, members: Sequence[Member]) -> int:
    """`out` = the base initramfs, zero padding, then the node's uncompressed archive.

    Linux unpacks both in order (an uncompressed archive must start 4-byte aligned; zero
    bytes between archives are skipped). Returns the size in bytes."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as fh:
        with open(base, "rb") as src:
            shutil.copyfileobj(src, fh, 1 << 20)
        size = fh.tell()
        fh.write(b"\0" * ((-size) % _ALIGN_BYTES))
        writer = NewcWriter(fh)
        writer.add_many(members)
        writer.close()
        total = fh.tell()
    tmp.replace(out)
    return total
