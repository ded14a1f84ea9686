"""Node backends: what a satellite or ground-station node is made of, behind one protocol.

`netns` (embedded default): a network namespace plus a cgroup; `libvirt`: a VM (KVM in the lab,
TCG here); `remote`: a lab board or GPU server over SSH. The libvirt and remote classes load
through the registry (`backend_class`), so their client libraries load only when used.
See testbed/backends/README.md.
"""

from testbed.backends.base import (
    BackendContext,
    KillReport,
    NodeBackend,
    NodeBackendError,
    NodeProcess,
    backend_class,
    backend_kinds,
    create_backend,
    register_backend,
)
from testbed.backends.netns import NetnsBackend

__all__ = [
    "BackendContext",
    "KillReport",
    "NetnsBackend",
    "NodeBackend",
    "NodeBackendError",
    "NodeProcess",
    "backend_class",
    "backend_kinds",
    "create_backend",
    "register_backend",
]
