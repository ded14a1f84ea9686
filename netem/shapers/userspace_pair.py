"""Two network namespaces (terminal, ground) joined through a third (the shaper's) by veth pairs:
the smallest topology a UserspaceShaper link can shape, used by `testbed replay` and the tests.

    terminal ns: <p>t0 (terminal_addr) ─veth─ <p>t1 ┐ shaper ns   ┌ <p>g1 ─veth─ <p>g0 (ground_addr)
                                                    └ worker ─────┘                    :ground ns

Owns exactly the namespaces it creates (named from `prefix`) and what lives in them; removing
the namespaces removes the veths. Each creation is recorded as it happens and undone in
reverse, also after a partial failure. Offloads are turned off on t0/g0 (the worker forwards
raw frames, so checksums must be complete and frames no larger than the MTU), neighbours are
static (no ARP through the emulated link) and IPv6 is off on the shaper's ends.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from pyroute2 import IPRoute, NetNS, netns
from pyroute2.netlink.exceptions import NetlinkError

from netem.errors import NetemError, UnsupportedError
from netem.nsutil import NETNS_RUN_DIR, write_sysctl
from netem.shapers.userspace import UserspaceLink

IFNAMSIZ = 15


@dataclass(frozen=True)
class PairNames:
    """Names of everything a NamespacePair creates, all starting with `prefix`."""

    prefix: str

    def __post_init__(self) -> None:
        if not self.prefix or len(self.prefix) + 2 > IFNAMSIZ or not self.prefix.isascii():
            raise NetemError(f"namespace pair prefix '{self.prefix}', expected 1 to "
                             f"{IFNAMSIZ - 2} ASCII characters (interface names are prefix+2)")

    @property
    def terminal_ns(self) -> str:
        return f"{self.prefix}-term"

    @property
    def ground_ns(self) -> str:
        return f"{self.prefix}-gnd"

    @property
    def shaper_ns(self) -> str:
        return f"{self.prefix}-shp"

    @property
    def namespaces(self) -> tuple[str, str, str]:
        return (self.terminal_ns, self.ground_ns, self.shaper_ns)

    def iface(self, which: str) -> str:
        """t0 (terminal end), t1 (its peer at the shaper), g0, g1 likewise."""
        return f"{self.prefix}{which}"


def disable_offloads(ifname: str, netns_name: str | None) -> None:
    """Turn off tx checksumming, TSO and GSO on an interface (ethtool, in its namespace)."""
    ethtool = shutil.which("ethtool")
    if ethtool is None:
        raise UnsupportedError("ethtool not found on PATH; needed to turn off offloads of "
                               f"'{ifname}' for the userspace shaper")
    argv = [ethtool, "-K", ifname, "tx", "off", "tso", "off", "gso", "off"]
    if netns_name is not None:
        argv = ["ip", "netns", "exec", netns_name, *argv]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    if done.returncode != 0:
        raise NetemError(f"turning off offloads of '{ifname}' failed: {' '.join(argv)}: "
                         f"{done.stderr.strip()}")



class NamespacePair:
    """Creates the topology on enter (or create()), removes it on exit (or close()).

    terminal_addr / ground_addr: IPv4 addresses with prefix length, same subnet.
    """

    def __init__(
        self, prefix: str, *, terminal_addr: str = "100.64.0.2/24",
        ground_addr: str = "100.64.0.1/24", mtu: int = 1500,
    ) -> None:
        self.names = PairNames(prefix)
        self.terminal_if = ipaddress.ip_interface(terminal_addr)
        self.ground_if = ipaddress.ip_interface(ground_addr)
        if self.terminal_if.network != self.ground_if.network:
            raise NetemError(f"namespace pair {prefix}: {terminal_addr} and {ground_addr} are "
                             "not in one subnet")
        self.mtu = mtu
        self._created_ns: list[str] = []
        self._root_ifaces: list[str] = []

    @property
    def terminal_addr(self) -> str:
        return str(self.terminal_if.ip)

    @property
    def ground_addr(self) -> str:
        return str(self.ground_if.ip)

    def link(self, *, up: str, down: str, name: str | None = None) -> UserspaceLink:
        """The shaper link: frames from the terminal (t1) go up to g1; from the ground, down."""
        n = self.names
        return UserspaceLink(name or n.prefix, n.iface("t1"), n.iface("g1"), a_to_b=up,
                             b_to_a=down, netns=n.shaper_ns)

    def argv_in(self, side: str, argv: Sequence[str]) -> list[str]:
        """`argv` run inside the 'terminal' or 'ground' namespace."""
        ns = {"terminal": self.names.terminal_ns, "ground": self.names.ground_ns}.get(side)
        if ns is None:
            raise NetemError(f"namespace pair side '{side}', expected terminal or ground")
        return ["ip", "netns", "exec", ns, *argv]

    # ---- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> NamespacePair:
        self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create(self) -> None:
        """Build the topology; on any failure remove what was made and re-raise."""
        n = self.names
        try:
            for ns in n.namespaces:
                if os.path.exists(os.path.join(NETNS_RUN_DIR, ns)):
                    raise NetemError(f"network namespace '{ns}' already exists; pick another "
                                     "prefix or remove it")
                netns.create(ns)
                self._created_ns.append(ns)
            with IPRoute() as ipr:
                for end, peer, ns_end in (("t0", "t1", n.terminal_ns), ("g0", "g1", n.ground_ns)):
                    a, b = n.iface(end), n.iface(peer)
                    self._root_ifaces.append(a)
                    ipr.link("add", ifname=a, kind="veth", peer=b)
                    ia = ipr.link_lookup(ifname=a)[0]
                    ib = ipr.link_lookup(ifname=b)[0]
                    ipr.link("set", index=ia, net_ns_fd=ns_end, mtu=self.mtu)
                    ipr.link("set", index=ib, net_ns_fd=n.shaper_ns, mtu=self.mtu)
                    self._root_ifaces.remove(a)
            macs = {}
            for ns, ifname, addr in ((n.terminal_ns, n.iface("t0"), self.terminal_if),
                                     (n.ground_ns, n.iface("g0"), self.ground_if)):
                with NetNS(ns, flags=0) as nsr:
                    idx = nsr.link_lookup(ifname=ifname)[0]
                    nsr.addr("add", index=idx, address=str(addr.ip),
                             prefixlen=addr.network.prefixlen)
                    nsr.link("set", index=idx, state="up")
                    nsr.link("set", index=nsr.link_lookup(ifname="lo")[0], state="up")
                    macs[ns] = nsr.get_links(idx)[0].get_attr("IFLA_ADDRESS")
                disable_offloads(ifname, ns)
            for ifname in (n.iface("t1"), n.iface("g1")):
                write_sysctl(f"net/ipv6/conf/{ifname}/disable_ipv6", "1", n.shaper_ns)
            with NetNS(n.shaper_ns, flags=0) as nsr:
                for ifname in (n.iface("t1"), n.iface("g1")):
                    nsr.link("set", index=nsr.link_lookup(ifname=ifname)[0], state="up")
            for ns, ifname, peer_ip, peer_ns in (
                (n.terminal_ns, n.iface("t0"), self.ground_addr, n.ground_ns),
                (n.ground_ns, n.iface("g0"), self.terminal_addr, n.terminal_ns),
            ):
                with NetNS(ns, flags=0) as nsr:
                    nsr.neigh("add", dst=peer_ip, lladdr=macs[peer_ns],
                              ifindex=nsr.link_lookup(ifname=ifname)[0], state="permanent")
        except (NetlinkError, OSError, subprocess.SubprocessError) as exc:
            self.close()
            raise NetemError(f"namespace pair {n.prefix}: creation failed: {exc}") from exc
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Remove what create() made, newest first. Idempotent."""
        errors: list[str] = []
        if self._root_ifaces:
            with IPRoute() as ipr:
                for ifname in reversed(self._root_ifaces):
                    with contextlib.suppress(NetlinkError, IndexError):
                        ipr.link("del", index=ipr.link_lookup(ifname=ifname)[0])
            self._root_ifaces.clear()
        for ns in reversed(self._created_ns):
            try:
                netns.remove(ns)
            except FileNotFoundError:
                pass
            except OSError as exc:
                errors.append(f"{ns}: {exc}")
        self._created_ns.clear()
        if errors:
            raise NetemError(f"namespace pair {self.names.prefix}: removal failed: "
                             f"{'; '.join(errors)}")
