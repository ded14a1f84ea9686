"""The run's management network on the orchestrator's side: one Linux bridge with the gateway
address, shared by every backend whose nodes hang off it (namespaces' veths, VMs' taps).
Recorded in the ledger before it exists; idempotent (a second backend finds it made)."""

from __future__ import annotations

from testbed.fabric.addressing import AddressPlan
from testbed.fabric.netlink import iproute
from testbed.ledger import Ledger


def create_management_bridge(plan: AddressPlan, ledger: Ledger) -> None:
    """The management Linux bridge in the root namespace, with the gateway address, up."""
    ledger.record("link", plan.mgmt_bridge, role="mgmt-bridge")
    with iproute(None) as ipr:
        if not ipr.link_lookup(ifname=plan.mgmt_bridge):
            ipr.link("add", ifname=plan.mgmt_bridge, kind="bridge")
        idx = ipr.link_lookup(ifname=plan.mgmt_bridge)[0]
        prefixlen = int(plan.mgmt_subnet.split("/")[1])
        if not ipr.get_addr(index=idx, address=plan.mgmt_gateway_ip):
            ipr.addr("add", index=idx, address=plan.mgmt_gateway_ip, prefixlen=prefixlen)
        ipr.link("set", index=idx, state="up")
