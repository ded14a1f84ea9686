"""The SDN controller: an os-ken OpenFlow 1.3 app keeping switch flows equal to the topology.

controller knows nothing about orbits, traces or models. See controller/README.md.
"""

__all__: list[str] = []
