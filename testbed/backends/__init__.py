"""Node backends: what a satellite or ground-station node is made of.

`netns` (embedded default): a network namespace plus a cgroup. `libvirt` and `remote` come later.
See testbed/backends/README.md.
"""

from testbed.backends.netns import NetnsBackend, NodeBackendError

__all__ = ["NetnsBackend", "NodeBackendError"]
