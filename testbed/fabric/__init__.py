"""The emulated network's fabric: addressing plan, Open vSwitch bridges and links, netlink helpers.

See testbed/fabric/README.md.
"""

from testbed.fabric.addressing import (
    AddressPlan,
    LinkAddress,
    LinkEnd,
    LinkSpec,
    NodeAddress,
    NodeSpec,
)
from testbed.fabric.ovs import FabricConfig, OvsError, OvsFabric, ensure_ovs_daemon

__all__ = [
    "AddressPlan",
    "FabricConfig",
    "LinkAddress",
    "LinkEnd",
    "LinkSpec",
    "NodeAddress",
    "NodeSpec",
    "OvsError",
    "OvsFabric",
    "ensure_ovs_daemon",
]
