"""`backend.mgmt_subnet: auto` against the host's real addresses: a second run on one host gets
a management network of its own (two runs on 172.30/16 broke each other's agent calls)."""

from __future__ import annotations

import ipaddress
from types import SimpleNamespace

import pytest
from pyroute2 import IPRoute

from testbed.fabric.addressing import MGMT_SUBNET_CANDIDATES
from testbed.fabric.netlink import host_ipv4_networks
from testbed.lifecycle.network import choose_mgmt_subnet
from tests.conftest import require_root

pytestmark = pytest.mark.root


def _scenario(mgmt_subnet: str) -> SimpleNamespace:
    return SimpleNamespace(backend=SimpleNamespace(mgmt_subnet=mgmt_subnet))


def test_auto_skips_a_subnet_a_bridge_of_the_host_already_holds(unique_prefix: str) -> None:
    require_root()
    before = choose_mgmt_subnet(_scenario("auto"))
    ifname = f"{unique_prefix}mg"
    with IPRoute() as ipr:
        ipr.link("add", ifname=ifname, kind="bridge")  # what a run's management network is
        try:
            idx = ipr.link_lookup(ifname=ifname)[0]
            taken = ipaddress.IPv4Network(before)
            ipr.addr("add", index=idx, address=str(taken.network_address + 1),
                     prefixlen=taken.prefixlen)
            ipr.link("set", index=idx, state="up")
            assert taken in host_ipv4_networks()
            after = choose_mgmt_subnet(_scenario("auto"))
            assert after != before and after in MGMT_SUBNET_CANDIDATES
            assert not any(ipaddress.IPv4Network(after).overlaps(n)
                           for n in host_ipv4_networks() if n.prefixlen > 0
                           and not n.is_loopback)
            with pytest.raises(Exception, match=f"mgmt_subnet {before} overlaps"):
                choose_mgmt_subnet(_scenario(before))
        finally:
            ipr.link("del", ifname=ifname)
