"""The SDN controller: an os-ken OpenFlow 1.3 app keeping switch flows equal to the topology.

controller knows nothing about orbits, traces or models. See controller/README.md.
The os-ken app itself lives in `controller.app` (imported only by the child process).
"""

from controller.api import get_routes, get_status, push_snapshot, wait_applied
from controller.errors import (
    ApplyTimeoutError,
    ControllerAuthError,
    ControllerError,
    ControllerRequestError,
    ControllerStartError,
    ControllerUnavailableError,
    SnapshotError,
    StaleGenerationError,
    SwitchError,
)
from controller.model import (
    ApplyRecord,
    ControllerStatus,
    Host,
    Link,
    PortRef,
    RouteEntry,
    RouteTable,
    Snapshot,
    Switch,
    SwitchStatus,
)
from controller.process import ControllerProcess
from controller.routing import compute_routes

__all__: list[str] = [
    "ApplyRecord",
    "ApplyTimeoutError",
    "ControllerAuthError",
    "ControllerError",
    "ControllerProcess",
    "ControllerRequestError",
    "ControllerStartError",
    "ControllerStatus",
    "ControllerUnavailableError",
    "Host",
    "Link",
    "PortRef",
    "RouteEntry",
    "RouteTable",
    "Snapshot",
    "SnapshotError",
    "StaleGenerationError",
    "Switch",
    "SwitchError",
    "SwitchStatus",
    "compute_routes",
    "get_routes",
    "get_status",
    "push_snapshot",
    "wait_applied",
]
