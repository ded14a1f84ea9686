"""Netns creation without forking, per-thread setns, and batched neighbour requests."""

from __future__ import annotations

import json
import subprocess

import pytest

from netem.nsutil import NetnsNotFoundError
from testbed.fabric.netlink import (
    NetlinkBatchError,
    NetnsError,
    create_netns,
    encode_neighbours,
    in_netns,
    iproute,
    list_netns,
    neighbour_batch,
    raw_rtnl_socket,
    remove_netns,
    send_batch,
)

pytestmark = pytest.mark.root


def test_create_enter_remove(root_only, unique_prefix) -> None:
    ns = f"{unique_prefix}-x"
    create_netns(ns)
    try:
        assert ns in list_netns()
        # `ip` sees the same namespace (a real bind mount, not a private handle)
        out = subprocess.run(["ip", "-n", ns, "-j", "link"], capture_output=True, text=True,
                             check=True).stdout
        assert [x["ifname"] for x in json.loads(out)] == ["lo"]
        with pytest.raises(NetnsError, match="already exists"):
            create_netns(ns)
        with in_netns(ns):
            with open("/proc/sys/net/ipv4/ip_forward", "w") as fh:  # per-namespace sysctl
                fh.write("1")
        out = subprocess.run(["ip", "netns", "exec", ns, "cat", "/proc/sys/net/ipv4/ip_forward"],
                             capture_output=True, text=True, check=True).stdout
        assert out.strip() == "1"
        with iproute(ns) as ipr:
            assert [x.get_attr("IFLA_IFNAME") for x in ipr.get_links()] == ["lo"]
        with iproute(None) as ipr:  # and this thread is back home
            assert len(ipr.get_links()) > 1
    finally:
        assert remove_netns(ns) is True
    assert remove_netns(ns) is False
    assert ns not in list_netns()
    with pytest.raises(NetnsNotFoundError, match="does not exist"), in_netns(ns):
        pass


def test_neighbour_batch_installs_all_but_self(root_only, unique_prefix) -> None:
    ns = f"{unique_prefix}-arp"
    create_netns(ns)
    try:
        with iproute(ns) as ipr:
            ipr.link("add", ifname="d0", kind="veth", peer="d1")
            idx = ipr.link_lookup(ifname="d0")[0]
            ipr.link("set", index=idx, state="up")
        entries = [(f"10.128.{i // 256}.{i % 256}", f"02:00:0a:80:{i // 256:02x}:{i % 256:02x}")
                   for i in range(1, 301)]
        template, offsets = encode_neighbours(entries)
        buf, starts = neighbour_batch(template, offsets, idx, skip=4)
        sock = raw_rtnl_socket(ns)
        try:
            send_batch(sock, buf, starts)
            bad, bad_starts = neighbour_batch(template, offsets[:3], 9999)  # no such ifindex
            with pytest.raises(NetlinkBatchError, match="3 of 3 netlink requests failed"):
                send_batch(sock, bytes(bad[: offsets[3]]), bad_starts)
        finally:
            sock.close()
        out = subprocess.run(["ip", "-n", ns, "-j", "neigh", "show", "dev", "d0"],
                             capture_output=True, text=True, check=True).stdout
        got = {(x["dst"], x["lladdr"]) for x in json.loads(out) if "PERMANENT" in x["state"]}
        assert got == set(entries) - {entries[4]}
    finally:
        remove_netns(ns)
