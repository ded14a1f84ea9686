"""A stand-in lab board for tests: a real OpenSSH server inside a network namespace.

The test makes the namespace, a management veth from the root namespace, a host key and a
client key (in a folder with safe modes: sshd runs with StrictModes), and an sshd that takes
only key authentication. Everything is removed on exit, also on failure.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testbed.inventory import InventoryHost

SSHD = "/usr/sbin/sshd"


def require_sshd() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: starts sshd inside a network namespace")
    for binary in (SSHD, "ssh-keygen", "ip", "setsid", "nohup"):
        if shutil.which(binary) is None:
            pytest.skip(f"binary '{binary}' not found (Debian: openssh-server, openssh-client, "
                        "iproute2, util-linux, coreutils)")


@dataclass
class Board:
    """One stand-in board: where it answers and the files a client needs."""

    name: str
    netns: str
    ip: str
    port: int
    home: Path  # safe folder: keys, known_hosts, sshd config, the board's work_dir
    key_path: Path
    known_hosts: Path
    root_ifname: str
    root_ip: str
    sshd: subprocess.Popen[bytes] | None = None

    @property
    def work_dir(self) -> str:
        return str(self.home / "work")

    def host(self, role: str = "board", **overrides: Any) -> InventoryHost:
        """This board as an inventory host (fields overridable)."""
        fields: dict[str, Any] = {
            "name": self.name, "role": role, "address": self.ip, "port": self.port,
            "user": "root", "key_path": self.key_path, "known_hosts": self.known_hosts,
            "board": "jetson-agx-xavier" if role == "board" else "gs-server",
            "work_dir": self.work_dir,
        }
        fields.update(overrides)
        return InventoryHost(**fields)

    def write_config(self, extra: str = "") -> Path:
        cfg = self.home / "sshd_config"
        cfg.write_text(
            f"Port {self.port}\nListenAddress {self.ip}\n"
            f"HostKey {self.home / 'host_key'}\nPidFile {self.home / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.home / 'authorized_keys'}\n"
            "StrictModes yes\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\n"
            "Subsystem sftp internal-sftp\nLogLevel ERROR\nMaxStartups 50\nMaxSessions 50\n"
            + extra)
        return cfg

    def start(self, extra_config: str = "") -> None:
        """(Re)start sshd in the namespace and wait until it accepts connections."""
        self.stop()
        cfg = self.write_config(extra_config)
        subprocess.run([SSHD, "-t", "-f", str(cfg)], check=True, capture_output=True)
        self.sshd = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, SSHD, "-D", "-e", "-f", str(cfg)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            probe = subprocess.run(["ip", "netns", "exec", self.netns, "ss", "-Hltn",
                                    f"sport = :{self.port}"], capture_output=True, text=True)
            if probe.stdout.strip():
                return
            if self.sshd.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.sshd.stderr.read().decode()}")  # type: ignore[union-attr]
            time.sleep(0.02)
        raise RuntimeError("sshd did not listen within 10 s")

    def stop(self) -> None:
        if self.sshd is not None:
            if self.sshd.poll() is None:
                os.killpg(self.sshd.pid, 15)
                self.sshd.wait(timeout=10)
            if self.sshd.stderr is not None:
                self.sshd.stderr.close()
            self.sshd = None

    def new_host_key(self) -> None:
        """Replace the server's host key (known_hosts keeps the old one: a changed key)."""
        for suffix in ("", ".pub"):
            (self.home / f"host_key{suffix}").unlink()
        _keygen(self.home / "host_key")


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                   check=True, capture_output=True)


def _safe_home() -> Path:
    """A private folder whose parents are root-owned and not group/world-writable (sshd's
    StrictModes refuses authorized_keys below /tmp, which is world-writable)."""
    base = Path("/var/lib/testbed-test-boards")  # root-owned, 0755 (unlike /tmp, /var/tmp)
    base.mkdir(mode=0o755, exist_ok=True)
    os.chmod(base, 0o755)
    return Path(tempfile.mkdtemp(dir=base))


@contextmanager
def ssh_board(prefix: str, index: int = 0, port: int = 22) -> Iterator[Board]:
    """A running stand-in board `<prefix>-b<index>`; removes namespace, veth, files on exit."""
    require_sshd()
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation folder
    name = f"{prefix}-b{index}"
    a, b, base = random.randint(100, 250), random.randint(0, 255), 4 * (index % 60)
    root_ip, board_ip = f"10.{a}.{b}.{base + 1}", f"10.{a}.{b}.{base + 2}"
    root_if, ns_if = f"{prefix}m{index}", f"{prefix}n{index}"
    home = _safe_home()
    board = Board(f"b{index}-{prefix}", name, board_ip, port, home, home / "client_key",
                  home / "known_hosts", root_if, root_ip)
    try:
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        for argv in (
            ["ip", "link", "add", root_if, "type", "veth", "peer", "name", ns_if,
             "netns", name],
            ["ip", "addr", "add", f"{root_ip}/30", "dev", root_if],
            ["ip", "link", "set", root_if, "up"],
            ["ip", "-n", name, "addr", "add", f"{board_ip}/30", "dev", ns_if],
            ["ip", "-n", name, "link", "set", ns_if, "up"],
            ["ip", "-n", name, "link", "set", "lo", "up"],
        ):
            subprocess.run(argv, check=True, capture_output=True)
        _keygen(home / "host_key")
        _keygen(home / "client_key")
        auth = home / "authorized_keys"
        auth.write_text((home / "client_key.pub").read_text())
        auth.chmod(0o600)
        host_pub = (home / "host_key.pub").read_text().split()
        host_id = board_ip if port == 22 else f"[{board_ip}]:{port}"
        board.known_hosts.write_text(f"{host_id} {host_pub[0]} {host_pub[1]}\n")
        (home / "work").mkdir()
        board.start()
        yield board
    finally:
        board.stop()
        subprocess.run(["ip", "link", "del", root_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def tagged_processes(tag: str) -> list[int]:
    """Pids on this machine (the boards share its process table) carrying the run's tag."""
    needle = f"TESTBED_RUN_TAG={tag}".encode()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            env = Path(f"/proc/{d}/environ").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            out.append(int(d))
    return out
